"""Who may do what: bearer tokens, ownership of orders, admin-only catalogue writes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest

from tests.support.api import Api, Reply
from tests.support.calls import admin, new_product, order_body, place, product, rid

PROBLEM = "urn:flashorder:problem:"
OTHER_SECRET = "not-the-secret-the-service-checks-with"


def forged(api: Api, *, key: str | None = None, alg: str = "HS256", **changes: Any) -> str:
    """A token like the service's own, with some claims changed (None drops a claim)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "mallory",
        "iss": api.settings.jwt_issuer,
        "aud": api.settings.jwt_audience,
        "iat": now,
        "exp": now + 600,
        "roles": ["admin"],
    }
    claims.update(changes)
    claims = {name: value for name, value in claims.items() if value is not None}
    secret = key if key is not None else api.settings.jwt_secret.get_secret_value()
    return jwt.encode(claims, secret if alg != "none" else "", algorithm=alg)


def assert_unauthorized(reply: Reply) -> None:
    assert reply.status == 401, reply.body
    assert reply.body["type"] == PROBLEM + "unauthorized"
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert reply.headers["content-type"].startswith("application/problem+json")


PROTECTED = [
    ("POST", "/api/v1/orders", {"userId": "u1"}),
    ("GET", "/api/v1/orders/some-order", None),
    ("GET", "/api/v1/orders?userId=u1", None),
    ("POST", "/api/v1/orders/some-order/cancel", None),
    ("POST", "/api/v1/products", {"productId": "P"}),
    ("GET", "/api/v1/products/P", None),
    ("POST", "/api/v1/products/P/stock", {"add": 1}),
    ("POST", "/api/v1/discount-policies", {"policyId": "D"}),
    ("GET", "/api/v1/discount-policies/D", None),
]


async def test_every_api_call_without_a_token_is_a_401_with_a_bearer_challenge(api: Api) -> None:
    for method, path, body in PROTECTED:
        reply = await api.call(method, path, body)
        assert_unauthorized(reply)
        assert "invalid_token" not in reply.headers["www-authenticate"]
    reply = await api.call("GET", "/api/v1/products/P", headers={"Authorization": "Basic dTpw"})
    assert_unauthorized(reply)


@pytest.mark.parametrize(
    ("label", "changes"),
    [
        ("bad signature", {"key": OTHER_SECRET}),
        ("expired", {"exp": int(time.time()) - 3600}),
        ("wrong audience", {"aud": "someone-else"}),
        ("wrong issuer", {"iss": "someone-else"}),
        ("no expiry", {"exp": None}),
        ("no subject", {"sub": None}),
        ("a subject that is no user id", {"sub": "robert'); DROP TABLE orders;--"}),
        ("unsigned", {"alg": "none"}),
    ],
)
async def test_a_token_that_fails_any_check_is_a_401(
    api: Api, label: str, changes: dict[str, Any]
) -> None:
    pid = await new_product(api, stock=5)
    reply = await api.call(
        "POST",
        "/api/v1/products",
        {"productId": rid("PRD"), "name": "x", "price": 1, "stock": 1},
        token=forged(api, **changes),
    )
    assert_unauthorized(reply)
    assert 'error="invalid_token"' in reply.headers["www-authenticate"], label
    reply = await api.call(
        "POST", f"/api/v1/products/{pid}/stock", {"add": 5}, token=forged(api, **changes)
    )
    assert_unauthorized(reply)
    assert (await product(api, pid))["stock"] == 5


async def test_a_token_that_is_no_jwt_is_a_401(api: Api) -> None:
    for garbage in ("x", "a.b.c", "e30.e30.", "Zm9v.YmFy.YmF6", "%%%"):
        reply = await api.call("GET", "/api/v1/products/P", token=garbage)
        assert_unauthorized(reply)


async def test_an_expired_token_says_so(api: Api) -> None:
    reply = await api.call(
        "GET", "/api/v1/products/P", token=forged(api, exp=int(time.time()) - 3600)
    )
    assert_unauthorized(reply)
    assert "expired" in reply.body["detail"]


async def test_an_order_for_another_user_is_forbidden_and_writes_nothing(api: Api) -> None:
    pid = await new_product(api, stock=5)
    body = order_body(rid("u"), (pid, 1, 10050))
    for token in (api.token(rid("u")), admin(api)):
        reply = await api.call("POST", "/api/v1/orders", body, token=token)
        assert reply.status == 403, reply.body
        assert reply.body["type"] == PROBLEM + "forbidden"
    assert (await product(api, pid))["available"] == 5


async def test_someone_elses_order_looks_absent_but_an_admin_sees_and_cancels_it(
    api: Api,
) -> None:
    pid = await new_product(api, stock=5)
    owner, other = rid("u"), rid("u")
    order_id = (await place(api, owner, (pid, 2, 10050))).body["orderId"]
    for method, path in [
        ("GET", f"/api/v1/orders/{order_id}"),
        ("POST", f"/api/v1/orders/{order_id}/cancel"),
    ]:
        reply = await api.call(method, path, token=api.token(other))
        assert reply.status == 404, reply.body
        assert reply.body["type"] == PROBLEM + "not-found"
    assert (await product(api, pid))["available"] == 3

    reply = await api.call("POST", f"/api/v1/orders/{order_id}/cancel", token=admin(api))
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "CANCELLED"
    assert (await product(api, pid))["available"] == 5
    reply = await poll_order(api, order_id, admin(api), "CANCELLED")
    assert reply.body["userId"] == owner


async def poll_order(api: Api, order_id: str, token: str, status: str) -> Reply:
    deadline = time.monotonic() + 30
    while True:
        reply = await api.call("GET", f"/api/v1/orders/{order_id}", token=token)
        if reply.status == 200 and reply.body["status"] == status:
            return reply
        assert time.monotonic() < deadline, reply.body
        await asyncio.sleep(0.05)


async def test_listing_another_users_orders_is_forbidden_except_to_an_admin(api: Api) -> None:
    owner = rid("u")
    reply = await api.call("GET", f"/api/v1/orders?userId={owner}", token=api.token(rid("u")))
    assert reply.status == 403, reply.body
    assert reply.body["type"] == PROBLEM + "forbidden"
    for token in (api.token(owner), admin(api)):
        reply = await api.call("GET", f"/api/v1/orders?userId={owner}", token=token)
        assert reply.status == 200, reply.body


async def test_catalogue_writes_need_an_admin_and_reads_any_user(api: Api) -> None:
    pid = await new_product(api, stock=5)
    policy = rid("DC")
    user = api.token(rid("u"))
    for path, body in [
        ("/api/v1/products", {"productId": rid("PRD"), "name": "x", "price": 1, "stock": 1}),
        (f"/api/v1/products/{pid}/stock", {"add": 5}),
        ("/api/v1/discount-policies", {"policyId": policy, "kind": "FIXED", "value": 5}),
    ]:
        reply = await api.call("POST", path, body, token=user)
        assert reply.status == 403, (path, reply.body)
        assert reply.body["type"] == PROBLEM + "forbidden"
    assert (await api.call("GET", f"/api/v1/discount-policies/{policy}", token=user)).status == 404
    assert (await product(api, pid))["stock"] == 5

    reply = await api.call(
        "POST",
        "/api/v1/discount-policies",
        {"policyId": policy, "kind": "FIXED", "value": 5},
        token=admin(api),
    )
    assert reply.status == 201, reply.body
    assert (await api.call("GET", f"/api/v1/discount-policies/{policy}", token=user)).status == 200
    assert (await api.call("GET", f"/api/v1/products/{pid}", token=user)).status == 200


async def test_operations_endpoints_and_the_docs_need_no_token(api: Api) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        reply = await api.call("GET", path)
        assert reply.status == 200, path


async def test_the_openapi_document_declares_the_bearer_scheme(api: Api) -> None:
    schema = (await api.call("GET", "/openapi.json")).body
    schemes = schema["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"}.items() <= next(iter(schemes.values())).items()
    for method in ("post", "get"):
        assert schema["paths"]["/api/v1/orders"][method]["security"]
    assert "security" not in schema["paths"]["/healthz"]["get"]


async def test_metrics_count_requests_by_route_template_never_by_raw_path(api: Api) -> None:
    user = api.token("metrics-reader")
    await api.call("GET", "/api/v1/orders/no-such-order-42", token=user)
    await api.call("GET", "/no/such/path/42")

    text = (await api.call("GET", "/metrics")).body

    assert isinstance(text, str)
    assert 'route="/api/v1/orders/{order_id}"' in text
    assert 'route="unmatched"' in text
    assert "no-such-order-42" not in text
    assert "/no/such/path" not in text
