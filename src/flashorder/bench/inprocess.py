"""The command pipeline without HTTP: ``handlers.place_order`` called directly, for profiling.

The service is built by ``bootstrap.build`` from the ``FLASHORDER_*`` settings, as an API
worker builds it: on the full stack's stores when they are set (a fresh database and the
bench's Redis database index), embedded otherwise (SQLite in a temporary folder). One hot
product; ``concurrency`` tasks place orders as fast as the pipeline answers. Profile it with

    py-spy record -o pipeline.svg -- .venv/bin/flashorder bench --in-process
    pyinstrument -m flashorder.entrypoints.cli bench --in-process   (or python -m pyinstrument)
"""

from __future__ import annotations

import asyncio
import random
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from flashorder.adapters.sql.migrate import create_database_if_missing, drop_database, migrate
from flashorder.application import handlers
from flashorder.bench.options import BenchOptions
from flashorder.bench.stack import redis_url_with_db, server_url, with_database
from flashorder.bench.stats import Latency
from flashorder.bootstrap import build
from flashorder.config import Settings
from flashorder.domain import commands, errors
from flashorder.domain.model import PaymentType, ProductId, UserId
from flashorder.domain.pricing import RequestedLine

PRICE = 10050


@dataclass(frozen=True, slots=True)
class PipelineResult:
    orders: int
    seconds: float
    accepted: int
    #: From the first call to the last acceptance: how long the stock took to sell.
    sell_s: float
    refused: dict[str, int]
    latency: Latency
    accepted_latency: Latency

    @property
    def per_s(self) -> float:
        return self.orders / self.seconds if self.seconds else 0.0

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.sell_s if self.sell_s else 0.0


async def run_pipeline(
    settings: Settings,
    *,
    requests: int,
    stock: int,
    users: int,
    max_per_user: int | None,
    concurrency: int,
    seed: int = 1,
) -> PipelineResult:
    product = ProductId(f"PIN_{secrets.token_hex(4)}")
    async with build(settings, background=False) as service:
        deps = service.deps
        await handlers.create_product(
            commands.CreateProduct(product, "in-process bench", PRICE, stock, max_per_user),
            deps=deps,
        )
        rng = random.Random(seed)
        plan = [(f"u{rng.randrange(users)}", rng.choice((1, 2))) for _ in range(requests)]
        queue = iter(plan)
        took: list[float] = []
        took_accepted: list[float] = []
        refused: dict[str, int] = {}
        last_accept = [0.0]

        async def buyer() -> None:
            for user, quantity in queue:
                cmd = commands.PlaceOrder(
                    user_id=UserId(user),
                    lines=(RequestedLine(product, quantity, PRICE),),
                    discount_policy_id=None,
                    discount_amount=None,
                    delivery_fee=0,
                    payment_amount=quantity * PRICE,
                    payment_type=PaymentType.CREDIT,
                )
                started = time.perf_counter()
                try:
                    await handlers.place_order(cmd, deps=deps)
                    took_accepted.append(time.perf_counter() - started)
                    last_accept[0] = time.perf_counter()
                except errors.FlashOrderError as exc:
                    name = type(exc).__name__
                    refused[name] = refused.get(name, 0) + 1
                took.append(time.perf_counter() - started)

        began = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(buyer())
        seconds = time.perf_counter() - began
    return PipelineResult(
        orders=len(took),
        seconds=seconds,
        accepted=len(took_accepted),
        sell_s=max(0.0, last_accept[0] - began),
        refused=dict(sorted(refused.items())),
        latency=Latency.of(took),
        accepted_latency=Latency.of(took_accepted),
    )


async def fresh_settings(base: Settings, *, redis_db: int, folder: Path) -> tuple[Settings, str]:
    """``base`` on a database of its own (and the bench's Redis database, flushed); returns
    the settings and the database to drop afterwards ("" when embedded)."""
    if base.database_url is None:
        settings = base.model_copy(update={"data_dir": folder})
        await asyncio.to_thread(migrate, settings.effective_database_url)
        return settings, ""
    name = f"flashorder_bench_{secrets.token_hex(3)}_inproc"
    server = server_url(base.database_url)
    await asyncio.to_thread(create_database_if_missing, server, name)
    update: dict[str, object] = {"database_url": with_database(base.database_url, name)}
    if base.redis_url is not None:
        update["redis_url"] = redis_url_with_db(base.redis_url, redis_db)
        client = Redis.from_url(str(update["redis_url"]))
        try:
            await client.flushdb()
        finally:
            await client.aclose()
    settings = base.model_copy(update=update)
    await asyncio.to_thread(migrate, settings.effective_database_url)
    return settings, name


async def in_process(
    base: Settings,
    *,
    requests: int,
    stock: int,
    users: int,
    max_per_user: int | None,
    concurrency: int,
    redis_db: int,
) -> PipelineResult:
    with tempfile.TemporaryDirectory(prefix="flashorder-bench-") as folder:
        settings, database = await fresh_settings(base, redis_db=redis_db, folder=Path(folder))
        try:
            return await run_pipeline(
                settings,
                requests=requests,
                stock=stock,
                users=users,
                max_per_user=max_per_user,
                concurrency=concurrency,
            )
        finally:
            if database and base.database_url is not None:
                await asyncio.to_thread(drop_database, server_url(base.database_url), database)


def print_in_process(opts: BenchOptions, base: Settings) -> None:
    """Run the pipeline with the bench's scenario figures and print what it did."""
    spec = opts.spec("inproc")
    result = asyncio.run(
        in_process(
            base,
            requests=spec.requests,
            stock=spec.stock,
            users=spec.users,
            max_per_user=spec.max_per_user,
            concurrency=opts.concurrency,
            redis_db=opts.redis_db,
        )
    )
    mode = "embedded" if base.embedded else "full stack stores"
    print(f"in-process place_order ({mode}, strategy {base.strategy}, {opts.concurrency} tasks)")
    print(
        f"  {result.orders:,} calls in {result.seconds:.2f}s: {result.per_s:,.0f}/s; "
        f"accepted {result.accepted:,} in {result.sell_s:.2f}s ({result.accepted_per_s:,.0f}/s); "
        f"refused {result.refused}"
    )
    for name, lat in (("all calls", result.latency), ("accepted", result.accepted_latency)):
        print(
            f"  {name} ms: p50 {lat.p50:.2f}  p90 {lat.p90:.2f}  p99 {lat.p99:.2f}  "
            f"p99.9 {lat.p999:.2f}  max {lat.max:.2f}"
        )
