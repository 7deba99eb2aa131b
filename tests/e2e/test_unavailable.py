"""A dependency that is down gets a 503 that says which part is down and names its log line,
and nothing of what the driver said (hosts, ports, users, addresses)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from starlette.types import Receive, Scope, Send

from flashorder.config import Settings
from flashorder.entrypoints.api import create_app
from flashorder.entrypoints.tokens import mint_token

#: A MariaDB that is not there, with a user and a host a client must never learn.
DOWN = "mysql+asyncmy://leaky_user:leaky_pass@127.0.0.1:1/leaky_db"
SECRETS = ("leaky_user", "leaky_pass", "leaky_db", "127.0.0.1", ":1", "2003", "MySQL", "Errno")


@pytest.fixture
async def down(tmp_path: Path) -> AsyncIterator[tuple[httpx2.AsyncClient, Settings]]:
    settings = Settings(
        database_url=DOWN,
        redis_url=None,
        kafka_bootstrap=None,
        data_dir=tmp_path,
        jwt_secret="a-secret-of-this-test-that-is-long-enough",
        payment_webhook_secret="a-webhook-secret-of-this-test",
        reconcile_every_seconds=0,
    )
    app = create_app(settings, background=False)
    async with app.router.lifespan_context(app) as state:
        assert state is not None

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = dict(state)
            await app(scope, receive, send)

        transport = httpx2.ASGITransport(app=with_state)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, settings


PRODUCT = {"productId": "PRD_1", "name": "x", "price": 1, "stock": 1}


@pytest.mark.parametrize(
    ("method", "path", "body", "admin"),
    [
        ("POST", "/api/v1/products", PRODUCT, True),
        ("GET", "/api/v1/products/PRD_1", None, False),
        ("GET", "/api/v1/orders/o1", None, False),
    ],
)
async def test_a_503_names_a_reference_and_nothing_the_driver_said(
    down: tuple[httpx2.AsyncClient, Settings],
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: object,
    admin: bool,
) -> None:
    client, settings = down
    token = mint_token(settings, "u1", admin=admin)
    with caplog.at_level(logging.WARNING, logger="flashorder.api"):
        reply = await client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token}"}
        )

    assert reply.status_code == 503, reply.text
    problem = reply.json()
    assert problem["type"] == "urn:flashorder:problem:unavailable"
    for secret in SECRETS:
        assert secret not in reply.text, (secret, problem)
    reference = reply.headers["X-Request-Id"]
    assert problem["requestId"] == reference
    assert reference in problem["detail"]
    assert problem["detail"].startswith("database is unavailable")
    # The log has what the answer leaves out, under the same reference.
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == reference]
    assert len(logged) == 1, caplog.records
    error = str(getattr(logged[0], "error", ""))
    assert "leaky_user" in error or "127.0.0.1" in error, error


async def test_the_callers_own_request_id_is_reused_when_it_is_sane(
    down: tuple[httpx2.AsyncClient, Settings],
) -> None:
    client, settings = down
    auth = {"Authorization": f"Bearer {mint_token(settings, 'u1')}"}

    mine = await client.get("/api/v1/products/P", headers={**auth, "X-Request-Id": "trace-42"})
    odd = await client.get("/api/v1/products/P", headers={**auth, "X-Request-Id": "<script>"})

    assert mine.headers["X-Request-Id"] == "trace-42"
    assert odd.status_code == 503
    assert odd.headers["X-Request-Id"] != "<script>"
    assert "<script>" not in odd.text
