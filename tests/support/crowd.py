"""Buyers of the fault drills (``tests/drills``) and of the multi-host topology
(``tests/cluster``): each buyer an ``Attempt`` with a key of its own, a burst of them while
a fault happens, and the retries a well-behaved client makes until it is told.

A shop (``Buyers``) places one attempt's order over HTTP and records the answer as a short
string: ``"201"``, ``"201 replayed"``, ``"409 sold-out"``, ``"503"``, ``"connection error"``,
``"timeout"``, …
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

#: Answers a client can act on. Anything else (a 503, a broken connection, a duplicate still
#: in flight) is retried with the same key.
DEFINITE = {"201", "201 replayed", "409 sold-out"}


@dataclass
class Attempt:
    user: str
    key: str
    product_id: str
    #: The last answer and when it came.
    answer: str = ""
    order_id: str | None = None
    #: The API host that answered (``X-Served-By``), where there are several.
    host: str = ""
    at: float = 0.0
    retries: int = 0
    #: The first answer and when it came.
    first: str = ""
    first_at: float = 0.0


@dataclass
class Phases:
    """When the fault began and ended (monotonic), to sort answers into phases."""

    fault_at: float = float("inf")
    back_at: float = float("inf")

    def of(self, at: float) -> str:
        if at < self.fault_at:
            return "before"
        return "during" if at < self.back_at else "after"


class Buyers(Protocol):
    async def order(self, attempt: Attempt) -> None:
        """Place the attempt's order (its key, one unit) and record the answer in it."""


async def burst_through(
    shop: Buyers,
    products: list[str],
    fault: Callable[[Phases], Awaitable[None]],
    *,
    concurrency: int = 32,
    before: float = 2.0,
    after: float = 3.0,
) -> tuple[list[Attempt], Phases]:
    """Buyers order without pause; ``before`` seconds in, ``fault`` runs (it marks when the
    service is down and when it is back); buyers go on for ``after`` seconds more."""
    attempts: list[Attempt] = []
    phases = Phases()
    stop = asyncio.Event()

    async def buyer(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            user = f"u{n}_{i}_{secrets.token_hex(4)}"
            attempt = Attempt(user, secrets.token_hex(12), products[i % len(products)])
            attempts.append(attempt)
            await shop.order(attempt)

    buyers = [asyncio.create_task(buyer(n)) for n in range(concurrency)]
    try:
        await asyncio.sleep(before)
        await fault(phases)
        await asyncio.sleep(after)
    finally:
        stop.set()
        await asyncio.gather(*buyers)
    return attempts, phases


async def retry_until_definite(
    shop: Buyers, attempts: list[Attempt], *, deadline: float
) -> Counter[str]:
    """What a well-behaved client does: the same request, the same key, until it is told.
    Returns the last answers of those still not told after ``deadline`` s (empty: none)."""

    async def one(attempt: Attempt) -> None:
        give_up = time.monotonic() + deadline
        while attempt.answer not in DEFINITE and time.monotonic() < give_up:
            await asyncio.sleep(0.5)
            attempt.retries += 1
            await shop.order(attempt)

    await asyncio.gather(*(one(a) for a in attempts if a.answer not in DEFINITE))
    return Counter(a.answer for a in attempts if a.answer not in DEFINITE)
