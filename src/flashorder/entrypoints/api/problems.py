"""Every error becomes an RFC 9457 problem, here and nowhere else.

Each case has a stable ``type`` that clients can switch on (``ProblemType``: the closed set of
this version of the API; a new case is a new member, announced in the changelog); ``detail``
is for people. Some types carry extension members (``productId``, ``limit``; ``field``,
``expected``, ``given``; ``errors``; ``requestId`` on a 500 or 503, also in the
``X-Request-Id`` header, naming the log line that holds the details), all declared in the
``Problem`` schema (``openapi``).

Besides the domain's errors, requests can be refused at the HTTP edge, before any handler
runs::

    Refused
     ├── Unauthorized        401: no token, or a bad, expired or foreign one
     ├── Forbidden           403: a valid token that may not do this
     ├── BadSignature        401: a webhook whose signature or timestamp does not hold
     └── TooManyRequests     429: a rate limit; ``Retry-After`` says when to come back
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from enum import StrEnum
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from flashorder.domain import errors

log = logging.getLogger("flashorder.api")

PROBLEM_BASE = "urn:flashorder:problem:"
MEDIA_TYPE = "application/problem+json"
#: Where a request's problem type is left in its ASGI scope, for the metrics middleware: the
#: requests are counted by outcome (``ok`` or the problem type), not only by status.
OUTCOME_KEY = "flashorder.outcome"
#: Where every error response of the OpenAPI document points.
PROBLEM_REF = "#/components/schemas/Problem"
#: Names the log line of a failure in the answer: a caller's own id is reused when it is sane.
REQUEST_ID = "X-Request-Id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


class ProblemType(StrEnum):
    """The ``type`` of every problem the service answers, as sent on the wire."""

    BAD_REQUEST = PROBLEM_BASE + "bad-request"
    UNAUTHORIZED = PROBLEM_BASE + "unauthorized"
    FORBIDDEN = PROBLEM_BASE + "forbidden"
    NOT_FOUND = PROBLEM_BASE + "not-found"
    METHOD_NOT_ALLOWED = PROBLEM_BASE + "method-not-allowed"
    ALREADY_EXISTS = PROBLEM_BASE + "already-exists"
    SOLD_OUT = PROBLEM_BASE + "sold-out"
    LIMIT_REACHED = PROBLEM_BASE + "limit-reached"
    DUPLICATE_IN_FLIGHT = PROBLEM_BASE + "duplicate-in-flight"
    STOCK_BELOW_COMMITTED = PROBLEM_BASE + "stock-below-committed"
    SALE_NOT_STARTED = PROBLEM_BASE + "sale-not-started"
    SALE_ENDED = PROBLEM_BASE + "sale-ended"
    ORDER_STATE_CONFLICT = PROBLEM_BASE + "order-state-conflict"
    QUEUE_NOT_OPEN = PROBLEM_BASE + "queue-not-open"
    QUEUE_ADMISSION_REQUIRED = PROBLEM_BASE + "queue-admission-required"
    ADMISSION_TOKEN_INVALID = PROBLEM_BASE + "admission-token-invalid"
    ADMISSION_TOKEN_EXPIRED = PROBLEM_BASE + "admission-token-expired"
    BAD_SIGNATURE = PROBLEM_BASE + "bad-signature"
    PAYMENT_AMOUNT_MISMATCH = PROBLEM_BASE + "payment-amount-mismatch"
    PAYMENT_EVENT_REUSED = PROBLEM_BASE + "payment-event-reused"
    LENGTH_REQUIRED = PROBLEM_BASE + "length-required"
    PAYLOAD_TOO_LARGE = PROBLEM_BASE + "payload-too-large"
    UNSUPPORTED_MEDIA_TYPE = PROBLEM_BASE + "unsupported-media-type"
    REQUEST_HEADER_FIELDS_TOO_LARGE = PROBLEM_BASE + "request-header-fields-too-large"
    VALIDATION_ERROR = PROBLEM_BASE + "validation-error"
    INVALID_REQUEST = PROBLEM_BASE + "invalid-request"
    PRICE_MISMATCH = PROBLEM_BASE + "price-mismatch"
    DISCOUNT_NOT_APPLICABLE = PROBLEM_BASE + "discount-not-applicable"
    IDEMPOTENCY_KEY_REUSED = PROBLEM_BASE + "idempotency-key-reused"
    UNKNOWN_REFERENCE = PROBLEM_BASE + "unknown-reference"
    TOO_MANY_REQUESTS = PROBLEM_BASE + "too-many-requests"
    INTERNAL = PROBLEM_BASE + "internal"
    UNAVAILABLE = PROBLEM_BASE + "unavailable"
    #: Any other refusal of the HTTP layer; its status says what it is.
    HTTP_ERROR = PROBLEM_BASE + "http-error"

    @property
    def case(self) -> str:
        """The last segment: ``sold-out``."""
        return self.value.removeprefix(PROBLEM_BASE)


#: The status and title of each type (HTTP_ERROR takes the status it is given).
CASES: dict[ProblemType, tuple[int, str]] = {
    ProblemType.BAD_REQUEST: (400, "Bad request"),
    ProblemType.UNAUTHORIZED: (401, "Unauthorized"),
    ProblemType.FORBIDDEN: (403, "Forbidden"),
    ProblemType.NOT_FOUND: (404, "Not found"),
    ProblemType.METHOD_NOT_ALLOWED: (405, "Method not allowed"),
    ProblemType.ALREADY_EXISTS: (409, "Already exists"),
    ProblemType.SOLD_OUT: (409, "Sold out"),
    ProblemType.LIMIT_REACHED: (409, "Per-user limit reached"),
    ProblemType.DUPLICATE_IN_FLIGHT: (409, "Duplicate request in flight"),
    ProblemType.STOCK_BELOW_COMMITTED: (409, "Stock below what is sold"),
    ProblemType.SALE_NOT_STARTED: (409, "The sale has not started"),
    ProblemType.SALE_ENDED: (409, "The sale has ended"),
    ProblemType.ORDER_STATE_CONFLICT: (409, "Not possible in the order's state"),
    ProblemType.QUEUE_NOT_OPEN: (409, "The queue is not open yet"),
    ProblemType.QUEUE_ADMISSION_REQUIRED: (409, "Admission through the queue required"),
    ProblemType.ADMISSION_TOKEN_INVALID: (403, "Admission token not valid"),
    ProblemType.ADMISSION_TOKEN_EXPIRED: (409, "Admission token expired"),
    ProblemType.BAD_SIGNATURE: (401, "Bad signature"),
    ProblemType.PAYMENT_AMOUNT_MISMATCH: (422, "Payment amount mismatch"),
    ProblemType.PAYMENT_EVENT_REUSED: (422, "Payment event id reused"),
    ProblemType.LENGTH_REQUIRED: (411, "Length required"),
    ProblemType.PAYLOAD_TOO_LARGE: (413, "Payload too large"),
    ProblemType.UNSUPPORTED_MEDIA_TYPE: (415, "Unsupported media type"),
    ProblemType.REQUEST_HEADER_FIELDS_TOO_LARGE: (431, "Request header fields too large"),
    ProblemType.VALIDATION_ERROR: (422, "Validation error"),
    ProblemType.INVALID_REQUEST: (422, "Invalid request"),
    ProblemType.PRICE_MISMATCH: (422, "Price mismatch"),
    ProblemType.DISCOUNT_NOT_APPLICABLE: (422, "Discount not applicable"),
    ProblemType.IDEMPOTENCY_KEY_REUSED: (422, "Idempotency key reused"),
    ProblemType.UNKNOWN_REFERENCE: (422, "Unknown reference"),
    ProblemType.TOO_MANY_REQUESTS: (429, "Too many requests"),
    ProblemType.INTERNAL: (500, "Internal error"),
    ProblemType.UNAVAILABLE: (503, "Service unavailable"),
    ProblemType.HTTP_ERROR: (400, "HTTP error"),
}

#: The type of each domain error; the most specific class wins.
_DOMAIN: list[tuple[type[errors.FlashOrderError], ProblemType]] = [
    (errors.SoldOut, ProblemType.SOLD_OUT),
    (errors.LimitReached, ProblemType.LIMIT_REACHED),
    (errors.DuplicateInFlight, ProblemType.DUPLICATE_IN_FLIGHT),
    (errors.AlreadyExists, ProblemType.ALREADY_EXISTS),
    (errors.StockBelowCommitted, ProblemType.STOCK_BELOW_COMMITTED),
    (errors.SaleNotStarted, ProblemType.SALE_NOT_STARTED),
    (errors.SaleEnded, ProblemType.SALE_ENDED),
    (errors.OrderStateConflict, ProblemType.ORDER_STATE_CONFLICT),
    (errors.QueueNotOpen, ProblemType.QUEUE_NOT_OPEN),
    (errors.AdmissionRequired, ProblemType.QUEUE_ADMISSION_REQUIRED),
    (errors.AdmissionTokenInvalid, ProblemType.ADMISSION_TOKEN_INVALID),
    (errors.AdmissionTokenExpired, ProblemType.ADMISSION_TOKEN_EXPIRED),
    (errors.NotFound, ProblemType.NOT_FOUND),
    (errors.PriceMismatch, ProblemType.PRICE_MISMATCH),
    (errors.PaymentAmountMismatch, ProblemType.PAYMENT_AMOUNT_MISMATCH),
    (errors.PaymentEventReused, ProblemType.PAYMENT_EVENT_REUSED),
    (errors.DiscountNotApplicable, ProblemType.DISCOUNT_NOT_APPLICABLE),
    (errors.IdempotencyKeyReused, ProblemType.IDEMPOTENCY_KEY_REUSED),
    (errors.UnknownReference, ProblemType.UNKNOWN_REFERENCE),
    (errors.Invalid, ProblemType.INVALID_REQUEST),
    (errors.Unavailable, ProblemType.UNAVAILABLE),
]

#: The type of a refusal by the HTTP layer itself (Starlette's HTTPException), by status.
_HTTP_TYPES = {
    CASES[t][0]: t
    for t in (
        ProblemType.BAD_REQUEST,
        ProblemType.UNAUTHORIZED,
        ProblemType.FORBIDDEN,
        ProblemType.NOT_FOUND,
        ProblemType.METHOD_NOT_ALLOWED,
        ProblemType.LENGTH_REQUIRED,
        ProblemType.PAYLOAD_TOO_LARGE,
        ProblemType.UNSUPPORTED_MEDIA_TYPE,
        ProblemType.TOO_MANY_REQUESTS,
    )
}


#: The types that a response of this status may carry on any API route, besides its own.
_ALWAYS: dict[int, tuple[ProblemType, ...]] = {
    413: (ProblemType.PAYLOAD_TOO_LARGE,),
    422: (ProblemType.VALIDATION_ERROR,),
    503: (ProblemType.UNAVAILABLE,),
}


def documented(description: str, *types: ProblemType, **extra: Any) -> dict[str, Any]:
    """An OpenAPI response entry: a ``Problem`` whose ``type`` is one of ``types`` (all of
    one status), or of the types any route may answer with that status."""
    statuses = {CASES[t][0] for t in types}
    assert len(statuses) == 1, f"one response, one status: {types}"
    (status,) = statuses
    listed = [*_ALWAYS.get(status, ()), *(t for t in types if t not in _ALWAYS.get(status, ()))]
    return {
        "description": description,
        "content": {MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
        # Read by ``openapi``, which lists the types and gives an example of each.
        "x-problem-types": [t.value for t in listed],
        **extra,
    }


class Refused(Exception):
    """A request refused at the HTTP edge (authentication, authorization, admission)."""

    type_ = ProblemType.BAD_REQUEST

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def headers(self) -> dict[str, str] | None:
        return None


class Unauthorized(Refused):
    type_ = ProblemType.UNAUTHORIZED

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
    type_ = ProblemType.FORBIDDEN


class BadSignature(Refused):
    type_ = ProblemType.BAD_SIGNATURE


class TooManyRequests(Refused):
    type_ = ProblemType.TOO_MANY_REQUESTS

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        # Whole seconds (RFC 9110), rounded up and at least 1: a client that comes back
        # sooner is refused again.
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


def problem_body(
    type_: ProblemType, detail: str, *, status: int | None = None, title: str | None = None
) -> dict[str, Any]:
    """The members every problem has; ``status`` and ``title`` default to the type's."""
    case_status, case_title = CASES[type_]
    return {
        "type": type_.value,
        "title": title or case_title,
        "status": status or case_status,
        "detail": detail,
    }


def problem(
    type_: ProblemType,
    detail: str,
    *,
    status: int | None = None,
    title: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    request: Request | None = None,
    **extra: Any,
) -> Response:
    if request is not None:
        request.scope[OUTCOME_KEY] = type_.case
    body = problem_body(type_, detail, status=status, title=title)
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    return Response(orjson.dumps(body), body["status"], headers=headers, media_type=MEDIA_TYPE)


def classify(exc: errors.FlashOrderError) -> ProblemType:
    for cls, type_ in _DOMAIN:
        if isinstance(exc, cls):
            return type_
    return ProblemType.INTERNAL


def _extra(exc: errors.FlashOrderError) -> dict[str, Any]:
    # Every member here is declared in the Problem schema (``openapi``).
    if isinstance(exc, errors.PriceMismatch):
        return {"field": exc.field, "expected": exc.expected, "given": exc.given}
    if isinstance(exc, errors.LimitReached):
        return {"productId": exc.product_id, "limit": exc.limit}
    if isinstance(exc, errors.SoldOut | errors.SaleEnded | errors.AdmissionRefused):
        return {"productId": exc.product_id}
    if isinstance(exc, errors.QueueNotOpen):
        return {"productId": exc.product_id, "queueOpensAt": exc.opens_at.isoformat()}
    if isinstance(exc, errors.SaleNotStarted):
        return {"productId": exc.product_id, "saleStartsAt": exc.starts_at.isoformat()}
    if isinstance(exc, errors.PaymentAmountMismatch):
        return {"expected": exc.expected, "given": exc.given}
    return {}


def _headers(exc: errors.FlashOrderError, type_: ProblemType) -> dict[str, str] | None:
    if isinstance(exc, errors.SaleNotStarted):
        # Whole seconds until the start, rounded up: a client that waits this long and
        # comes back finds the sale open (RFC 9110 §10.2.3).
        return {"Retry-After": str(max(1, math.ceil(exc.seconds_left)))}
    if isinstance(exc, errors.QueueNotOpen):
        return {"Retry-After": str(max(1, math.ceil(exc.seconds_left)))}
    return None


def common_responses() -> dict[int | str, dict[str, Any]]:
    """What any API route may answer besides its own cases, for the OpenAPI document.

    Declaring 422 here also replaces FastAPI's default, which documents a JSON body of a
    different shape than the problem these routes send."""
    return {
        413: documented(
            "The body is over the size limit; nothing was read", ProblemType.PAYLOAD_TOO_LARGE
        ),
        422: documented("The request does not match the schema", ProblemType.VALIDATION_ERROR),
        431: documented(
            "The headers are over the size limit; none was read",
            ProblemType.REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
        503: documented(
            "A dependency is down or slow; nothing was written",
            ProblemType.UNAVAILABLE,
            headers={
                "Retry-After": {"schema": {"type": "integer", "minimum": 1}},
                REQUEST_ID: {
                    "description": "The reference of the log line that holds the details "
                    "(the caller's own when it sent a sane one)",
                    "schema": {"type": "string"},
                },
            },
        ),
    }


def request_id(request: Request) -> str:
    """The caller's ``X-Request-Id`` when it is a sane token, else a fresh one."""
    given = request.headers.get(REQUEST_ID)
    if given is not None and _SANE_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.FlashOrderError)
    if isinstance(exc, errors.Unavailable):
        return _unavailable(request, exc)
    type_ = classify(exc)
    return problem(
        type_,
        exc.detail,
        instance=request.url.path,
        headers=_headers(exc, type_),
        request=request,
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
        ProblemType.UNAVAILABLE,
        f"{said}; retry shortly (reference {rid})",
        instance=request.url.path,
        headers={"Retry-After": "1", REQUEST_ID: rid},
        request=request,
        requestId=rid,
    )


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return problem(
        exc.type_,
        exc.detail,
        instance=request.url.path,
        headers=exc.headers(),
        request=request,
    )


def _validation_problem(request: Request, issues: list[dict[str, Any]]) -> Response:
    return problem(
        ProblemType.VALIDATION_ERROR,
        "the request does not match the schema",
        instance=request.url.path,
        request=request,
        errors=issues,
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
    return _validation_problem(request, issues)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        # FastAPI answers a JSON body that is not UTF-8 with a bare 400, while any other body
        # that is not JSON gets the 422 validation problem: one case, one answer.
        issue = {"location": ["body"], "message": "the body is not UTF-8 encoded JSON"}
        return _validation_problem(request, [issue])
    type_ = _HTTP_TYPES.get(exc.status_code, ProblemType.HTTP_ERROR)
    return problem(
        type_,
        str(exc.detail),
        status=exc.status_code,
        title=str(exc.detail) if type_ is ProblemType.HTTP_ERROR else None,
        instance=request.url.path,
        headers=dict(exc.headers) if exc.headers else None,
        request=request,
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug, by definition: log it whole, tell the client nothing about internals.
    rid = request_id(request)
    log.exception(
        "api.unhandled_error",
        extra={"method": request.method, "path": request.url.path, "request_id": rid},
    )
    return problem(
        ProblemType.INTERNAL,
        f"an unexpected error occurred (reference {rid})",
        headers={REQUEST_ID: rid},
        request=request,
        requestId=rid,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.FlashOrderError, _domain_error)
    app.add_exception_handler(Refused, _refused)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
