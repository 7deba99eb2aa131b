"""The live sale page, for the shop's admins.

- ``GET /sales``: the products on sale; ``GET /sales/{productId}``: one product's sale.
  The same URLs answer ``Accept: text/event-stream`` (what ``EventSource`` sends) with the
  page's stream of server-sent events: a ``history`` event, then a frame every second
  (``application/sale_watch.py``).
- ``GET /sales/login``, ``POST /sales/login``: a form that takes an admin bearer token and
  gives a session cookie (``sale_session.py``); ``POST /sales/logout`` ends it.

The pages and streams accept the session cookie or an admin bearer token (tools, tests).
A browser without either is sent to the login form; anything else gets a 401 problem.
The pages are static files with no inline script, served with a strict Content-Security-Policy.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from functools import cache
from importlib import resources
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPBearer
from starlette.responses import RedirectResponse, Response, StreamingResponse

from flashorder.application.sale_watch import SaleWatch
from flashorder.domain.model import ProductId
from flashorder.entrypoints.api.auth import Principal
from flashorder.entrypoints.api.problems import Forbidden, Unauthorized
from flashorder.entrypoints.api.sale_session import COOKIE, PATH, Sessions

router = APIRouter(prefix="/sales", include_in_schema=False)

_ASSETS = {"sale.js": "text/javascript", "sale.css": "text/css"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_PRODUCT_ID = re.compile(r"^[A-Za-z0-9_.:@\-]{1,64}$")
_bearer = HTTPBearer(auto_error=False)


@cache
def _asset(name: str) -> bytes:
    # Read at first use, not at import; the files ship inside the package.
    return resources.files(__package__).joinpath("sale_page", name).read_bytes()


def _wants_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


class _ToLogin(Exception):
    """A browser with no session: the answer is the login form, not a problem."""


async def _viewer(request: Request) -> Principal | None:
    """The admin behind a session cookie or bearer token; None for a browser with neither."""
    credentials = await _bearer(request)
    if credentials is not None:
        principal = await request.state.authenticator.principal(credentials.credentials)
        if not principal.admin:
            raise Forbidden("the sale page needs an admin token")
        assert isinstance(principal, Principal)
        return principal
    sessions: Sessions = request.state.sessions
    cookie = request.cookies.get(COOKIE)
    subject = sessions.subject(cookie) if cookie else None
    if subject is not None:
        return Principal(subject, admin=True)  # type: ignore[arg-type]
    if _wants_stream(request) or "text/html" not in request.headers.get("accept", ""):
        raise Unauthorized("the sale page needs an admin session or token", token_given=False)
    return None


AdminViewer = Annotated[Principal | None, Depends(_viewer)]


def _login_redirect(request: Request) -> Response:
    target = request.url.path
    return RedirectResponse(f"{PATH}/login?next={quote(target, safe='/')}", status_code=303)


def _page(name: str) -> Response:
    return Response(_asset(name), media_type="text/html", headers=_SECURITY_HEADERS)


def _stream(watch: SaleWatch, product_id: ProductId | None) -> Response:
    async def frames() -> AsyncIterator[bytes]:
        async with watch.watch(product_id) as viewer:
            # A reconnecting EventSource waits this long; the history refills its charts.
            yield b"retry: 2000\nevent: history\ndata: " + viewer.history() + b"\n\n"
            while (frame := await viewer.next()) is not None:
                yield b"data: " + frame + b"\n\n"

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        # No proxy may buffer the stream (nginx honours X-Accel-Buffering).
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("")
async def overview(request: Request, viewer: AdminViewer) -> Response:
    if viewer is None:
        return _login_redirect(request)
    if _wants_stream(request):
        return _stream(request.state.sale_watch, None)
    return _page("overview.html")


@router.get("/login")
async def login_form() -> Response:
    return _page("login.html")


@router.post("/login")
async def login(request: Request) -> Response:
    # A form post (application/x-www-form-urlencoded); the body limit bounds its size.
    form = parse_qs((await request.body()).decode(errors="replace"), max_num_fields=4)
    token = (form.get("token") or [""])[0].strip()
    target = (form.get("next") or [PATH])[0]
    # Only a page of this app: never an open redirect to another site.
    if not (target == PATH or target.startswith(PATH + "/")) or "//" in target:
        target = PATH
    try:
        principal = await request.state.authenticator.principal(token) if token else None
    except Unauthorized:
        principal = None
    if principal is None or not principal.admin:
        # Back to the form, which says why; the token itself is never echoed.
        reason = "not-admin" if principal is not None else "invalid"
        return RedirectResponse(
            f"{PATH}/login?error={reason}&next={quote(target, safe='/')}", status_code=303
        )
    sessions: Sessions = request.state.sessions
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        sessions.issue(principal.user_id),
        max_age=sessions.lifetime,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse(f"{PATH}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")
    return response


@router.get("/assets/{name}")
async def asset(name: str) -> Response:
    media_type = _ASSETS.get(name)
    if media_type is None:
        return Response(status_code=404)
    return Response(_asset(name), media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.get("/{product_id}")
async def sale(product_id: str, request: Request, viewer: AdminViewer) -> Response:
    if viewer is None:
        return _login_redirect(request)
    if not _PRODUCT_ID.match(product_id):
        return Response(status_code=404)
    if _wants_stream(request):
        return _stream(request.state.sale_watch, ProductId(product_id))
    return _page("sale.html")
