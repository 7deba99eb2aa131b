"""Direct routes: well-formed requests skip FastAPI's dependency solving, and every request
is answered exactly as FastAPI alone answers it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fastapi.dependencies.utils
import fastapi.routing
import orjson
import pytest
from fastapi import APIRouter, Query

from flashorder.entrypoints.api import direct
from flashorder.entrypoints.api.deps import ServiceDep
from flashorder.entrypoints.api.direct import DirectRoute
from tests.support.api import InProcessApi, embedded
from tests.support.calls import mutations, new_product, order_body, rid

ECHO = "/api/v1/bench/echo-order"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[InProcessApi]:
    async with embedded(tmp_path, bench_endpoints=True) as api:
        yield api


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests that went through FastAPI's dependency solving."""
    paths: list[str] = []
    solve = fastapi.dependencies.utils.solve_dependencies

    async def counted(**kwargs: Any) -> Any:
        paths.append(kwargs["request"].url.path)
        return await solve(**kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    return paths


async def test_well_formed_orders_and_reads_skip_dependency_solving(
    api: InProcessApi, solved: list[str]
) -> None:
    pid = await new_product(api, stock=5)
    solved.clear()
    user = rid("u")
    placed = await api.call(
        "POST",
        "/api/v1/orders",
        order_body(user, (pid, 1, 10050)),
        headers={"Idempotency-Key": rid("k")},
        token=api.token(user),
    )
    assert placed.status == 201, placed.body
    read = await api.call("GET", f"/api/v1/orders/{placed.body['orderId']}", token=api.token(user))
    assert read.status in (200, 404)  # the read model may not have it yet: either is direct
    assert solved == []

    # Anything in doubt goes to FastAPI, and FastAPI answers it.
    refused = await api.call("POST", "/api/v1/orders", {"userId": user}, token=api.token(user))
    assert refused.status == 422
    assert solved == ["/api/v1/orders"]


async def test_the_front_serves_a_fixed_path_once_the_router_has_shown_where_it_goes(
    api: InProcessApi, solved: list[str]
) -> None:
    assert api.app is not None
    front = api.app.router.middleware_stack
    assert isinstance(front, direct.DirectFront)
    pid = await new_product(api, stock=5)
    user = rid("u")
    solved.clear()

    answers = [
        await api.call("POST", "/api/v1/orders", order_body(user, (pid, 1, 10050)), token=t)
        for t in (api.token(user), api.token(user), api.token(user))
    ]

    assert [a.status for a in answers] == [201, 201, 201]
    # The first went through the router, which showed the front the way; not the others.
    assert front.served == 2
    assert len({a.body["orderId"] for a in answers}) == 3
    # A request the fast path declines goes on to the router, its body replayed to FastAPI,
    # which answers it.
    refused = await api.call("POST", "/api/v1/orders", {"userId": user}, token=api.token(user))
    assert refused.status == 422
    assert refused.body["errors"], refused.body
    assert solved == ["/api/v1/orders"]
    assert front.served == 2
    # A path with parameters is routed each time.
    read = await api.call(
        "GET", f"/api/v1/orders/{answers[0].body['orderId']}", token=api.token(user)
    )
    assert read.status == 200
    assert front.served == 2


def _requests(api: InProcessApi) -> list[tuple[str, dict[str, Any]]]:
    """Requests to the echo route, good and bad, as ``(label, call keywords)``."""
    token = api.token("u1")
    good = order_body("u1", ("P1", 1, 10050))
    raw = orjson.dumps(good)
    json_type = {"content-type": "application/json"}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("good", {"json": good, "token": token}),
        ("good, keyed", {"json": good, "token": token, "headers": {"Idempotency-Key": "k-1"}}),
        (
            "good, charset",
            {
                "content": raw,
                "token": token,
                "headers": {"content-type": "application/json; charset=utf-8"},
            },
        ),
        (
            "good, +json",
            {
                "content": raw,
                "token": token,
                "headers": {"content-type": "application/problem+json"},
            },
        ),
        ("text/plain", {"content": raw, "token": token, "headers": {"content-type": "text/plain"}}),
        ("no content type", {"content": raw, "token": token, "headers": {"content-type": ""}}),
        ("no token", {"json": good}),
        ("not a bearer", {"json": good, "headers": {"Authorization": "Basic dTE6cA=="}}),
        ("a bad token", {"json": good, "token": "not.a.jwt"}),
        ("someone else's", {"json": good, "token": api.token("u2")}),
        ("bad key and token", {"json": good, "headers": {"Idempotency-Key": "with space"}}),
        ("bad body, no token", {"json": {"userId": "u1"}}),
        ("NaN", {"content": raw.replace(b"10050", b"NaN"), "token": token, "headers": json_type}),
        (
            "huge int",
            {"content": raw.replace(b"10050", b"9" * 40), "token": token, "headers": json_type},
        ),
        (
            "duplicate key",
            {"content": raw[:-1] + b',"userId":"u2"}', "token": token, "headers": json_type},
        ),
        ("not UTF-8", {"content": b'{"userId": "\xc3"}', "token": token, "headers": json_type}),
        ("empty", {"content": b"", "token": token, "headers": json_type}),
    ]
    for key in ["", "x" * 256, "with space", "tab\there"]:
        cases.append(
            (
                f"key {key[:10]!r}",
                {"json": good, "token": token, "headers": {"Idempotency-Key": key}},
            )
        )
    for label, body in mutations("P1"):
        cases.append((label, {"json": body, "token": token}))
    return cases


async def test_every_request_is_answered_as_fastapi_alone_answers_it(
    api: InProcessApi, monkeypatch: pytest.MonkeyPatch, solved: list[str]
) -> None:
    cases = _requests(api)
    fast = []
    direct_labels = []
    for label, kw in cases:
        before = len(solved)
        fast.append(await api.call("POST", ECHO, **kw))
        if len(solved) == before:
            direct_labels.append(label)
    # JSON objects are the fast path's (a token problem it raises as FastAPI would); a body
    # that is not plainly a JSON object is FastAPI's.
    assert {"good", "good, keyed", "good, charset", "good, +json", "a bad token"} <= set(
        direct_labels
    )
    assert not {"text/plain", "no content type", "NaN", "empty"} & set(direct_labels), {
        "NaN",
        "empty",
        "no content type",
        "text/plain",
    } & set(direct_labels)

    async def fall_through(self: object, request: object) -> object:
        return direct._FALL_THROUGH

    monkeypatch.setattr(direct._FastPath, "answer", fall_through)
    standard = [await api.call("POST", ECHO, **kw) for _, kw in cases]

    for (label, _), a, b in zip(cases, fast, standard, strict=True):
        assert (a.status, a.body) == (b.status, b.body), label
    statuses = {r.status for r in fast}
    assert {201, 401, 403, 422} <= statuses  # the cases reach every kind of answer
    assert all(r.status < 500 for r in fast)


async def test_product_reads_are_answered_as_fastapi_alone_answers_them(
    api: InProcessApi, monkeypatch: pytest.MonkeyPatch, solved: list[str]
) -> None:
    plain = await new_product(api, stock=5, max_per_user=2)
    named = await new_product(api, stock=0, price=1, name='한정판 "스니커즈" ✓')
    token = api.token("u1")
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("known", f"/api/v1/products/{plain}", {"token": token}),
        ("sold out, unicode name", f"/api/v1/products/{named}", {"token": token}),
        ("unknown", "/api/v1/products/NO_SUCH_PRODUCT", {"token": token}),
        ("bad id", "/api/v1/products/with%20space", {"token": token}),
        ("too long", "/api/v1/products/" + "x" * 100, {"token": token}),
        ("no token", f"/api/v1/products/{plain}", {}),
        ("bad token", f"/api/v1/products/{plain}", {"token": "not.a.jwt"}),
    ]
    solved.clear()
    fast = [await api.call("GET", path, **kw) for _, path, kw in cases]
    assert f"/api/v1/products/{plain}" not in solved, "a well-formed read is direct"

    async def fall_through(self: object, request: object) -> object:
        return direct._FALL_THROUGH

    monkeypatch.setattr(direct._FastPath, "answer", fall_through)
    standard = [await api.call("GET", path, **kw) for _, path, kw in cases]
    for (label, _, _), a, b in zip(cases, fast, standard, strict=True):
        # The server's clock differs between two answers by design; everything else may not.
        assert (a.status, _clockless(a.body)) == (b.status, _clockless(b.body)), label
        assert a.headers.get("content-type") == b.headers.get("content-type"), label
    assert [r.status for r in fast] == [200, 200, 404, 422, 422, 401, 401]
    assert fast[0].body["maxPerUser"] == 2
    assert fast[0].body["available"] == 5


def _clockless(body: Any) -> Any:
    if isinstance(body, dict) and "serverTime" in body:
        return {k: v for k, v in body.items() if k != "serverTime"}
    return body


def test_a_route_the_fast_path_cannot_serve_is_refused_when_built() -> None:
    router = APIRouter(route_class=DirectRoute)

    async def listed(service: ServiceDep, limit: int = Query(10)) -> None: ...

    with pytest.raises(TypeError, match="cannot take query"):
        router.add_api_route("/listed", listed)
