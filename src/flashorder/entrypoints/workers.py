"""The relay, projector and expirer processes of the full stack.

Each builds its clients inside its own loop, runs until SIGTERM or SIGINT, and closes
everything on the way out (a stop never loses an event: what was not committed comes again).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from datetime import timedelta
from functools import partial

from prometheus_client import CollectorRegistry, start_http_server

from flashorder.adapters import tracing
from flashorder.adapters.events.kafka_consumer import KafkaEventConsumer
from flashorder.adapters.events.kafka_publisher import KafkaEventPublisher
from flashorder.adapters.sql import projector_status
from flashorder.adapters.sql.engine import make_engine
from flashorder.adapters.sql.outbox import SqlOutboxRelayStore
from flashorder.adapters.sql.read_model import SqlReadModel
from flashorder.application.expiry import Expirer
from flashorder.application.projector import ProjectorStats, register_metrics, run_projector
from flashorder.application.relay import RelayMetrics, run_relay
from flashorder.application.tracing import NO_TRACER
from flashorder.config import Settings
from flashorder.entrypoints.heap import freeze_startup_heap

log = logging.getLogger(__name__)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def relay_main(settings: Settings) -> None:
    assert settings.kafka_bootstrap is not None
    stop = _stop_on_signals()
    engine = make_engine(settings.effective_database_url, pool_size=4)
    publisher = KafkaEventPublisher(
        settings.kafka_bootstrap, topic_prefix=settings.kafka_topic_prefix
    )
    registry = CollectorRegistry()
    metrics = RelayMetrics(registry)
    tracer = tracing.from_environment("flashorder-relay")
    try:
        _serve_metrics(registry, settings.host, settings.relay_metrics_port)
        async with publisher:
            freeze_startup_heap()
            await run_relay(
                SqlOutboxRelayStore(engine),
                publisher,
                stop=stop,
                batch_size=settings.relay_batch_size,
                idle_sleep=settings.relay_idle_seconds,
                retention=timedelta(hours=settings.outbox_retention_hours),
                tracer=tracer or NO_TRACER,
                metrics=metrics,
            )
    finally:
        if tracer is not None:
            tracer.shutdown()
        await engine.dispose()


async def projector_main(settings: Settings) -> None:
    assert settings.kafka_bootstrap is not None
    stop = _stop_on_signals()
    engine = make_engine(settings.effective_database_url, pool_size=4)
    # One status row per process: the group's members report side by side.
    name = f"{settings.projector_group}@{socket.gethostname()}:{os.getpid()}"
    consumer = KafkaEventConsumer(
        settings.kafka_bootstrap,
        group_id=settings.projector_group,
        topic_prefix=settings.kafka_topic_prefix,
        fetch_wait_ms=settings.projector_fetch_wait_ms,
    )
    stats = ProjectorStats(name=name)
    registry = CollectorRegistry()
    register_metrics(stats, registry)
    tracer = tracing.from_environment("flashorder-projector")
    try:
        _serve_metrics(registry, settings.host, settings.projector_metrics_port)
        async with consumer:
            freeze_startup_heap()
            await run_projector(
                consumer,
                SqlReadModel(engine),
                stop=stop,
                batch_size=settings.relay_batch_size,
                stats=stats,
                report=partial(projector_status.write, engine),
                tracer=tracer or NO_TRACER,
            )
    finally:
        if tracer is not None:
            tracer.shutdown()
        await engine.dispose()


def _serve_metrics(registry: CollectorRegistry, host: str, port: int | None) -> None:
    """Serve ``registry`` at ``http://host:port/metrics`` from a thread of this process
    (prometheus-client's own server), when a port is configured."""
    if port is None:
        return
    start_http_server(port, addr=host, registry=registry)
    log.info("metrics.serving", extra={"url": f"http://{host}:{port}/metrics"})


async def expirer_main(settings: Settings) -> None:
    """Expire unpaid orders past their deadline until stopped. Several may run at once (on
    MariaDB they take disjoint batches with ``SKIP LOCKED``)."""
    from flashorder.bootstrap import build

    stop = _stop_on_signals()
    async with build(settings, background=False) as service:
        freeze_startup_heap()
        expirer = Expirer(service.deps, batch_size=settings.expire_batch_size)
        await expirer.run(stop, every=settings.expire_every_seconds)
