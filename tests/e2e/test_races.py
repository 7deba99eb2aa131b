"""Races over HTTP: many buyers at once, and the invariants checked after every run."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.invariants import check_stock
from tests.support.api import Api
from tests.support.calls import new_product, place, product, rid

PROBLEM = "urn:flashorder:problem:"


def scale(api: Api, full: int, embedded: int) -> int:
    # The embedded default is one process on SQLite: the same race, smaller.
    return full if api.name == "stack" else embedded


@pytest.mark.parametrize("stock", [100, 1])
async def test_concurrent_buyers_never_oversell(api: Api, stock: int) -> None:
    buyers = scale(api, 1000, 300)
    stock = min(stock, buyers // 3)
    pid = await new_product(api, stock=stock)
    replies = await asyncio.gather(*(place(api, rid("u"), (pid, 1, 10050)) for _ in range(buyers)))
    statuses = Counter(r.status for r in replies)
    assert statuses == {201: stock, 409: buyers - stock}, statuses
    assert {r.body["type"] for r in replies if r.status == 409} == {PROBLEM + "sold-out"}
    figures = await check_stock(api.engine, api.gate, [pid])
    assert figures[pid] == {"stock": stock, "available": 0, "sold": stock}


async def test_concurrent_requests_with_one_key_make_one_order(api: Api) -> None:
    pid = await new_product(api, stock=100)
    user, key = rid("u"), rid("key")
    replies = await asyncio.gather(*(place(api, user, (pid, 1, 10050), key=key) for _ in range(50)))
    created = {r.body["orderId"] for r in replies if r.status in (200, 201)}
    in_flight = [r for r in replies if r.status == 409]
    assert len(created) == 1
    assert all(r.body["type"] == PROBLEM + "duplicate-in-flight" for r in in_flight)
    assert len(in_flight) + sum(r.status in (200, 201) for r in replies) == 50
    retry = await place(api, user, (pid, 1, 10050), key=key)
    assert retry.body["orderId"] in created
    assert (await product(api, pid))["sold"] == 1
    await check_stock(api.engine, api.gate, [pid])


async def test_one_user_cannot_pass_the_per_user_limit(api: Api) -> None:
    pid = await new_product(api, stock=100, max_per_user=2)
    user = rid("u")
    replies = await asyncio.gather(*(place(api, user, (pid, 1, 10050)) for _ in range(30)))
    statuses = Counter(r.status for r in replies)
    assert statuses == {201: 2, 409: 28}, statuses
    # No buyer's lock to wait for: the gate's script serialises them, and says why.
    assert {r.body["type"] for r in replies if r.status == 409} == {PROBLEM + "limit-reached"}
    assert (await product(api, pid))["sold"] == 2
    await check_stock(api.engine, api.gate, [pid])


async def test_one_buyers_racing_orders_of_two_products_stop_at_each_limit(api: Api) -> None:
    """A buyer's orders are not serialised by a lock: the gate checks the buyer's units of
    every line in the script that takes the stock, and the database's counts behind it are
    taken in product order, whatever order the lines come in (no deadlock, no 5xx)."""
    a = await new_product(api, stock=100, max_per_user=3)
    b = await new_product(api, stock=100, max_per_user=3)
    user = rid("u")
    lines = [(a, 1, 10050), (b, 1, 10050)]
    replies = await asyncio.gather(
        *(place(api, user, *(lines if i % 2 else lines[::-1])) for i in range(50))
    )
    statuses = Counter(r.status for r in replies)
    assert statuses == {201: 3, 409: 47}, statuses
    assert {r.body["type"] for r in replies if r.status == 409} == {PROBLEM + "limit-reached"}
    assert [(await product(api, pid))["sold"] for pid in (a, b)] == [3, 3]
    await check_stock(api.engine, api.gate, [a, b])


async def test_multi_product_orders_racing_for_a_scarce_item_leave_no_partial_orders(
    api: Api,
) -> None:
    a = await new_product(api, stock=1000)
    b = await new_product(api, stock=1000)
    scarce = await new_product(api, stock=10)
    buyers = scale(api, 200, 60)
    replies = await asyncio.gather(
        *(
            place(api, rid("u"), (a, 1, 10050), (b, 2, 10050), (scarce, 1, 10050))
            for _ in range(buyers)
        )
    )
    # Every buyer got a definite answer: the order, or the scarce item sold out. Nothing else
    # (a 5xx, a 422, a duplicate) is an answer this race may give.
    answers = Counter(
        "201" if r.status == 201 else f"{r.status} {r.body.get('type', '')}" for r in replies
    )
    assert answers == {"201": 10, f"409 {PROBLEM}sold-out": buyers - 10}, answers
    assert {r.body["productId"] for r in replies if r.status == 409} == {scarce}
    figures = await check_stock(api.engine, api.gate, [a, b, scarce])
    assert figures[a]["sold"] == 10
    assert figures[b]["sold"] == 20
    assert figures[scarce]["sold"] == 10


async def test_concurrent_cancels_give_the_stock_back_once(api: Api) -> None:
    pid = await new_product(api, stock=3)
    user = rid("u")
    order = (await place(api, user, (pid, 3, 10050))).body
    replies = await asyncio.gather(
        *(
            api.call("POST", f"/api/v1/orders/{order['orderId']}/cancel", token=api.token(user))
            for _ in range(20)
        )
    )
    assert {r.status for r in replies} == {200}
    assert {r.body["status"] for r in replies} == {"CANCELLED"}
    figures = await check_stock(api.engine, api.gate, [pid])
    assert figures[pid] == {"stock": 3, "available": 3, "sold": 0}


async def test_one_users_idempotency_key_never_answers_another_user(api: Api) -> None:
    pid = await new_product(api, stock=100)
    key = rid("shared-key")
    alice, bob = rid("alice"), rid("bob")

    first = await place(api, alice, (pid, 1, 10050), key=key)
    # Bob sends the same key and the same lines: a key is the user's own, so this is a new
    # order of his, not a replay of Alice's.
    his = await place(api, bob, (pid, 1, 10050), key=key)
    # Both at once, again with one key, from two more users.
    carol, dave = rid("carol"), rid("dave")
    raced = await asyncio.gather(
        *(place(api, user, (pid, 1, 10050), key=key) for user in (carol, dave) * 5)
    )

    assert first.status == 201, first.body
    assert his.status == 201, his.body
    assert his.body["userId"] == bob
    assert his.body["orderId"] != first.body["orderId"]
    assert "idempotent-replayed" not in {h.lower() for h in his.headers}
    by_user: dict[str, set[str]] = {}
    for reply in raced:
        assert reply.status in (200, 201, 409), reply.body
        if reply.status != 409:
            by_user.setdefault(reply.body["userId"], set()).add(reply.body["orderId"])
    # Each user got one order of their own, whatever the others did with the same key.
    assert set(by_user) == {carol, dave}
    assert all(len(orders) == 1 for orders in by_user.values()), by_user
    assert by_user[carol].isdisjoint(by_user[dave])
    # Alice's retry still gets her own answer.
    again = await place(api, alice, (pid, 1, 10050), key=key)
    assert again.body["orderId"] == first.body["orderId"]
    assert (await product(api, pid))["sold"] == 4
