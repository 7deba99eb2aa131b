"""Every error becomes an RFC 9457 problem, here and nowhere else.

Each case has a stable ``type`` that clients can switch on; ``detail`` is for people.

Besides the domain's errors, requests can be refused at the HTTP edge, before any handler
runs::

    Refused
     ├── Unauthorized        401: no token, or a bad, expired or foreign one
     ├── Forbidden           403: a valid token that may not do this
     └── TooManyRequests     429: a rate limit; ``Retry-After`` says when to come back
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from flashorder.domain import errors
from flashorder.entrypoints.api.schemas import Problem

log = logging.getLogger("flashorder.api")

PROBLEM_BASE = "urn:flashorder:problem:"
MEDIA_TYPE = "application/problem+json"
#: Names the log line of a failure in the answer: a caller's own id is reused when it is sane.
REQUEST_ID = "X-Request-Id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")

#: (status, type, title) per domain error; the most specific class wins.
_CASES: list[tuple[type[errors.FlashOrderError], int, str, str]] = [
    (errors.SoldOut, 409, "sold-out", "Sold out"),
    (errors.LimitReached, 409, "limit-reached", "Per-user limit reached"),
    (errors.DuplicateInFlight, 409, "duplicate-in-flight", "Duplicate request in flight"),
    (errors.AlreadyExists, 409, "already-exists", "Already exists"),
    (errors.StockBelowCommitted, 409, "stock-below-committed", "Stock below what is sold"),
    (errors.NotFound, 404, "not-found", "Not found"),
    (errors.PriceMismatch, 422, "price-mismatch", "Price mismatch"),
    (errors.DiscountNotApplicable, 422, "discount-not-applicable", "Discount not applicable"),
    (errors.IdempotencyKeyReused, 422, "idempotency-key-reused", "Idempotency key reused"),
    (errors.UnknownReference, 422, "unknown-reference", "Unknown reference"),
    (errors.Invalid, 422, "invalid-request", "Invalid request"),
    (errors.Unavailable, 503, "unavailable", "Service unavailable"),
]

_HTTP_TYPES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    411: "length-required",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
}


def documented(description: str, **extra: Any) -> dict[str, Any]:
    """An OpenAPI response entry whose body is a problem."""
    schema = Problem.model_json_schema()
    return {"description": description, "content": {MEDIA_TYPE: {"schema": schema}}, **extra}


class Refused(Exception):
    """A request refused at the HTTP edge (authentication, authorization, admission)."""

    status = 400
    type_ = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def headers(self) -> dict[str, str] | None:
        return None


class Unauthorized(Refused):
    status, type_, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str, *, token_given: bool = True) -> None:
        super().__init__(detail)
        self.token_given = token_given

    def headers(self) -> dict[str, str]:
        # RFC 6750 §3: a 401 names the scheme; ``error`` only when a token came and failed.
        challenge = 'Bearer realm="flashorder"'
        if self.token_given:
            challenge += ', error="invalid_token"'
        return {"WWW-Authenticate": challenge}


class Forbidden(Refused):
    status, type_, title = 403, "forbidden", "Forbidden"


class TooManyRequests(Refused):
    status, type_, title = 429, "too-many-requests", "Too many requests"

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        # Whole seconds (RFC 9110), rounded up and at least 1: a client that comes back
        # sooner is refused again.
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


def problem(
    status: int,
    type_: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = {"type": PROBLEM_BASE + type_, "title": title, "status": status, "detail": detail}
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    return Response(orjson.dumps(body), status, headers=headers, media_type=MEDIA_TYPE)


def classify(exc: errors.FlashOrderError) -> tuple[int, str, str]:
    for cls, status, type_, title in _CASES:
        if isinstance(exc, cls):
            return status, type_, title
    return 500, "internal", "Internal error"


def _extra(exc: errors.FlashOrderError) -> dict[str, Any]:
    if isinstance(exc, errors.PriceMismatch):
        return {"field": exc.field, "expected": exc.expected, "given": exc.given}
    if isinstance(exc, errors.LimitReached):
        return {"productId": exc.product_id, "limit": exc.limit}
    if isinstance(exc, errors.SoldOut):
        return {"productId": exc.product_id}
    return {}


def common_responses() -> dict[int | str, dict[str, Any]]:
    """What any API route may answer besides its own cases, for the OpenAPI document.

    Declaring 422 here also replaces FastAPI's default, which documents a JSON body of a
    different shape than the problem these routes send."""
    return {
        413: documented("The body is over the size limit; nothing was read"),
        422: documented("The request does not match the schema, or contradicts itself"),
        503: documented("A dependency is down or slow; nothing was written"),
    }


def request_id(request: Request) -> str:
    """The caller's ``X-Request-Id`` when it is a sane token, else a fresh one."""
    given = request.headers.get(REQUEST_ID)
    if given is not None and _SANE_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.FlashOrderError)
    status, type_, title = classify(exc)
    if isinstance(exc, errors.Unavailable):
        return _unavailable(request, exc)
    return problem(
        status,
        type_,
        title,
        exc.detail,
        instance=request.url.path,
        **_extra(exc),
    )


def _unavailable(request: Request, exc: errors.Unavailable) -> Response:
    # A driver's message names hosts, ports, users and addresses: it goes to the log, under
    # an id that the answer names, and the client learns only which part is down.
    rid = request_id(request)
    log.warning(
        "api.unavailable",
        extra={
            "method": request.method,
            "path": request.url.path,
            "request_id": rid,
            "dependency": exc.dependency,
            "error": exc.detail,
        },
    )
    said = exc.detail if exc.public else f"{exc.dependency} is unavailable"
    return problem(
        503,
        "unavailable",
        "Service unavailable",
        f"{said}; retry shortly (reference {rid})",
        instance=request.url.path,
        headers={"Retry-After": "1", REQUEST_ID: rid},
        requestId=rid,
    )


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return problem(
        exc.status,
        exc.type_,
        exc.title,
        exc.detail,
        instance=request.url.path,
        headers=exc.headers(),
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    issues = [
        {
            "location": [str(part) for part in err.get("loc", ())],
            "message": str(err.get("msg", "")),
        }
        for err in exc.errors()
    ]
    return problem(
        422,
        "validation-error",
        "Validation error",
        "the request does not match the schema",
        instance=request.url.path,
        errors=issues,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        # FastAPI answers a JSON body that is not UTF-8 with a bare 400, while any other body
        # that is not JSON gets the 422 validation problem: one case, one answer.
        return problem(
            422,
            "validation-error",
            "Validation error",
            "the request does not match the schema",
            instance=request.url.path,
            errors=[{"location": ["body"], "message": "the body is not UTF-8 encoded JSON"}],
        )
    return problem(
        exc.status_code,
        _HTTP_TYPES.get(exc.status_code, "http-error"),
        str(exc.detail) if exc.status_code != 404 else "Not found",
        str(exc.detail),
        instance=request.url.path,
        headers=dict(exc.headers) if exc.headers else None,
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug, by definition: log it whole, tell the client nothing about internals.
    rid = request_id(request)
    log.exception(
        "api.unhandled_error",
        extra={"method": request.method, "path": request.url.path, "request_id": rid},
    )
    return problem(
        500,
        "internal",
        "Internal error",
        f"an unexpected error occurred (reference {rid})",
        headers={REQUEST_ID: rid},
        requestId=rid,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.FlashOrderError, _domain_error)
    app.add_exception_handler(Refused, _refused)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
