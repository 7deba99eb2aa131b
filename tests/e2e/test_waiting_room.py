"""A queued drop over HTTP, embedded and on the full stack (two API workers): joining, the
draw, admission that knows the stock, the admission token the order call requires."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from flashorder.application.waiting_room import admission_key
from flashorder.domain.model import ProductId
from flashorder.domain.queue import sign_admission
from tests.invariants import check_stock, check_transitions
from tests.support.api import Api, Reply
from tests.support.calls import admin, order_body, rid

PROBLEM = "urn:flashorder:problem:"
PRICE = 10050


async def queued_sale(api: Api, *, stock: int, starts_in: float = 1.5, **fields: Any) -> str:
    pid = rid("PRD")
    starts = datetime.now(UTC) + timedelta(seconds=starts_in)
    body = {
        "productId": pid,
        "name": "queued drop",
        "price": PRICE,
        "stock": stock,
        "saleStartsAt": starts.isoformat(),
        "queued": True,
        **fields,
    }
    reply = await api.call("POST", "/api/v1/products", body, token=admin(api))
    assert reply.status == 201, reply.body
    assert reply.body["queued"] is True
    return pid


async def join(api: Api, pid: str, user: str) -> Reply:
    return await api.call("POST", f"/api/v1/sales/{pid}/queue", token=api.token(user))


async def look(api: Api, pid: str, user: str, ticket: str) -> dict[str, Any]:
    reply = await api.call("GET", f"/api/v1/sales/{pid}/queue/{ticket}", token=api.token(user))
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.body
    return body


async def order(api: Api, pid: str, user: str, admission: str | None) -> Reply:
    headers = {"Admission-Token": admission} if admission is not None else None
    return await api.call(
        "POST",
        "/api/v1/orders",
        order_body(user, (pid, 1, PRICE)),
        headers=headers,
        token=api.token(user),
    )


async def until(
    api: Api, pid: str, tickets: dict[str, str], done: Any, *, timeout: float = 15
) -> dict[str, dict[str, Any]]:
    """Poll every ticket until ``done(views)``; the views then."""
    deadline = time.monotonic() + timeout
    while True:
        views = dict(
            zip(
                tickets,
                await asyncio.gather(*(look(api, pid, u, t) for u, t in tickets.items())),
                strict=True,
            )
        )
        if done(views):
            return views
        assert time.monotonic() < deadline, {u: v["status"] for u, v in views.items()}
        await asyncio.sleep(0.1)


def count(views: dict[str, dict[str, Any]], status: str) -> int:
    return sum(v["status"] == status for v in views.values())


async def test_a_queued_drop_admits_as_many_as_there_are_units_then_says_sold_out(
    api: Api,
) -> None:
    pid = await queued_sale(api, stock=3, starts_in=2.0)
    users = [rid("u") for _ in range(12)]
    joined = await asyncio.gather(*(join(api, pid, u) for u in users))
    again = await join(api, pid, users[0])
    assert [r.status for r in joined] == [201] * 12
    assert again.status == 200
    assert again.body["ticketId"] == joined[0].body["ticketId"]
    before = joined[0].body
    assert (before["status"], before["position"], before["ahead"]) == ("WAITING", None, None)
    refused = await order(api, pid, users[0], None)
    # Before the start the sale window refuses first.
    assert refused.body["type"] == PROBLEM + "sale-not-started"
    tickets = {u: r.body["ticketId"] for u, r in zip(users, joined, strict=True)}

    views = await until(api, pid, tickets, lambda v: count(v, "ADMITTED") == 3)
    # Nobody is admitted for a unit that is not there: three units, three turns.
    await asyncio.sleep(0.6)
    views = await until(api, pid, tickets, lambda v: True)
    assert count(views, "ADMITTED") == 3
    assert count(views, "WAITING") == 9
    assert sorted(v["position"] for v in views.values()) == list(range(1, 13))
    admitted = [u for u, v in views.items() if v["status"] == "ADMITTED"]
    waiting = [u for u, v in views.items() if v["status"] == "WAITING"]
    assert all(views[u]["ahead"] >= 0 for u in waiting)
    no_token = await order(api, pid, waiting[0], None)
    assert (no_token.status, no_token.body["type"]) == (409, PROBLEM + "queue-admission-required")
    assert f"/api/v1/sales/{pid}/queue" in no_token.body["detail"]

    placed = await asyncio.gather(
        *(order(api, pid, u, views[u]["admissionToken"]) for u in admitted)
    )
    assert [r.status for r in placed] == [201] * 3
    # Sold out reaches every waiting ticket within a second.
    sold_at = time.monotonic()
    after = await until(api, pid, tickets, lambda v: count(v, "SOLD_OUT") == 9, timeout=5)
    assert time.monotonic() - sold_at < 1.5
    assert all(after[u]["estimatedWaitSeconds"] is None for u in waiting)
    await check_stock(api.engine, api.gate, [pid])


async def test_an_order_is_refused_without_a_valid_admission_token(api: Api) -> None:
    pid = await queued_sale(api, stock=5, starts_in=0.8)
    other = await queued_sale(api, stock=5, starts_in=0.8)
    user, stranger = rid("u"), rid("u")
    ticket = (await join(api, pid, user)).body["ticketId"]
    stranger_ticket = (await join(api, other, stranger)).body["ticketId"]
    view = (await until(api, pid, {user: ticket}, lambda v: count(v, "ADMITTED") == 1))[user]
    token = view["admissionToken"]
    await until(api, other, {stranger: stranger_ticket}, lambda v: count(v, "ADMITTED") == 1)
    secret = api.settings.queue_secret or api.settings.jwt_secret
    key = admission_key(secret.get_secret_value())
    now_ms = int(time.time() * 1000)
    expired = sign_admission(
        key, product_id=pid, user_id=user, ticket_id=ticket, until_ms=now_ms - 1
    )
    forged = sign_admission(
        b"not the key" * 3, product_id=pid, user_id=user, ticket_id=ticket, until_ms=now_ms + 60_000
    )
    cases = {
        "another user's": (stranger, pid, token, 403, "admission-token-invalid"),
        "another product's": (user, other, token, 403, "admission-token-invalid"),
        "forged": (user, pid, forged, 403, "admission-token-invalid"),
        "malformed": (user, pid, "not-a-token", 403, "admission-token-invalid"),
        "expired": (user, pid, expired, 409, "admission-token-expired"),
        "missing": (user, pid, None, 409, "queue-admission-required"),
    }

    for name, (buyer, product, admission, status, type_) in cases.items():
        reply = await order(api, product, buyer, admission)
        assert (reply.status, reply.body["type"]) == (status, PROBLEM + type_), name
        assert "POST /api/v1/sales/" in reply.body["detail"], name

    figures = await check_stock(api.engine, api.gate, [pid, other])
    assert figures[pid]["available"] == figures[other]["available"] == 5
    # The real token works, once refused ones changed nothing.
    assert (await order(api, pid, user, token)).status == 201
    ordered = await until(api, pid, {user: ticket}, lambda v: count(v, "ORDERED") == 1)
    assert "admissionToken" not in ordered[user]


async def test_expired_holds_reopen_admission(api: Api) -> None:
    pid = await queued_sale(api, stock=1, starts_in=0.8, payWithinSeconds=1)
    first, second = rid("u"), rid("u")
    tickets = {u: (await join(api, pid, u)).body["ticketId"] for u in (first, second)}
    views = await until(api, pid, tickets, lambda v: count(v, "ADMITTED") == 1)
    buyer = next(u for u, v in views.items() if v["status"] == "ADMITTED")
    other = second if buyer == first else first
    placed = await order(api, pid, buyer, views[buyer]["admissionToken"])
    assert placed.status == 201
    await until(api, pid, tickets, lambda v: v[other]["status"] == "SOLD_OUT", timeout=5)
    # Unpaid, the hold expires (in about a second); its unit comes back, and the line moves.
    try:
        reopened = await until(
            api, pid, tickets, lambda v: v[other]["status"] == "ADMITTED", timeout=30
        )
    except AssertionError:
        held = await api.call(
            "GET", f"/api/v1/orders/{placed.body['orderId']}", token=api.token(buyer)
        )
        raise AssertionError(
            f"not re-opened: the order is {held.body['status']}, "
            f"the gate has {await api.gate.available(ProductId(pid))} available"
        ) from None

    resold = await order(api, pid, other, reopened[other]["admissionToken"])
    assert resold.status == 201
    await check_stock(api.engine, api.gate, [pid])
    # The first hold ended once, as EXPIRED; the second holds the unit.
    ids = [placed.body["orderId"], resold.body["orderId"]]
    assert await check_transitions(api.engine, ids) == dict(
        zip(ids, ["EXPIRED", "CREATED"], strict=True)
    )


async def test_hundreds_of_concurrent_joins_give_one_ticket_each_and_nobody_is_admitted_twice(
    api: Api,
) -> None:
    pid = await queued_sale(api, stock=40, starts_in=3.0)
    users = [rid("u") for _ in range(200)]
    # Every buyer joins twice at once: a retry racing the first join.
    replies = await asyncio.gather(*(join(api, pid, u) for u in users + users))
    assert all(r.status in (200, 201) for r in replies), [r.body for r in replies]
    first, retry = replies[:200], replies[200:]
    assert [a.body["ticketId"] for a in first] == [b.body["ticketId"] for b in retry]
    assert sorted(r.status for r in replies) == [200] * 200 + [201] * 200
    tickets = {u: r.body["ticketId"] for u, r in zip(users, first, strict=True)}

    views = await until(api, pid, tickets, lambda v: count(v, "ADMITTED") == 40, timeout=20)
    placed = await asyncio.gather(
        *(
            order(api, pid, u, v["admissionToken"])
            for u, v in views.items()
            if v["status"] == "ADMITTED"
        ),
        # Everyone else tries too, without a token.
        *(order(api, pid, u, None) for u, v in views.items() if v["status"] != "ADMITTED"),
    )

    assert sorted(r.status for r in placed) == [201] * 40 + [409] * 160
    after = await until(api, pid, tickets, lambda v: count(v, "SOLD_OUT") == 160, timeout=5)
    assert count(after, "ORDERED") + count(after, "ADMITTED") == 40
    assert (await check_stock(api.engine, api.gate, [pid]))[pid]["available"] == 0
    created = [r.body["orderId"] for r in placed if r.status == 201]
    assert set((await check_transitions(api.engine, created)).values()) == {"CREATED"}
    stats = await api.call("GET", f"/api/v1/sales/{pid}/queue", token=admin(api))
    assert stats.status == 200
    assert (stats.body["joined"], stats.body["admitted"], stats.body["soldOut"]) == (200, 40, True)
    assert stats.body["drawn"] is True
    assert len(stats.body["seed"]) == 32


async def test_bad_queue_requests_get_4xx_problems(api: Api) -> None:
    plain = rid("PRD")
    reply = await api.call(
        "POST",
        "/api/v1/products",
        {"productId": plain, "name": "plain", "price": PRICE, "stock": 1},
        token=admin(api),
    )
    assert reply.status == 201
    assert reply.body["queued"] is False
    later = datetime.now(UTC) + timedelta(hours=1)
    opens_later = await queued_sale(api, stock=1, starts_in=7200, queueOpensAt=later.isoformat())
    pid = await queued_sale(api, stock=1, starts_in=60)
    user = rid("u")
    ticket = (await join(api, pid, user)).body["ticketId"]
    bad_products: list[dict[str, Any]] = [
        {"queued": True},
        {
            "queued": True,
            "saleStartsAt": later.isoformat(),
            "queueOpensAt": (later + timedelta(1)).isoformat(),
        },
        {"queued": True, "saleStartsAt": later.isoformat(), "admissionPerSecond": 0},
        {"queued": "yes", "saleStartsAt": later.isoformat()},
    ]

    for fields in bad_products:
        body = {"productId": rid("PRD"), "name": "x", "price": 1, "stock": 1, **fields}
        created = await api.call("POST", "/api/v1/products", body, token=admin(api))
        assert created.status == 422, (fields, created.body)
    cases = [
        ("POST", f"/api/v1/sales/{rid('nope')}/queue", api.token(user), 404, "not-found"),
        ("POST", f"/api/v1/sales/{plain}/queue", api.token(user), 404, "not-found"),
        ("POST", "/api/v1/sales/bad%20id!/queue", api.token(user), 422, "validation-error"),
        ("POST", f"/api/v1/sales/{opens_later}/queue", api.token(user), 409, "queue-not-open"),
        ("POST", f"/api/v1/sales/{pid}/queue", None, 401, "unauthorized"),
        ("GET", f"/api/v1/sales/{pid}/queue/{ticket}", api.token("someone"), 404, "not-found"),
        ("GET", f"/api/v1/sales/{pid}/queue/t-unknown", api.token(user), 404, "not-found"),
        ("DELETE", f"/api/v1/sales/{pid}/queue/{ticket}", api.token("x"), 404, "not-found"),
        ("GET", f"/api/v1/sales/{pid}/queue", api.token(user), 403, "forbidden"),
        ("GET", f"/api/v1/sales/{pid}/queue/{ticket}/events", api.token("x"), 404, "not-found"),
    ]

    for method, path, token, status, type_ in cases:
        reply = await api.call(method, path, token=token)
        assert (reply.status, reply.body["type"]) == (status, PROBLEM + type_), (path, reply.body)
    not_open = await join(api, opens_later, user)
    assert int(not_open.headers["Retry-After"]) > 3000
    left = await api.call("DELETE", f"/api/v1/sales/{pid}/queue/{ticket}", token=api.token(user))
    assert left.status == 200
    assert left.body["status"] == "LEFT"
    rejoined = await join(api, pid, user)
    assert rejoined.status == 201
    assert rejoined.body["ticketId"] != ticket


@pytest.mark.services
async def test_the_ticket_stream_pushes_the_admission(stack_api: Any) -> None:
    api = stack_api
    pid = await queued_sale(api, stock=1, starts_in=1.5)
    user = rid("u")
    ticket = (await join(api, pid, user)).body["ticketId"]
    headers = {"Authorization": f"Bearer {api.token(user)}", "Accept": "text/event-stream"}
    seen: list[str] = []
    url = f"{api.base}/api/v1/sales/{pid}/queue/{ticket}/events"
    async with api.session.get(url, headers=headers) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        async with asyncio.timeout(15):
            async for line in stream.content:
                if line.startswith(b"data: "):
                    seen.append(orjson.loads(line[6:])["status"])
                    if seen[-1] == "ADMITTED":
                        break
    assert seen[0] == "WAITING"
    assert seen[-1] == "ADMITTED"
