"""The composition root: real or embedded adapters wired into the handlers.

Only this module and the entrypoints import adapters. Everything built here is built inside
the running event loop and closed on the way out; nothing lives at module level.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters._redis.batch import Client, ScriptBatcher
from flashorder.adapters._redis.cluster import cluster_client
from flashorder.adapters.idempotency.memory import MemoryIdempotencyCache
from flashorder.adapters.idempotency.redis import RedisIdempotencyCache
from flashorder.adapters.locks.memory import MemoryLocks
from flashorder.adapters.locks.redis import RedisLocks
from flashorder.adapters.queue.memory import MemoryQueueStore
from flashorder.adapters.queue.redis import RedisQueueStore
from flashorder.adapters.rate_limit.memory import MemoryRateLimiter
from flashorder.adapters.rate_limit.redis import RedisRateLimiter
from flashorder.adapters.sql import projector_status
from flashorder.adapters.sql.engine import READ_ONLY, make_engine
from flashorder.adapters.sql.outbox import SqlOutboxRelayStore
from flashorder.adapters.sql.payments import SqlOrderLookup
from flashorder.adapters.sql.read_model import SqlReadModel
from flashorder.adapters.sql.sales import SqlSaleFigures
from flashorder.adapters.sql.uow import SqlUnitOfWorkFactory
from flashorder.adapters.stock.memory import MemoryStockGate
from flashorder.adapters.stock.redis import RedisStockGate
from flashorder.adapters.stock.redis_cluster import ShardedStockGate
from flashorder.application.expiry import Expirer
from flashorder.application.group_commit import GroupCommit
from flashorder.application.handlers import Deps
from flashorder.application.placement import LockPlacement, Placement, ReservePlacement
from flashorder.application.ports import (
    IdempotencyCache,
    Locks,
    OrderLookup,
    OutboxRelayStore,
    QueueStore,
    RateLimiter,
    ReadModel,
    ReconcilableStockGate,
    SaleFigures,
)
from flashorder.application.projector import DirectProjection
from flashorder.application.reconcile import run_reconciler
from flashorder.application.relay import run_relay
from flashorder.application.sold_out import SoldOutCache
from flashorder.application.tracing import NO_TRACER, Tracer
from flashorder.application.waiting_room import WaitingRoom, admission_key
from flashorder.config import Settings
from flashorder.domain.model import Product, ProductId
from flashorder.domain.pricing import DeliveryRule


@dataclass
class Service:
    """Everything a request needs, built once per process."""

    settings: Settings
    deps: Deps
    read_model: ReadModel
    #: The write side's reads that give the owner of an order their own writes at once.
    orders: OrderLookup
    engine: AsyncEngine
    outbox: OutboxRelayStore
    #: What the sale page and the metrics read of a sale.
    figures: SaleFigures
    redis: Client | None = None
    background: list[asyncio.Task[object]] = field(default_factory=list)
    #: ``deps.stock`` with the operations reconciliation needs.
    gate: ReconcilableStockGate | None = None
    #: Token buckets for admission (per user, per client address).
    limiter: RateLimiter = field(default_factory=MemoryRateLimiter)
    #: The waiting rooms of queued sales (built in ``build``).
    waiting_room: WaitingRoom | None = None

    async def lag(self) -> dict[str, float]:
        """How far the read model trails the write model: events not yet applied, and the
        age of the oldest of them. Never raises: a dependency that is down reads as -1."""
        try:
            async with asyncio.timeout(2):
                backlog = await self.outbox.backlog()
                statuses = await projector_status.read(self.engine)
        except Exception:
            return {"events": -1, "seconds": -1.0, "outbox": -1, "projectors": 0}
        lag = projector_status.current_lag(statuses, now=datetime.now(UTC))
        if lag is None:
            # Embedded, the relay applies events itself: the backlog is the whole lag. In the
            # full stack no projector reported lately, so how far behind it is is unknown.
            seconds = 0.0 if self.settings.kafka_bootstrap is None and backlog == 0 else -1.0
            return {"events": backlog, "seconds": seconds, "outbox": backlog, "projectors": 0}
        return {
            "events": backlog + lag.lag_events,
            "seconds": lag.lag_seconds,
            "outbox": backlog,
            "projectors": lag.projectors,
        }

    async def readiness(self) -> dict[str, str]:
        """Each dependency's state, as a short word; ``ok`` everywhere means ready."""
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(2):
                # Read-only: on SQLite a plain connection begins by taking the write lock.
                async with self.engine.connect() as conn:
                    conn = await conn.execution_options(**{READ_ONLY: True})
                    await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready; the word says which
            checks["database"] = f"down: {type(exc).__name__}"
        if self.redis is not None:
            try:
                async with asyncio.timeout(2):
                    await self.redis.ping()
                checks["redis"] = "ok"
            except Exception as exc:
                checks["redis"] = f"down: {type(exc).__name__}"
        for task in self.background:
            if task.done():
                checks[task.get_name()] = "stopped"
        return checks


def redis_client(settings: Settings) -> Client:
    assert settings.redis_url is not None
    nodes = settings.redis_cluster_nodes
    if nodes is not None:
        return cluster_client(
            nodes,
            # Per node. The cluster client has no blocking pool: the batcher keeps the
            # number of connections a burst needs small (one pipeline per node and turn).
            max_connections=settings.redis_pool_size,
            # A master that died answers nothing until its replica is promoted (the nodes'
            # timeout, 2 s in scripts/cluster.sh, and an election): a few quick retries,
            # each after the client refreshed its slot map; then the request answers 503
            # and the buyer retries with the same Idempotency-Key.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=3),
            socket_timeout=3,
            socket_connect_timeout=2,
        )
    # A blocking pool: under a burst, requests queue for a connection instead of failing.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        # One quick retry for a dropped connection; beyond that Redis is down, and a request
        # should learn it in milliseconds (503), not after redis-py's default seconds.
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
        max_connections=settings.redis_pool_size,
        timeout=5,
        socket_timeout=3,
        socket_connect_timeout=2,
        health_check_interval=30,
    )
    # from_pool: the client owns the pool, so closing the client closes its connections.
    return Redis.from_pool(pool)


@asynccontextmanager
async def build(
    settings: Settings, *, background: bool = True, tracer: Tracer = NO_TRACER
) -> AsyncIterator[Service]:
    """Build the service for this process; ``background`` runs the embedded relay and
    projector when there is no Kafka (they are separate processes in the full stack);
    ``tracer`` traces orders from the request to the read model."""
    async with AsyncExitStack() as stack:
        engine = make_engine(settings.effective_database_url, pool_size=settings.database_pool_size)
        stack.push_async_callback(engine.dispose)
        redis: Client | None = None
        stock: ReconcilableStockGate
        locks: Locks
        idempotency: IdempotencyCache
        limiter: RateLimiter
        queues: QueueStore
        if settings.redis_url is not None:
            redis = redis_client(settings)
            stack.push_async_callback(redis.aclose)
            # One batcher for the process: the script calls of concurrent requests share
            # pipelines whatever step each request is at.
            batcher = ScriptBatcher(redis)
            # On a cluster, each product in a slot of its own (see stock/redis_cluster.py).
            if isinstance(redis, RedisCluster):
                stock = ShardedStockGate(
                    redis,
                    batcher=batcher,
                    orphan_after=settings.reconcile_older_than_seconds,
                )
            else:
                stock = RedisStockGate(redis, batcher=batcher)
            redis_locks = RedisLocks(
                redis,
                batcher=batcher,
                default_wait=settings.lock_wait_seconds,
                default_lease=settings.lock_lease_seconds,
            )
            stack.push_async_callback(redis_locks.close)
            locks = redis_locks
            idempotency = RedisIdempotencyCache(
                redis,
                batcher=batcher,
                inflight_lease=settings.idempotency_lease_seconds,
                retention=settings.idempotency_retention_seconds,
            )
            limiter = RedisRateLimiter(redis, batcher=batcher)
            queues = RedisQueueStore(redis, batcher=batcher)
        else:
            stock = MemoryStockGate()
            locks = MemoryLocks(
                default_wait=settings.lock_wait_seconds,
                default_lease=settings.lock_lease_seconds,
            )
            idempotency = MemoryIdempotencyCache(
                inflight_lease=settings.idempotency_lease_seconds,
                retention=settings.idempotency_retention_seconds,
            )
            limiter = MemoryRateLimiter()
            queues = MemoryQueueStore()
        read_model = SqlReadModel(engine)
        uow = SqlUnitOfWorkFactory(engine)
        placement = await _placement(
            settings, uow=uow, stock=stock, locks=locks, stack=stack, tracer=tracer
        )
        service = Service(
            settings=settings,
            deps=Deps(
                uow=uow,
                stock=stock,
                locks=locks,
                idempotency=idempotency,
                placement=placement,
                pay_within=timedelta(seconds=settings.pay_within_seconds),
                payment_grace=timedelta(seconds=settings.payment_grace_seconds),
                tracer=tracer,
                delivery=DeliveryRule(settings.delivery_fee, settings.delivery_free_from),
            ),
            read_model=read_model,
            orders=SqlOrderLookup(engine),
            engine=engine,
            outbox=SqlOutboxRelayStore(engine),
            figures=SqlSaleFigures(engine),
            redis=redis,
            gate=stock,
            limiter=limiter,
        )
        service.waiting_room = _start_waiting_room(service, queues, stack)
        if background and settings.kafka_bootstrap is None:
            await _start_embedded_events(service, stack)
            # One process does it all here; the full stack runs ``flashorder expirer``.
            if settings.expire_every_seconds > 0:
                _start_expirer(service, stack)
        # Only the reserve strategy leaves reservations in the gate to bring in line.
        reserves = isinstance(placement, ReservePlacement)
        if background and settings.reconcile_every_seconds > 0 and reserves:
            _start_reconciler(service, stock, stack)
        yield service


async def _placement(
    settings: Settings,
    *,
    uow: SqlUnitOfWorkFactory,
    stock: ReconcilableStockGate,
    locks: Locks,
    stack: AsyncExitStack,
    tracer: Tracer,
) -> Placement:
    """The placement strategy: the one place the ``strategy`` setting is read."""
    if settings.strategy == "lock":
        return LockPlacement(uow=uow, locks=locks)
    writer = GroupCommit(
        uow,
        stock,
        max_batch=settings.group_commit_max_batch,
        batching=settings.group_commit,
    )
    stack.push_async_callback(writer.close)
    return ReservePlacement(
        uow=uow,
        stock=stock,
        writer=writer,
        sold_out=SoldOutCache(
            stock, ttl=settings.sold_out_cache_seconds, max_size=settings.sold_out_cache_size
        ),
        tracer=tracer,
    )


async def _start_embedded_events(service: Service, stack: AsyncExitStack) -> None:
    """The outbox → read model flow inside this process: the same relay, no Kafka."""
    stop = asyncio.Event()
    relay = asyncio.create_task(
        run_relay(
            service.outbox,
            DirectProjection(service.read_model, tracer=service.deps.tracer),
            stop=stop,
            batch_size=service.settings.relay_batch_size,
            retention=timedelta(hours=service.settings.outbox_retention_hours),
            tracer=service.deps.tracer,
        ),
        name="relay",
    )
    service.background.append(relay)

    async def shutdown() -> None:
        stop.set()
        await asyncio.gather(relay, return_exceptions=True)

    stack.push_async_callback(shutdown)


def _start_waiting_room(service: Service, store: QueueStore, stack: AsyncExitStack) -> WaitingRoom:
    """The waiting rooms, and their admission step in this process (``waiting_room.py``)."""
    settings, deps = service.settings, service.deps
    reserves = isinstance(deps.placement, ReservePlacement)

    async def product(product_id: ProductId) -> Product | None:
        async def load(ids: Sequence[ProductId]) -> dict[ProductId, Product]:
            async with deps.uow() as uow:
                return await uow.products.get_many(ids)

        return (await deps.catalogue.products([product_id], load)).get(product_id)

    async def available(product_id: ProductId) -> int:
        # The gate's figure moves with every reservation; the lock strategy leaves the gate
        # out, and a gate that does not know the product yet says None: then the database.
        if reserves:
            level = await deps.stock.available(product_id)
            if level is not None:
                return level
        async with deps.uow() as uow:
            found = await uow.products.get(product_id)
        return 0 if found is None else found.available

    secret = settings.queue_secret or settings.jwt_secret
    room = WaitingRoom(
        store,
        product=product,
        available=available,
        secret=admission_key(secret.get_secret_value()),
        token_seconds=settings.queue_token_seconds,
        window=settings.queue_window,
        tick=settings.queue_tick_seconds,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(room.run(stop), name="waiting-room")
    service.background.append(task)

    async def shutdown() -> None:
        room.close()
        stop.set()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(shutdown)
    return room


def _start_expirer(service: Service, stack: AsyncExitStack) -> None:
    """Expire unpaid orders past their deadline (``expiry.py``) inside this process."""
    stop = asyncio.Event()
    expirer = Expirer(service.deps, batch_size=service.settings.expire_batch_size)
    task = asyncio.create_task(
        expirer.run(stop, every=service.settings.expire_every_seconds), name="expirer"
    )
    service.background.append(task)

    async def shutdown() -> None:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(shutdown)


def _start_reconciler(service: Service, gate: ReconcilableStockGate, stack: AsyncExitStack) -> None:
    """Repair drift between the gate and the database periodically (``reconcile.py``)."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_reconciler(
            uow=service.deps.uow,
            stock=gate,
            locks=service.deps.locks,
            every=service.settings.reconcile_every_seconds,
            older_than=service.settings.reconcile_older_than_seconds,
            stop=stop,
        ),
        name="reconciler",
    )
    service.background.append(task)

    async def shutdown() -> None:
        stop.set()
        # A run in progress is cut short: each repair is atomic, the next process redoes it.
        done, _ = await asyncio.wait([task], timeout=5)
        if not done:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(shutdown)
