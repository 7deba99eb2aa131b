"""The life of a sale over HTTP, embedded and on the full stack (where the expirer is a
process of its own): sale windows, the signed payment webhook, expiry, and a buyer who reads
their own writes at once."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text

from flashorder.entrypoints.payment_signature import HEADER, sign
from tests.invariants import check_stock, check_transitions, units
from tests.support.api import Api, Reply
from tests.support.calls import admin, place, product, rid

PROBLEM = "urn:flashorder:problem:"
PRICE = 10050


async def sale(api: Api, *, stock: int, **fields: Any) -> str:
    pid = rid("PRD")
    body = {"productId": pid, "name": "drop", "price": PRICE, "stock": stock, **fields}
    reply = await api.call("POST", "/api/v1/products", body, token=admin(api))
    assert reply.status == 201, reply.body
    return pid


def iso(at: datetime) -> str:
    return at.isoformat()


async def webhook(
    api: Api,
    order_id: str,
    *,
    status: str = "succeeded",
    amount: int = PRICE,
    event_id: str | None = None,
    secret: str | None = None,
    stamp: int | None = None,
) -> Reply:
    body = orjson.dumps(
        {"eventId": event_id or rid("evt"), "orderId": order_id, "amount": amount, "status": status}
    )
    key = secret or api.settings.payment_webhook_secret.get_secret_value()
    headers = {"content-type": "application/json", HEADER: sign(key, body, at=stamp)}
    return await api.call("POST", "/api/v1/payments/events", content=body, headers=headers)


async def projected(api: Api, order_id: str, status: str, *, timeout: float = 30) -> None:
    """Wait until the read model itself (not the owner's read-your-writes) has the order in
    ``status``: the new events went through the outbox, the broker and the projector."""
    started = time.monotonic()
    query = text("SELECT status FROM order_views WHERE order_id = :o")
    while True:
        async with api.engine.connect() as conn:
            if (await conn.execute(query, {"o": order_id})).scalar() == status:
                return
        assert time.monotonic() - started < timeout, f"the read model never showed {status}"
        await asyncio.sleep(0.2)


async def read(api: Api, order_id: str, user: str) -> Reply:
    return await api.call("GET", f"/api/v1/orders/{order_id}", token=api.token(user))


async def status_of(api: Api, order_id: str, user: str) -> str:
    reply = await read(api, order_id, user)
    assert reply.status == 200, reply.body
    return str(reply.body["status"])


# --- sale windows -------------------------------------------------------------------------------


async def test_an_order_before_the_start_is_refused_with_the_seconds_to_wait(api: Api) -> None:
    starts = datetime.now(UTC) + timedelta(seconds=60)
    pid = await sale(api, stock=5, saleStartsAt=iso(starts))

    reply = await place(api, rid("u"), (pid, 1, PRICE))

    assert reply.status == 409
    assert reply.body["type"] == PROBLEM + "sale-not-started"
    assert datetime.fromisoformat(reply.body["saleStartsAt"]) == starts
    assert 50 <= int(reply.headers["Retry-After"]) <= 60
    page = await product(api, pid)
    assert datetime.fromisoformat(page["saleStartsAt"]) == starts
    assert abs(datetime.fromisoformat(page["serverTime"]) - datetime.now(UTC)) < timedelta(
        seconds=30
    )
    assert (page["available"], page["sold"]) == (5, 0)
    await check_stock(api.engine, api.gate, [pid])


async def test_an_order_after_the_end_is_refused(api: Api) -> None:
    ended = datetime.now(UTC) - timedelta(seconds=1)
    pid = await sale(api, stock=5, saleEndsAt=iso(ended))

    reply = await place(api, rid("u"), (pid, 1, PRICE))

    assert reply.status == 409
    assert reply.body["type"] == PROBLEM + "sale-ended"
    await check_stock(api.engine, api.gate, [pid])


async def test_an_admin_moving_the_start_opens_the_sale_within_the_cache_time(api: Api) -> None:
    pid = await sale(api, stock=5, saleStartsAt=iso(datetime.now(UTC) + timedelta(hours=1)))
    assert (await place(api, rid("u"), (pid, 1, PRICE))).status == 409

    changed = await api.call(
        "PATCH", f"/api/v1/products/{pid}", {"saleStartsAt": None}, token=admin(api)
    )
    assert changed.status == 200, changed.body
    assert changed.body["saleStartsAt"] is None
    started = time.monotonic()
    while (reply := await place(api, rid("u"), (pid, 1, PRICE))).status != 201:
        assert reply.body["type"] == PROBLEM + "sale-not-started"
        # Every worker's catalogue cache lets the change through within its 5 s.
        assert time.monotonic() - started < 6, "the change did not reach every worker"
        await asyncio.sleep(0.1)
    await check_stock(api.engine, api.gate, [pid])


async def test_a_window_that_ends_before_it_starts_is_refused(api: Api) -> None:
    now = datetime.now(UTC)
    pid = await sale(api, stock=1)
    reply = await api.call(
        "PATCH",
        f"/api/v1/products/{pid}",
        {"saleStartsAt": iso(now), "saleEndsAt": iso(now - timedelta(minutes=1))},
        token=admin(api),
    )
    assert reply.status == 422
    assert (await product(api, pid))["saleStartsAt"] is None


# --- payment --------------------------------------------------------------------------------------


async def test_a_signed_payment_pays_the_order_and_its_owner_sees_it_at_once(api: Api) -> None:
    pid = await sale(api, stock=3)
    user = rid("u")
    placed = await place(api, user, (pid, 1, PRICE))
    order_id = placed.body["orderId"]
    assert datetime.fromisoformat(placed.body["payBy"]) > datetime.now(UTC)
    event_id = rid("evt")

    paid = await webhook(api, order_id, event_id=event_id)

    assert paid.status == 200, paid.body
    assert (paid.body["outcome"], paid.body["orderStatus"], paid.body["replayed"]) == (
        "paid",
        "PAID",
        False,
    )
    view = (await read(api, order_id, user)).body
    assert view["status"] == "PAID"
    assert view["paidAt"] is not None
    again = await webhook(api, order_id, event_id=event_id)
    assert (again.status, again.body["outcome"], again.body["replayed"]) == (200, "paid", True)
    page = await product(api, pid)
    assert (page["available"], page["sold"]) == (2, 1)
    await check_stock(api.engine, api.gate, [pid])
    assert (await units(api.engine, pid)).get("PAID", 0) == 1
    await projected(api, order_id, "PAID")
    await check_transitions(api.engine, [order_id])


async def test_bad_signatures_stale_timestamps_and_wrong_amounts_change_nothing(
    api: Api,
) -> None:
    pid = await sale(api, stock=3)
    user = rid("u")
    order_id = (await place(api, user, (pid, 1, PRICE))).body["orderId"]
    stale = int(time.time()) - api.settings.payment_webhook_tolerance_seconds - 60
    body = orjson.dumps({"eventId": "e", "orderId": order_id, "amount": PRICE, "status": "x"})

    refusals = [
        await webhook(api, order_id, secret="not-the-secret-at-all"),
        await webhook(api, order_id, stamp=stale),
        await api.call("POST", "/api/v1/payments/events", content=body),
    ]
    wrong_amount = await webhook(api, order_id, amount=PRICE - 1)
    unsigned_garbage = await webhook(api, order_id, status="refunded")

    assert [r.status for r in refusals] == [401, 401, 401]
    assert {r.body["type"] for r in refusals} == {PROBLEM + "bad-signature"}
    assert wrong_amount.status == 422
    assert wrong_amount.body["type"] == PROBLEM + "payment-amount-mismatch"
    assert unsigned_garbage.status == 422
    assert await status_of(api, order_id, user) == "CREATED"
    assert (await webhook(api, rid("missing"))).status == 404
    await check_transitions(api.engine, [order_id])


async def test_processing_moves_the_deadline_once_and_failed_leaves_it(api: Api) -> None:
    pid = await sale(api, stock=3, payWithinSeconds=30)
    user = rid("u")
    placed = await place(api, user, (pid, 1, PRICE))
    order_id, pay_by = placed.body["orderId"], datetime.fromisoformat(placed.body["payBy"])

    failed = await webhook(api, order_id, status="failed")
    first = await webhook(api, order_id, status="processing")
    second = await webhook(api, order_id, status="processing")

    assert (failed.body["outcome"], first.body["outcome"], second.body["outcome"]) == (
        "unchanged",
        "extended",
        "unchanged",
    )
    view = (await read(api, order_id, user)).body
    grace = timedelta(seconds=api.settings.payment_grace_seconds)
    assert datetime.fromisoformat(view["payBy"]) >= max(pay_by, datetime.now(UTC) + grace / 2)
    assert view["status"] == "CREATED"
    await check_transitions(api.engine, [order_id])


async def test_a_paid_order_cancelled_gives_its_unit_back_and_announces_a_refund(
    api: Api,
) -> None:
    pid = await sale(api, stock=1)
    user = rid("u")
    order_id = (await place(api, user, (pid, 1, PRICE))).body["orderId"]
    assert (await webhook(api, order_id)).body["outcome"] == "paid"

    cancelled = await api.call("POST", f"/api/v1/orders/{order_id}/cancel", token=api.token(user))

    assert cancelled.status == 200
    assert await status_of(api, order_id, user) == "CANCELLED"
    assert (await check_stock(api.engine, api.gate, [pid]))[pid]["available"] == 1
    await projected(api, order_id, "CANCELLED")
    await check_transitions(api.engine, [order_id])


# --- expiry --------------------------------------------------------------------------------------


async def test_an_unpaid_order_expires_and_its_unit_sells_again(api: Api) -> None:
    pid = await sale(api, stock=1, payWithinSeconds=1)
    user = rid("u")
    order_id = (await place(api, user, (pid, 1, PRICE))).body["orderId"]
    assert (await place(api, rid("u"), (pid, 1, PRICE))).status == 409

    started = time.monotonic()
    while await status_of(api, order_id, user) != "EXPIRED":
        assert time.monotonic() - started < 15, "not expired within seconds"
        await asyncio.sleep(0.2)
    # The unit is on sale again (the sold-out mark lasts a tenth of a second at most).
    while (again := await place(api, rid("u"), (pid, 1, PRICE))).status == 409:
        assert time.monotonic() - started < 20
        await asyncio.sleep(0.05)
    assert again.status == 201
    late = await webhook(api, order_id)
    assert (late.body["outcome"], late.body["orderStatus"]) == ("refund-due", "EXPIRED")
    assert await status_of(api, order_id, user) == "EXPIRED"
    expired_cancel = await api.call(
        "POST", f"/api/v1/orders/{order_id}/cancel", token=api.token(user)
    )
    assert expired_cancel.status == 409
    await projected(api, order_id, "EXPIRED")
    await check_stock(api.engine, api.gate, [pid])
    await check_transitions(api.engine, [order_id, again.body["orderId"]])


async def test_payments_at_the_deadline_against_the_expirer_end_each_order_once(
    api: Api,
) -> None:
    n = 100
    pid = await sale(api, stock=n, payWithinSeconds=2)
    buyers = [rid("u") for _ in range(n)]
    placed = await asyncio.gather(*(place(api, u, (pid, 1, PRICE)) for u in buyers))
    assert {r.status for r in placed} == {201}

    async def pay_near_the_deadline(order: dict[str, Any]) -> Reply:
        pay_by = datetime.fromisoformat(order["payBy"])
        wait = (pay_by - datetime.now(UTC)).total_seconds() + random.uniform(-0.5, 0.5)
        await asyncio.sleep(max(0.0, wait))
        return await webhook(api, order["orderId"])

    answers = await asyncio.gather(*(pay_near_the_deadline(r.body) for r in placed))

    outcomes = Counter(a.body["outcome"] for a in answers)
    assert set(outcomes) <= {"paid", "refund-due"}, outcomes
    order_ids = [r.body["orderId"] for r in placed]
    # Those paid in time stay paid; the others are expired within seconds.
    started = time.monotonic()
    while True:
        statuses = Counter(
            await asyncio.gather(
                *(status_of(api, o, u) for o, u in zip(order_ids, buyers, strict=True))
            )
        )
        if "CREATED" not in statuses:
            break
        assert time.monotonic() - started < 15, statuses
        await asyncio.sleep(0.3)
    assert statuses["PAID"] == outcomes["paid"]
    assert statuses["EXPIRED"] == outcomes["refund-due"]
    final = await check_transitions(api.engine, order_ids)
    for answer in answers:
        expected = {"paid": "PAID", "refund-due": "EXPIRED"}[answer.body["outcome"]]
        assert final[answer.body["orderId"]] == expected
    figures = await check_stock(api.engine, api.gate, [pid])
    assert (await units(api.engine, pid)).get("PAID", 0) == outcomes["paid"]
    assert figures[pid]["available"] == outcomes["refund-due"]


# --- read your own writes ---------------------------------------------------------------------


async def test_the_buyer_reads_each_order_at_once_after_201_and_after_cancel(api: Api) -> None:
    pid = await sale(api, stock=40)

    async def buyer() -> None:
        user = rid("u")
        order_id = (await place(api, user, (pid, 1, PRICE))).body["orderId"]
        assert await status_of(api, order_id, user) == "CREATED"
        assert (await read(api, order_id, rid("someone_else"))).status == 404
        cancel = await api.call("POST", f"/api/v1/orders/{order_id}/cancel", token=api.token(user))
        assert cancel.status == 200
        assert await status_of(api, order_id, user) == "CANCELLED"

    await asyncio.gather(*(buyer() for _ in range(20)))
    await check_stock(api.engine, api.gate, [pid])


async def test_a_window_out_of_range_in_utc_is_refused_and_changes_nothing(api: Api) -> None:
    pid = await sale(api, stock=1)
    for instant in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
        reply = await api.call(
            "PATCH", f"/api/v1/products/{pid}", {"saleStartsAt": instant}, token=admin(api)
        )
        assert reply.status == 422, reply.body
    assert (await product(api, pid))["saleStartsAt"] is None
