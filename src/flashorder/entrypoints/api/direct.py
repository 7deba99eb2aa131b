"""Direct routes: the hot routes answer a well-formed request without FastAPI's dependency
solving, and leave every other request to FastAPI.

Solving an endpoint's dependencies is generic work done on every request: each
sub-dependency gets its own pass over the path, query, header and cookie parameters, a cache
key and a call. On the order route it was 17% of an API worker's CPU in the hot sale (py-spy;
half of it the token check itself). A ``DirectRoute`` is declared like any route (the same
signature, the same OpenAPI document) and adds a fast path in front of FastAPI's own handler:

- it reads the body once (Starlette keeps it on the request, so FastAPI finds it there if the
  request falls through), parses it with orjson when the content type is JSON, and validates
  it with the route's own body field;
- it validates the path and header parameters with FastAPI's own function for them;
- it resolves the route's dependencies through ``RESOLVERS``: the per-process service and the
  authenticated caller, each a plain call.

Any doubt (no JSON content type, a body orjson refuses, a parameter or the body that does not
validate) and the request goes to FastAPI's handler, which answers it exactly as it answers
any route: the fast path only ever serves requests that FastAPI would have served the same
way, so the problems (401, 422, …) stay FastAPI's and the project's. A dependency's own
error (an invalid token: 401) is raised as FastAPI would raise it, after the body is parsed
and before the parameters are validated.

A route whose signature needs anything else (a query parameter, a dependency not in
``RESOLVERS``) is refused when the app is built, not served slowly. The fast path knows only
the route's own signature: it steps aside while ``app.dependency_overrides`` is set, and the
routers that hold direct routes are included without ``dependencies=``.

``DirectFront`` (``install_front``) takes the hot routes one step further: it sits in front
of the router, inside the exception handlers, and answers a request for a direct route of a
fixed path (the order route, the echo) with the route's fast path, without routing it. Finding
the route and entering it (the router's matching, the included router's context, the route's
request and exit stacks) was a sixth of what the framework costs an order. The front does
not match paths itself: it learns them from the router. The first request of a method and
path goes through the router; when that lands on a direct route of a fixed path, the route
tells the front, which serves that method and path from then on, and sets what the router
would have set for it (``route``, ``endpoint``, ``path_params``, ``router``). A request the
fast path declines goes on to the router with its body replayed, and the route answers it
the standard way; an error raised meets the same exception handlers as before.
"""

from __future__ import annotations

import email.message
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import orjson
from fastapi._compat import ModelField
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_params_to_args
from fastapi.routing import APIRoute, APIRouter
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashorder.entrypoints.api.auth import authenticated, caller
from flashorder.entrypoints.api.deps import service_of

Resolver = Callable[[Request], Awaitable[Any]]
_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Awaitable[Response]])

#: The dependencies a direct route may declare, by the function FastAPI would call, with
#: what the fast path calls instead (with the request).
RESOLVERS: dict[Callable[..., Any], Resolver] = {service_of: service_of, authenticated: caller}

_FALL_THROUGH = object()

#: Scope keys: the front a request passed (for its route to report to), and a request the
#: front's fast path declined (its route goes straight to FastAPI's handler).
_FRONT = "flashorder.direct_front"
_DECLINED = "flashorder.direct_declined"


class DirectRoute(APIRoute):
    """An ``APIRoute`` with a fast path for well-formed requests (see the module)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        standard = super().get_route_handler()
        fast = _FastPath(self.dependant, self.endpoint, self.path)
        fixed_path = not self.param_convertors

        async def handler(request: Request) -> Response:
            scope = request.scope
            if scope.get(_DECLINED):
                return await standard(request)
            front = scope.get(_FRONT)
            if front is not None and fixed_path:
                front.learn(scope, fast)
            response = await fast.answer(request)
            if response is _FALL_THROUGH:
                return await standard(request)
            assert isinstance(response, Response)
            return response

        return handler


class DirectFront:
    """In front of the router: the direct routes of fixed paths, served without routing (see
    the module). ``served`` counts the requests it answered itself."""

    def __init__(self, app: ASGIApp, router: object) -> None:
        self.app = app
        self._router = router
        self._known: dict[tuple[str, str], tuple[_FastPath, object, object]] = {}
        self.served = 0

    def learn(self, scope: Scope, fast: _FastPath) -> None:
        """The router brought this request to a direct route of a fixed path."""
        if not scope.get("root_path"):
            self._known[scope["method"], scope["path"]] = (fast, scope["route"], scope["endpoint"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        known = (
            None if scope.get("root_path") else self._known.get((scope["method"], scope["path"]))
        )
        if known is None:
            scope[_FRONT] = self
            await self.app(scope, receive, send)
            return
        fast, route, endpoint = known
        scope["router"] = self._router
        scope["route"] = route
        scope["endpoint"] = endpoint
        scope["path_params"] = {}
        request = Request(scope, receive, send)
        response = await fast.answer(request)
        if response is _FALL_THROUGH:
            scope[_DECLINED] = True
            await self.app(scope, _replayed(request, receive), send)
            return
        assert isinstance(response, Response)
        self.served += 1
        await response(scope, receive, send)


def install_front(router: Any) -> DirectFront:
    """Put a ``DirectFront`` in front of ``router`` (an app's ``router``): called once the
    app's routes are in place. Returns it."""
    front = DirectFront(router.middleware_stack, router)
    router.middleware_stack = front
    return front


def _replayed(request: Request, receive: Receive) -> Receive:
    """``receive`` for a request whose body the fast path may have read already: that body
    first, then whatever the connection says next (a disconnect)."""
    body: bytes | None = getattr(request, "_body", None)
    if body is None:
        return receive
    replay: Message | None = {"type": "http.request", "body": body, "more_body": False}

    async def replaying() -> Message:
        nonlocal replay
        if replay is not None:
            message, replay = replay, None
            return message
        return await receive()

    return replaying


class _FastPath:
    def __init__(self, dependant: Dependant, endpoint: Callable[..., Any], path: str) -> None:
        unsupported = [
            kind
            for kind, params in (
                ("query", dependant.query_params),
                ("cookie", dependant.cookie_params),
            )
            if params
        ]
        if len(dependant.body_params) > 1:
            unsupported.append("more than one body parameter")
        self._resolvers: list[tuple[str, Resolver]] = []
        for sub in dependant.dependencies:
            resolver = RESOLVERS.get(sub.call) if sub.call is not None else None
            if resolver is None or sub.name is None:
                unsupported.append(f"the dependency {sub.call!r}")
            else:
                self._resolvers.append((sub.name, resolver))
        if unsupported:
            raise TypeError(f"{path}: a direct route cannot take {', '.join(unsupported)}")
        self._endpoint = endpoint
        self._request_name = dependant.request_param_name
        self._body = dependant.body_params[0] if dependant.body_params else None
        self._path_params = dependant.path_params
        self._header_params = dependant.header_params
        self._header_names, self._header_defaults = _header_shortcut(dependant.header_params)

    async def answer(self, request: Request) -> object:
        if request.app.dependency_overrides:
            return _FALL_THROUGH
        values: dict[str, Any] = {}
        body: Any = None
        if self._body is not None:
            body = await _json_body(request)
            if body is _FALL_THROUGH:
                return _FALL_THROUGH
        for name, resolve in self._resolvers:
            values[name] = await resolve(request)
        if self._path_params:
            params, problems = request_params_to_args(self._path_params, request.path_params)
            if problems:
                return _FALL_THROUGH
            values.update(params)
        if self._header_defaults is not None and not any(
            name in self._header_names for name, _ in request.scope["headers"]
        ):
            # None of the route's optional headers came: their defaults, no validation.
            values.update(self._header_defaults)
        elif self._header_params:
            params, problems = request_params_to_args(self._header_params, request.headers)
            if problems:
                return _FALL_THROUGH
            values.update(params)
        if self._body is not None:
            model, problems = self._body.validate(body, loc=("body",))
            if problems:
                return _FALL_THROUGH
            values[self._body.name] = model
        if self._request_name is not None:
            values[self._request_name] = request
        response = await self._endpoint(**values)
        if not isinstance(response, Response):
            raise TypeError(f"a direct route's endpoint returns a Response, not {response!r}")
        return response


def _header_shortcut(fields: list[ModelField]) -> tuple[frozenset[bytes], dict[str, Any] | None]:
    """The names a route's header parameters can arrive under (lower case, as ASGI gives
    them), and their values when none of them is sent: None if one is required. Validating
    absent optional headers was a tenth of the fast path's work on the order route."""
    names = frozenset(
        name.lower().encode("latin-1")
        for field in fields
        for name in (field.alias, field.name, field.name.replace("_", "-"))
    )
    values, problems = request_params_to_args(fields, Headers())
    return names, (None if problems or not fields else values)


async def _json_body(request: Request) -> Any:
    """The body as a JSON object, or ``_FALL_THROUGH`` for anything FastAPI should judge."""
    content_type = request.headers.get("content-type")
    if content_type is None or not _is_json(content_type):
        return _FALL_THROUGH
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _FALL_THROUGH
    # An object, or the body field reports what is wrong: FastAPI words that.
    return body if isinstance(body, dict) else _FALL_THROUGH


def _is_json(content_type: str) -> bool:
    if content_type == "application/json":
        return True
    # As FastAPI decides it: application/json or application/<anything>+json, parameters
    # such as a charset allowed.
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def direct_route(
    router: APIRouter, method: str, path: str, **options: Any
) -> Callable[[_Endpoint], _Endpoint]:
    """``@router.<method>(path, **options)``, served by a ``DirectRoute``."""

    def register(endpoint: _Endpoint) -> _Endpoint:
        router.add_api_route(
            path, endpoint, methods=[method], route_class_override=DirectRoute, **options
        )
        return endpoint

    return register
