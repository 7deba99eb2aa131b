"""The API under test, two ways: the embedded app in-process, and a live server over HTTP.

Calls carry no token unless given one: ``api.token(user)`` (or ``admin=True``) mints it with
the secret the API under test checks.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import httpx2
import orjson
from fastapi import FastAPI
from multidict import CIMultiDict
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Receive, Scope, Send

from flashorder.adapters.sql.migrate import migrate
from flashorder.adapters.tracing.otel import OtelTracer
from flashorder.application.ports import StockGate
from flashorder.bootstrap import Service
from flashorder.config import Settings
from flashorder.entrypoints.api import create_app
from flashorder.entrypoints.tokens import mint_token


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]


class Api(Protocol):
    name: str
    engine: AsyncEngine
    gate: StockGate
    settings: Settings

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        token: str | None = None,
    ) -> Reply: ...

    def token(self, user: str, *, admin: bool = False) -> str: ...


def _decoded(raw: bytes, headers: Mapping[str, str]) -> Any:
    # JSON (and problem+json) as data; anything else (Swagger UI, metrics) as text.
    if not raw:
        return None
    if "json" in headers.get("content-type", ""):
        return orjson.loads(raw)
    return raw.decode(errors="replace")


def _prepared(
    json: Any, headers: Mapping[str, str] | None, content: bytes | None, token: str | None
) -> tuple[dict[str, str], bytes | None]:
    sent = dict(headers or {})
    if json is not None:
        content = jsonlib.dumps(json).encode()
        sent = {"content-type": "application/json", **sent}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return sent, content


class InProcessApi:
    """The embedded app behind an ASGI transport, its lifespan run by hand."""

    name = "embedded"

    def __init__(
        self, client: httpx2.AsyncClient, service: Service, app: FastAPI | None = None
    ) -> None:
        self.client = client
        self.service = service
        self.app = app
        self.engine = service.engine
        self.gate = service.deps.stock
        self.settings = service.settings

    def token(self, user: str, *, admin: bool = False) -> str:
        return mint_token(self.settings, user, admin=admin)

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        token: str | None = None,
    ) -> Reply:
        sent, content = _prepared(json, headers, content, token)
        response = await self.client.request(method, path, content=content, headers=sent)
        return Reply(
            response.status_code, _decoded(response.content, response.headers), response.headers
        )


class HttpApi:
    """A live server over real HTTP (aiohttp: it keeps up with hundreds of requests)."""

    name = "stack"

    def __init__(
        self, session: aiohttp.ClientSession, base: str, engine: AsyncEngine, gate: StockGate
    ) -> None:
        self.session = session
        self.base = base
        self.engine = engine
        self.gate = gate
        # The stack's processes inherit this environment, so they check this secret.
        self.settings = Settings()

    def token(self, user: str, *, admin: bool = False) -> str:
        return mint_token(self.settings, user, admin=admin)

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        token: str | None = None,
    ) -> Reply:
        sent, content = _prepared(json, headers, content, token)
        async with self.session.request(
            method, self.base + path, data=content, headers=sent
        ) as response:
            raw = await response.read()
            headers = CIMultiDict(response.headers)
            return Reply(response.status, _decoded(raw, headers), headers)


@asynccontextmanager
async def embedded(tmp_path: Path, **settings_: Any) -> AsyncIterator[InProcessApi]:
    """The embedded app with settings of a test's own (``rate_user_burst=2``, …)."""
    async with traced(tmp_path, None, **settings_) as api:
        yield api


@asynccontextmanager
async def traced(
    tmp_path: Path, tracer: OtelTracer | None, **settings_: Any
) -> AsyncIterator[InProcessApi]:
    """``embedded``, its requests traced by ``tracer``."""
    settings = Settings(
        database_url=None, redis_url=None, kafka_bootstrap=None, data_dir=tmp_path, **settings_
    )
    await asyncio.to_thread(tmp_path.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(migrate, settings.effective_database_url)
    app = create_app(settings, tracer=tracer)
    async with app.router.lifespan_context(app) as state:
        assert state is not None

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = dict(state)
            await app(scope, receive, send)

        transport = httpx2.ASGITransport(app=with_state)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
            yield InProcessApi(client, state["service"], app)
