"""Traces: one order is one trace, from the HTTP request to the read model's apply.

The spans go to the SDK's in-memory exporter. The W3C ``traceparent`` crosses the outbox
(a column) and Kafka (a message header), as it does between the processes of the stack.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.types import Receive, Scope, Send

from flashorder.adapters.events.kafka_consumer import KafkaEventConsumer
from flashorder.adapters.events.kafka_publisher import KafkaEventPublisher
from flashorder.adapters.events.topics import ensure_topics
from flashorder.adapters.sql.migrate import create_database_if_missing, drop_database, migrate
from flashorder.adapters.sql.outbox import SqlOutboxRelayStore
from flashorder.adapters.sql.read_model import SqlReadModel
from flashorder.adapters.tracing import enabled_by
from flashorder.adapters.tracing.otel import OtelTracer
from flashorder.application.projector import run_projector
from flashorder.application.relay import run_relay
from flashorder.config import Settings
from flashorder.entrypoints.api import create_app
from flashorder.entrypoints.tokens import mint_token
from tests.support.api import InProcessApi, embedded, traced
from tests.support.calls import new_product, order_body

#: The caller's own trace: the order's spans continue it.
CALLER_TRACE = secrets.token_hex(16)
CALLER_SPAN = secrets.token_hex(8)
CHAIN = ("stock.reserve", "order.write", "outbox.publish", "projector.apply")


@pytest.fixture
def spans() -> Iterator[tuple[OtelTracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield OtelTracer(provider), exporter
    provider.shutdown()


async def place_traced(api: InProcessApi, pid: str, user: str) -> None:
    reply = await api.call(
        "POST",
        "/api/v1/orders",
        order_body(user, (pid, 1, 10050)),
        headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        token=api.token(user),
    )
    assert reply.status == 201, reply.body


async def finished(exporter: InMemorySpanExporter, name: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not any(s.name == name for s in exporter.get_finished_spans()):
        assert time.monotonic() < deadline, [s.name for s in exporter.get_finished_spans()]
        await asyncio.sleep(0.05)


def assert_one_trace(exporter: InMemorySpanExporter) -> None:
    spans = [s for s in exporter.get_finished_spans() if s.context is not None]
    by_name: dict[str, ReadableSpan] = {}
    for span in spans:
        if span.context is not None and f"{span.context.trace_id:032x}" == CALLER_TRACE:
            by_name.setdefault(span.name, span)
    request = by_name["POST /api/v1/orders"]
    assert request.parent is not None
    assert f"{request.parent.span_id:016x}" == CALLER_SPAN
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 201
    # Each step is the child of the one before it: request → write → publish → apply.
    parent_of = {name: by_name[name].parent for name in CHAIN}
    assert request.context is not None
    assert parent_of["stock.reserve"].span_id == request.context.span_id  # type: ignore[union-attr]
    assert parent_of["order.write"].span_id == request.context.span_id  # type: ignore[union-attr]
    write, publish = by_name["order.write"], by_name["outbox.publish"]
    assert write.context is not None
    assert publish.context is not None
    assert parent_of["outbox.publish"].span_id == write.context.span_id  # type: ignore[union-attr]
    assert parent_of["projector.apply"].span_id == publish.context.span_id  # type: ignore[union-attr]


async def test_one_order_is_one_trace_through_the_embedded_service(
    tmp_path: Path, spans: tuple[OtelTracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    async with traced(tmp_path, tracer) as api:
        pid = await new_product(api, stock=5)
        await place_traced(api, pid, "traced1")
        await finished(exporter, "projector.apply")
    assert_one_trace(exporter)


async def test_a_cancel_is_one_trace_too_from_the_request_to_the_read_model(
    tmp_path: Path, spans: tuple[OtelTracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    cancel_trace, cancel_span = secrets.token_hex(16), secrets.token_hex(8)
    async with traced(tmp_path, tracer) as api:
        pid = await new_product(api, stock=5)
        placed = await api.call(
            "POST", "/api/v1/orders", order_body("traced3", (pid, 1, 10050)),
            token=api.token("traced3"),
        )  # fmt: skip
        assert placed.status == 201, placed.body
        reply = await api.call(
            "POST",
            f"/api/v1/orders/{placed.body['orderId']}/cancel",
            headers={"traceparent": f"00-{cancel_trace}-{cancel_span}-01"},
            token=api.token("traced3"),
        )
        assert reply.status == 200, reply.body

        def of_cancel() -> dict[str, ReadableSpan]:
            found = {}
            for span in exporter.get_finished_spans():
                if span.context is not None and f"{span.context.trace_id:032x}" == cancel_trace:
                    found[span.name] = span
            return found

        deadline = time.monotonic() + 30
        while "projector.apply" not in of_cancel():
            assert time.monotonic() < deadline, list(of_cancel())
            await asyncio.sleep(0.05)
    chain = of_cancel()
    request, cancel = chain["POST /api/v1/orders/{order_id}/cancel"], chain["order.cancel"]
    publish, apply = chain["outbox.publish"], chain["projector.apply"]
    assert request.context is not None
    assert cancel.context is not None
    assert publish.context is not None
    # request → the cancel's transaction → the relay's publish of order.cancelled → apply.
    assert cancel.parent is not None
    assert cancel.parent.span_id == request.context.span_id
    assert publish.parent is not None
    assert publish.parent.span_id == cancel.context.span_id
    assert publish.attributes is not None
    assert publish.attributes["flashorder.event.type"] == "order.cancelled"
    assert apply.parent is not None
    assert apply.parent.span_id == publish.context.span_id


@asynccontextmanager
async def in_process_stack(
    settings: Settings, tracer: OtelTracer, group: str
) -> AsyncIterator[InProcessApi]:
    """An API on MariaDB, Redis and Kafka, with a relay and a projector, all in this process
    and all traced by ``tracer`` (as three processes would be, each with its own provider)."""
    assert settings.kafka_bootstrap is not None
    await ensure_topics(settings.kafka_bootstrap, prefix=settings.kafka_topic_prefix)
    app = create_app(settings, background=False, tracer=tracer)
    stop = asyncio.Event()
    async with app.router.lifespan_context(app) as state:
        assert state is not None
        service = state["service"]
        publisher = KafkaEventPublisher(
            settings.kafka_bootstrap, topic_prefix=settings.kafka_topic_prefix
        )
        consumer = KafkaEventConsumer(
            settings.kafka_bootstrap, group_id=group, topic_prefix=settings.kafka_topic_prefix
        )
        async with publisher, consumer:
            relay = asyncio.create_task(
                run_relay(SqlOutboxRelayStore(service.engine), publisher, stop=stop, tracer=tracer)
            )
            projector = asyncio.create_task(
                run_projector(consumer, SqlReadModel(service.engine), stop=stop, tracer=tracer)
            )

            async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
                scope["state"] = dict(state)
                await app(scope, receive, send)

            transport = httpx2.ASGITransport(app=with_state)
            try:
                async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:
                    yield InProcessApi(client, service)
            finally:
                stop.set()
                await asyncio.gather(relay, projector)


@pytest.mark.services
async def test_one_order_is_one_trace_across_redis_mariadb_the_outbox_and_kafka(
    mariadb_url: str,
    redis_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
    spans: tuple[OtelTracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = spans
    name = f"flashorder_trace_{uuid.uuid4().hex[:10]}"
    await asyncio.to_thread(create_database_if_missing, mariadb_url, name)
    try:
        database_url = f"{mariadb_url}/{name}"
        await asyncio.to_thread(migrate, database_url)
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url.rsplit("/", 1)[0] + "/5",
            kafka_bootstrap=kafka_bootstrap,
            kafka_topic_prefix=f"{name}.",
            data_dir=tmp_path,
            # Tokens are minted with the development secret; the app listens nowhere.
            allow_dev_secret=True,
        )
        async with in_process_stack(settings, tracer, f"{name}-projector") as api:
            pid = await new_product(api, stock=5)
            await place_traced(api, pid, "traced2")
            await finished(exporter, "projector.apply", within=60)
        assert_one_trace(exporter)
    finally:
        await asyncio.to_thread(drop_database, mariadb_url, name)


def test_tracing_is_off_unless_the_otel_variables_turn_it_on() -> None:
    assert enabled_by({}) is None
    assert enabled_by({"OTEL_SERVICE_NAME": "shop"}) is None
    assert enabled_by({"OTEL_TRACES_EXPORTER": "none"}) is None
    assert enabled_by({"OTEL_TRACES_EXPORTER": "otlp"}) == "otlp"
    assert enabled_by({"OTEL_TRACES_EXPORTER": "console"}) == "console"
    assert enabled_by({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == "otlp"
    assert enabled_by({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) is None


async def test_with_tracing_off_a_request_makes_no_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(variable, raising=False)
    made: list[object] = []
    # Any span the SDK would make goes through Span.__init__.
    import opentelemetry.sdk.trace as sdk

    original = sdk.Span.__init__

    def counting(self: sdk.Span, *args: object, **kwargs: object) -> None:
        made.append(self)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sdk.Span, "__init__", counting)
    async with embedded(tmp_path) as api:
        assert api.service.deps.tracer.enabled is False
        pid = await new_product(api, stock=2)
        reply = await api.call(
            "POST",
            "/api/v1/orders",
            order_body("quiet1", (pid, 1, 10050)),
            token=mint_token(api.settings, "quiet1"),
        )
        assert reply.status == 201
    assert made == []
