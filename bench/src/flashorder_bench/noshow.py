"""The no-show sale: a hot product with a short payment deadline, bought by many more buyers
than it has units, in which a share of the winners never pay.

The buyers arrive evenly over four deadlines, so that those of the first sell-out who do not
pay lose their units (the deadline, then the expirer's next beat) while later buyers still
come to take them; if by then no unit was sold twice (more units placed than the stock: an
expirer running late), buyers keep coming at the same pace, for at most ``MAX_SECONDS``.
The others pay through the signed webhook within half the deadline. The sale ends once the
last no-shows' deadlines have passed and the expirer has had time to act: every unit is then
paid for or back on the shelf, which the checks (``checks``) verify in the stores.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass

import aiohttp

from flashorder_bench import scenarios
from flashorder_bench.client import BenchClient
from flashorder_bench.report import Check
from flashorder_bench.scenarios import ScenarioSpec

#: The service's documented development secret of the payment webhook (its config), used
#: when the environment gives the stack none.
DEV_WEBHOOK_SECRET = "flashorder-payments-development-secret"
#: The sale lasts this many payment deadlines.
DEADLINES = 4.0
#: After the last buyer: the expirer's beat (1 s by default) and some slack, beyond the
#: deadline itself.
EXPIRER_SLACK_S = 3.0
#: The longest the buyers keep coming while waiting for a unit to be sold again.
MAX_SECONDS = 60.0


@dataclass
class NoshowOutcome:
    placed: int = 0
    units: int = 0
    refused: int = 0
    buyers: int = 0
    paid: int = 0
    abandoned: int = 0
    #: Calls that failed: a 5xx, no answer, or a payment the service did not take.
    errors: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.buyers:,} buyers, {self.placed:,} orders placed ({self.paid:,} paid, "
            f"{self.abandoned:,} never paid), "
            f"{self.refused:,} refused, {self.errors:,} errors, in {self.seconds:.1f}s"
        )

    def check(self) -> Check:
        return Check.of(
            "no-show sale: no 5xx, no lost call, every payment taken",
            self.errors == 0 and self.placed > 0,
            self.summary(),
        )


def webhook_secret() -> str:
    return os.environ.get("FLASHORDER_PAYMENT_WEBHOOK_SECRET") or DEV_WEBHOOK_SECRET


@dataclass(frozen=True, slots=True)
class _Buyer:
    due: float
    user: str
    quantity: int
    pays: bool
    pay_after: float


async def drive(
    client: BenchClient, spec: ScenarioSpec, *, unpaid_share: float, concurrency: int
) -> NoshowOutcome:
    """Seed the product, run the sale, and wait until its last deadlines have passed."""
    pay_within = float(spec.pay_within or 3)
    await client.seed(scenarios.products(spec))
    product = scenarios.product_id(spec, 0)
    rng = random.Random(f"{spec.seed}:noshow:{spec.tag}")
    duration = DEADLINES * pay_within
    every = duration / max(1, spec.requests)
    outcome = NoshowOutcome()
    gate = asyncio.Semaphore(concurrency)
    secret = webhook_secret()
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def buy(buyer: _Buyer) -> None:
        await asyncio.sleep(max(0.0, start + buyer.due - loop.time()))
        try:
            async with gate:
                status, order_id = await client.order(
                    buyer.user, product, buyer.quantity, spec.price
                )
            if order_id is None:
                outcome.refused += 1
                outcome.errors += status >= 500
                return
            outcome.placed += 1
            outcome.units += buyer.quantity
            if not buyer.pays:
                outcome.abandoned += 1
                return
            await asyncio.sleep(buyer.pay_after)
            async with gate:
                paid = await client.pay(
                    secret, f"ev{spec.tag}_{order_id}", order_id, buyer.quantity * spec.price
                )
            if 200 <= paid < 300:
                outcome.paid += 1
            else:
                outcome.errors += 1
        except (aiohttp.ClientError, TimeoutError):
            outcome.errors += 1

    def resold() -> bool:
        return outcome.units > spec.stock

    async with asyncio.TaskGroup() as group:
        i = 0
        while i < spec.requests or (not resold() and i * every < MAX_SECONDS):
            buyer = _Buyer(
                due=i * every,
                user=scenarios.user_id(spec, rng.randrange(max(1, spec.users))),
                quantity=rng.choice((1, 2)),
                pays=rng.random() >= unpaid_share,
                pay_after=rng.uniform(0.0, pay_within / 2),
            )
            group.create_task(buy(buyer))
            i += 1
            # Buyers are made as they are due, so that the pace past ``requests`` can see
            # whether a unit was sold again yet.
            await asyncio.sleep(max(0.0, start + buyer.due - loop.time()))
        outcome.buyers = i
    # The last no-shows' deadlines, then the expirer's beat.
    await asyncio.sleep(pay_within + EXPIRER_SLACK_S)
    outcome.seconds = loop.time() - start
    return outcome
