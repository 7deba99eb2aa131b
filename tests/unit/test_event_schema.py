"""The published event schemas (docs/schemas, docs/asyncapi.yaml) describe the events the code
really writes: real events, encoded as the relay encodes them, validate; altered ones do not.

The schemas are open (a consumer must accept members it does not know: adding one is a
compatible change), so they cannot catch an undocumented member themselves: a test here
checks that every member the code writes is declared, so a field added to an event fails
until the schema (and docs/events.md) says what it means. The AsyncAPI document is checked
by the AsyncAPI parser (tools/asyncapi, installed by ``make asyncapi-tools``).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft7Validator

from flashorder.adapters.events.codec import encode_event
from flashorder.domain.events import EVENT_TYPES, Event
from flashorder.domain.model import (
    DiscountPolicyId,
    Order,
    OrderId,
    OrderLine,
    PaymentType,
    Product,
    ProductId,
    UserId,
    stock_changed,
)
from tests.event_schemas import BASE, errors_of, registry, schema_files, schema_id

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SCHEMAS = DOCS / "schemas"
VALIDATOR = ROOT / "tools" / "asyncapi" / "validate.mjs"


def wire(event: Event) -> dict[str, Any]:
    """The event exactly as it goes on the wire, read back as JSON."""
    decoded: dict[str, Any] = orjson.loads(encode_event(event))
    return decoded


def placed(*, at: datetime, discount: bool = False) -> Order:
    lines = (
        OrderLine(ProductId("PRD_240701120000001_0001_101"), 1, 10050),
        OrderLine(ProductId(f"PRD_{uuid.uuid4().hex[:12]}"), 3, 2000),
    )
    items = sum(line.amount for line in lines)
    off = 1000 if discount else 0
    return Order.place(
        order_id=OrderId(str(uuid.uuid4())),
        user_id=UserId(f"u_{uuid.uuid4().hex[:8]}"),
        lines=lines,
        discount_policy_id=DiscountPolicyId("WELCOME10") if discount else None,
        discount_amount=off,
        delivery_fee=3000,
        payment_amount=items - off + 3000,
        payment_type=PaymentType.CREDIT,
        at=at,
    )


# Microseconds of zero make isoformat leave the fraction out: both forms must validate.
TIMES = [
    pytest.param(datetime(2024, 7, 1, 12, 0, 0, tzinfo=UTC), id="whole-second"),
    pytest.param(datetime.now(UTC), id="now"),
]


def test_every_schema_file_is_a_valid_draft_7_schema() -> None:
    files = schema_files()
    assert {f.name for f in files} >= {f"{t}.schema.json" for t in EVENT_TYPES}
    for path in files:
        Draft7Validator.check_schema(json.loads(path.read_text()))


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_schema_has_an_id_under_which_its_references_resolve() -> None:
    resolver = registry().resolver()
    for path in schema_files():
        contents = json.loads(path.read_text())
        assert contents["$id"] == BASE + path.name
        # The registry knows the files only by their $id: a reference that does not resolve
        # against it raises.
        here = resolver.lookup(contents["$id"]).resolver
        for ref in _refs(contents):
            here.lookup(ref)
    assert {schema_id(t) for t in EVENT_TYPES} <= set(registry())


@pytest.mark.parametrize("at", TIMES)
@pytest.mark.parametrize("discount", [False, True], ids=["no-discount", "discount"])
def test_an_encoded_order_created_event_matches_its_schema(at: datetime, discount: bool) -> None:
    order = placed(at=at, discount=discount)
    (created,) = order.events

    assert errors_of("order.created", wire(created)) == []


@pytest.mark.parametrize("at", TIMES)
def test_an_encoded_order_cancelled_event_matches_its_schema(at: datetime) -> None:
    order = placed(at=at)
    assert order.cancel(datetime.now(UTC))
    cancelled = order.events[-1]

    assert errors_of("order.cancelled", wire(cancelled)) == []


def test_an_encoded_stock_changed_event_matches_its_schema() -> None:
    product = Product(
        product_id=ProductId(f"PRD_{uuid.uuid4().hex[:12]}"),
        name="Flash sale item",
        price=10050,
        stock=100,
        available=40,
        version=3,
    )

    assert errors_of("stock.changed", wire(stock_changed(product, at=datetime.now(UTC)))) == []


def test_each_event_matches_only_the_schema_of_its_own_type() -> None:
    order = placed(at=datetime.now(UTC))
    order.cancel(datetime.now(UTC))
    created, cancelled = (wire(e) for e in order.events)

    assert errors_of("order.cancelled", created) != []
    assert errors_of("order.created", cancelled) != []
    assert errors_of("stock.changed", created) != []


def _set(key: str, value: Any) -> Any:
    return lambda d: d.update({key: value})


def _set_in_payload(key: str, value: Any) -> Any:
    return lambda d: d["payload"].update({key: value})


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: d.pop("eventId"), id="no-event-id"),
        pytest.param(_set("eventId", "not-a-uuid"), id="event-id-not-a-uuid"),
        pytest.param(_set("occurredAt", "2024-07-01T12:00:00+00:00"), id="time-without-z"),
        pytest.param(_set("aggregateVersion", "1"), id="version-as-text"),
        pytest.param(lambda d: d["payload"].pop("paymentAmount"), id="no-payment-amount"),
        pytest.param(_set_in_payload("status", "CANCELLED"), id="created-marked-cancelled"),
        pytest.param(_set_in_payload("items", []), id="no-items"),
        pytest.param(lambda d: d["payload"]["items"][0].update(quantity=0), id="zero-units"),
    ],
)
def test_the_order_created_schema_refuses_an_altered_event(change: Any) -> None:
    (created,) = placed(at=datetime.now(UTC)).events
    document = wire(created)
    change(document)

    assert errors_of("order.created", document) != []


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(_set("traceId", "4bf92f3577b34da6"), id="new-envelope-field"),
        pytest.param(_set_in_payload("couponCode", "X"), id="new-payload-field"),
        pytest.param(lambda d: d["payload"]["items"][0].update(sku="K-1"), id="new-item-field"),
    ],
)
def test_the_schemas_accept_the_additions_the_docs_call_compatible(change: Any) -> None:
    (created,) = placed(at=datetime.now(UTC)).events
    document = wire(created)
    change(document)

    assert errors_of("order.created", document) == []


def test_the_envelope_accepts_an_event_type_it_does_not_know_yet() -> None:
    (created,) = placed(at=datetime.now(UTC)).events
    document = {**wire(created), "type": "order.created.v2"}

    assert errors_of("envelope", document) == []
    assert errors_of("order.created", document) != []


def _declared(schema_name: str, *path: str) -> set[str]:
    schema = json.loads((SCHEMAS / f"{schema_name}.schema.json").read_text())
    for key in path:
        schema = schema[key]
    return set(schema["properties"])


def test_every_member_the_code_writes_is_declared_in_a_schema() -> None:
    order = placed(at=datetime.now(UTC), discount=True)
    order.cancel(datetime.now(UTC))
    product = Product(ProductId("PRD_1"), "Item", price=100, stock=5, available=5)
    documents = [wire(e) for e in order.events] + [
        wire(stock_changed(product, at=datetime.now(UTC)))
    ]
    envelope = _declared("envelope")
    order_members = _declared("order")
    item_members = _declared("order", "properties", "items", "items")
    stock_members = _declared("stock.changed", "properties", "payload")
    for document in documents:
        assert set(document) <= envelope, document["type"]
        if document["type"] == "stock.changed":
            assert set(document["payload"]) <= stock_members
            continue
        assert set(document["payload"]) <= order_members, document["type"]
        for item in document["payload"]["items"]:
            assert set(item) <= item_members


def test_the_asyncapi_document_is_valid_for_the_asyncapi_parser() -> None:
    assert (VALIDATOR.parent / "node_modules").is_dir(), "run `make asyncapi-tools` first"
    run = subprocess.run(
        ["node", str(VALIDATOR), str(DOCS / "asyncapi.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert "asyncapi.yaml: valid" in run.stdout


def test_the_asyncapi_document_has_a_channel_and_a_schema_for_every_event_type() -> None:
    spec = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    assert spec["asyncapi"].startswith("3.")
    messages = spec["components"]["messages"]
    addresses = {channel["address"] for channel in spec["channels"].values()}

    assert addresses == {"{prefix}" + t for t in EVENT_TYPES}
    referenced = {m["payload"]["schema"]["$ref"] for m in messages.values()}
    assert referenced == {f"./schemas/{t}.schema.json" for t in EVENT_TYPES}
    for ref in referenced:
        assert (DOCS / ref).is_file(), ref


def test_the_asyncapi_examples_are_valid_events() -> None:
    spec = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    for message in spec["components"]["messages"].values():
        for example in message["examples"]:
            event = example["payload"]
            assert errors_of(message["name"], event) == [], example["name"]
            assert example["headers"]["eventId"] == event["eventId"]
