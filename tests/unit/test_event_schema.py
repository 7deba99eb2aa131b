"""The published event schemas (docs/schemas, docs/asyncapi.yaml) describe the events the code
really writes: real events, encoded as the relay encodes them, validate; altered ones do not.

The payload schemas allow no undocumented field, so a field added to an event fails here until
the schema (and docs/events.md) says what it means.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft7Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

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

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMAS = DOCS / "schemas"


def registry() -> Registry[Any]:
    resources = [
        (path.name, Resource.from_contents(json.loads(path.read_text()), DRAFT7))
        for path in sorted(SCHEMAS.glob("*.schema.json"))
    ]
    return Registry().with_resources(resources)


def validator(event_type: str) -> Draft7Validator:
    return Draft7Validator(
        {"$ref": f"{event_type}.schema.json"}, registry=registry(), format_checker=FormatChecker()
    )


def wire(event: Event) -> dict[str, Any]:
    """The event exactly as it goes on the wire, read back as JSON."""
    decoded: dict[str, Any] = orjson.loads(encode_event(event))
    return decoded


def errors_of(event_type: str, document: dict[str, Any]) -> list[str]:
    return [e.message for e in validator(event_type).iter_errors(document)]


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
    files = sorted(SCHEMAS.glob("*.schema.json"))
    assert {f.name for f in files} >= {f"{t}.schema.json" for t in EVENT_TYPES}
    for path in files:
        Draft7Validator.check_schema(json.loads(path.read_text()))


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
        pytest.param(_set("extra", 1), id="undocumented-envelope-field"),
        pytest.param(_set_in_payload("couponCode", "X"), id="undocumented-payload-field"),
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
