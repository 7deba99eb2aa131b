"""Bad input gets a clear 4xx problem and changes nothing; no input gives a 500."""

from __future__ import annotations

import pytest

from tests.support.api import Api
from tests.support.calls import admin, mutations, new_product, order_body, post_order, product, rid

PROBLEM = "urn:flashorder:problem:"


async def test_hostile_order_bodies_get_422_and_change_nothing(api: Api) -> None:
    pid = await new_product(api, stock=5)
    for label, body in mutations(pid):
        reply = await post_order(api, body)
        assert reply.status == 422, (label, reply.status, reply.body)
        assert reply.body["type"].startswith(PROBLEM), label
        assert reply.body["status"] == 422
    assert (await product(api, pid))["available"] == 5


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"\xff\xfe",
        b'{"userId": "u", "items": [',
        b"",
        b"[]" * 10,
        b'{"a":' * 50,
        b'{"userId": "\xc3"}',
    ],
)
async def test_malformed_json_is_a_422(api: Api, raw: bytes) -> None:
    reply = await api.call(
        "POST",
        "/api/v1/orders",
        headers={"content-type": "application/json"},
        content=raw,
        token=api.token("u1"),
    )
    assert reply.status == 422, reply.body
    assert reply.body["type"] == PROBLEM + "validation-error"


async def test_an_oversized_body_is_refused_with_413(api: Api) -> None:
    pid = await new_product(api, stock=5)
    body = order_body(rid("u"), (pid, 1, 10050))
    body["userId"] = "x" * 200_000
    reply = await post_order(api, body)
    assert reply.status == 413
    assert reply.body["type"] == PROBLEM + "payload-too-large"
    assert (await product(api, pid))["available"] == 5


async def test_too_many_items_is_a_422(api: Api) -> None:
    pids = [await new_product(api, stock=5) for _ in range(3)]
    lines = [(pids[i % 3], 1, 10050) for i in range(51)]
    reply = await post_order(api, order_body(rid("u"), *lines))
    assert reply.status == 422


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "tab\there"])
async def test_a_malformed_idempotency_key_is_a_422(api: Api, key: str) -> None:
    pid = await new_product(api, stock=5)
    reply = await post_order(
        api, order_body(rid("u"), (pid, 1, 10050)), headers={"Idempotency-Key": key}
    )
    assert reply.status == 422, reply.body
    assert (await product(api, pid))["available"] == 5


async def test_hostile_product_and_stock_requests_are_refused(api: Api) -> None:
    bodies: list[dict[str, object]] = [
        {"productId": "P", "name": "x", "price": -1, "stock": 1},
        {"productId": "P", "name": "x", "price": 1, "stock": -1},
        {"productId": "bad id!", "name": "x", "price": 1, "stock": 1},
        {"productId": "P", "name": "", "price": 1, "stock": 1},
        {"productId": "P", "name": "x", "price": 1, "stock": 1, "maxPerUser": 0},
    ]
    for body in bodies:
        reply = await api.call("POST", "/api/v1/products", body, token=admin(api))
        assert reply.status == 422, body
    pid = await new_product(api, stock=5)
    changes: list[dict[str, object]] = [{}, {"add": 1, "set": 2}, {"set": -1}, {"add": "many"}]
    for body in changes:
        reply = await api.call("POST", f"/api/v1/products/{pid}/stock", body, token=admin(api))
        assert reply.status == 422, body
    reply = await api.call(
        "POST",
        "/api/v1/discount-policies",
        {"policyId": rid("D"), "kind": "PERCENT", "value": 150},
        token=admin(api),
    )
    assert reply.status == 422
    reply = await api.call(
        "POST",
        "/api/v1/discount-policies",
        {"policyId": rid("D"), "kind": "FIXED", "value": 5, "validFrom": "2026-01-01T00:00:00"},
        token=admin(api),
    )
    assert reply.status == 422
    assert (await product(api, pid))["available"] == 5
