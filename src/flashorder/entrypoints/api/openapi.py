"""The OpenAPI description, as generated clients and consuming teams need it.

FastAPI writes the paths and the wire models; this module adds what it cannot know:

- one ``Problem`` component (RFC 9457) that every error response refers to, with the closed
  set of problem types (``ProblemType``) and their extension members; each error response
  lists its own types (``x-problem-types``) with an example of each;
- the limits of the deployment (items per order, units per item, body size), read from the
  same settings that the routes enforce;
- a relative ``servers`` entry, so that "Try it out" and generated clients call the service
  that served the description.

Operation ids are the camelCase of the endpoint's function name (``place_order`` →
``placeOrder``): a new route gets a short, stable id by being named well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic.alias_generators import to_camel

from flashorder.config import Settings
from flashorder.domain import errors
from flashorder.entrypoints.api.problems import CASES, MEDIA_TYPE, ProblemType, problem_body

DESCRIPTION = """\
A flash-sale order service: it takes every order it can, never oversells, never charges a
retry twice and never loses an order event.

Errors are RFC 9457 problems (`application/problem+json`, the `Problem` schema). Switch on
`type`: each error response lists the types it may carry (`x-problem-types`), with an example
of each. `title` and `detail` are for people and may change.

Every `/api/v1` call needs a bearer JWT (`Authorize` above). For development,
`flashorder token --user U [--admin]` mints one with the configured secret.

Compatibility: a new member in a response, a new optional member in a request, a new
operation and a new problem type are not breaking changes; a client must ignore response
members it does not know and treat an unknown problem `type` by its `status`. Anything else
(renaming, removing, retyping, a stricter request) is, and comes with a new path version.
Every change a client can notice is in the changelog.
"""

_SCHEMAS = "#/components/schemas/"


def operation_id(route: APIRoute) -> str:
    """``place_order`` → ``placeOrder``."""
    return to_camel(route.name)


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the description below at ``app.openapi_url``, built once per app."""
    built: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not built:
            built.update(describe(app, settings))
        return built

    app.openapi = openapi  # type: ignore[method-assign]


def describe(app: FastAPI, settings: Settings) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=DESCRIPTION,
        routes=app.routes,
        tags=[
            {"name": "orders", "description": "Place, read, list and cancel orders"},
            {"name": "catalogue", "description": "Products, stock and discount policies"},
            {
                "name": "queue",
                "description": "The waiting room of a queued sale: join, where am I, follow",
            },
            {"name": "operations", "description": "Liveness and readiness"},
        ],
        servers=[{"url": "/", "description": "The service that serves this description"}],
        separate_input_output_schemas=app.separate_input_output_schemas,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(problem_schemas())
    for operation in _operations(document):
        for response in operation.get("responses", {}).values():
            if "x-problem-types" in response:
                _describe_problems(response)
    _apply_limits(document, settings)
    return document


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [op for path in document.get("paths", {}).values() for op in path.values()]


# --- problems --------------------------------------------------------------------------------


def problem_schemas() -> dict[str, Any]:
    """The ``Problem`` component and the two it refers to."""
    members = list(ProblemType)
    return {
        "ProblemType": {
            "title": "ProblemType",
            "description": "Every problem type of this version of the API. New types may be "
            "added (see the changelog): treat one you do not know by its `status`.",
            "type": "string",
            "enum": [t.value for t in members],
            "x-enum-varnames": [t.name for t in members],
        },
        "ProblemIssue": {
            "title": "ProblemIssue",
            "description": "One way in which the request does not match the schema.",
            "type": "object",
            "required": ["location", "message"],
            "properties": {
                "location": {
                    "description": 'Where: ["body", "items", "0", "quantity"], '
                    '["header", "Idempotency-Key"], …',
                    "type": "array",
                    "items": {"type": "string"},
                },
                "message": {"description": "What is wrong, for people", "type": "string"},
            },
        },
        "Problem": {
            "title": "Problem",
            "description": "RFC 9457 problem details, with the extension members that some "
            "types carry (each says which).",
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"$ref": _SCHEMAS + "ProblemType"},
                "title": {"description": "A short summary of the type", "type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"description": "This occurrence, for people", "type": "string"},
                "instance": {"description": "The path of the request", "type": "string"},
                "productId": {
                    "description": "`sold-out`, `limit-reached`, `sale-not-started`, "
                    "`sale-ended`, `queue-not-open`, `queue-admission-required`, "
                    "`admission-token-invalid`, `admission-token-expired`: the product "
                    "concerned",
                    "type": "string",
                },
                "limit": {
                    "description": "`limit-reached`: the units of the product one buyer may hold",
                    "type": "integer",
                },
                "saleStartsAt": {
                    "description": "`sale-not-started`: when the sale starts (also in "
                    "`Retry-After`, as seconds from now)",
                    "type": "string",
                    "format": "date-time",
                },
                "queueOpensAt": {
                    "description": "`queue-not-open`: when the sale's queue opens (also in "
                    "`Retry-After`, as seconds from now)",
                    "type": "string",
                    "format": "date-time",
                },
                "field": {
                    "description": "`price-mismatch`: the request member whose figure the "
                    "server does not accept (`productPrice`, `discountAmount`, "
                    "`deliveryFee`, `paymentAmount`)",
                    "type": "string",
                },
                "expected": {
                    "description": "`price-mismatch`: the server's figure; "
                    "`payment-amount-mismatch`: what the order costs",
                    "type": "integer",
                },
                "given": {
                    "description": "`price-mismatch`: the request's figure; "
                    "`payment-amount-mismatch`: the payment's amount",
                    "type": "integer",
                },
                "errors": {
                    "description": "`validation-error`: every mismatch found",
                    "type": "array",
                    "items": {"$ref": _SCHEMAS + "ProblemIssue"},
                },
                "requestId": {
                    "description": "`unavailable`, `internal`: the reference of the log line "
                    "that holds the details, also sent as the `X-Request-Id` header (a sane "
                    "`X-Request-Id` of the caller's is reused)",
                    "type": "string",
                },
            },
        },
    }


_PRODUCT = "PRD_240701120000001_0001_101"
_REQUEST = "5f0c3e2a9b7d4e1f8a6b2c4d0e9f7a13"

#: Examples of the members a type carries besides the common ones, and of its detail.
_EXAMPLES: dict[ProblemType, Callable[[], tuple[str, dict[str, Any]]]] = {
    ProblemType.SOLD_OUT: lambda: (errors.SoldOut(_PRODUCT).detail, {"productId": _PRODUCT}),
    ProblemType.LIMIT_REACHED: lambda: (
        errors.LimitReached(_PRODUCT, 2).detail,
        {"productId": _PRODUCT, "limit": 2},
    ),
    ProblemType.PRICE_MISMATCH: lambda: (
        errors.PriceMismatch("paymentAmount", 10050, 9000).detail,
        {"field": "paymentAmount", "expected": 10050, "given": 9000},
    ),
    ProblemType.VALIDATION_ERROR: lambda: (
        "the request does not match the schema",
        {
            "errors": [
                {
                    "location": ["body", "items", "0", "quantity"],
                    "message": "Input should be greater than or equal to 1",
                }
            ]
        },
    ),
    ProblemType.IDEMPOTENCY_KEY_REUSED: lambda: (errors.IdempotencyKeyReused().detail, {}),
    ProblemType.QUEUE_ADMISSION_REQUIRED: lambda: (
        errors.AdmissionRequired(_PRODUCT).detail,
        {"productId": _PRODUCT},
    ),
    ProblemType.ADMISSION_TOKEN_EXPIRED: lambda: (
        errors.AdmissionTokenExpired(_PRODUCT).detail,
        {"productId": _PRODUCT},
    ),
    ProblemType.UNKNOWN_REFERENCE: lambda: (
        errors.UnknownReference("discount policy", "WELCOME10").detail,
        {},
    ),
    ProblemType.NOT_FOUND: lambda: (errors.OrderNotFound("0190…").detail, {}),
    ProblemType.UNAVAILABLE: lambda: (
        f"database is unavailable; retry shortly (reference {_REQUEST})",
        {"requestId": _REQUEST},
    ),
}


def problem_example(type_: ProblemType) -> dict[str, Any]:
    detail, extra = _EXAMPLES[type_]() if type_ in _EXAMPLES else (CASES[type_][1], {})
    return {**problem_body(type_, detail), **extra}


def _describe_problems(response: dict[str, Any]) -> None:
    types = [ProblemType(t) for t in response["x-problem-types"]]
    response["description"] += " (" + ", ".join(f"`{t.case}`" for t in types) + ")"
    response["content"][MEDIA_TYPE]["examples"] = {
        t.case: {"summary": CASES[t][1], "value": problem_example(t)} for t in types
    }


# --- limits ----------------------------------------------------------------------------------


def _apply_limits(document: dict[str, Any], settings: Settings) -> None:
    """Write the limits of ``settings`` where the wire models carry only hard ceilings."""
    schemas = document["components"]["schemas"]
    order = schemas["PlaceOrderIn"]["properties"]["items"]
    order["maxItems"] = min(
        order.get("maxItems", settings.max_items_per_order), settings.max_items_per_order
    )
    quantity = schemas["OrderItemIn"]["properties"]["quantity"]
    quantity["maximum"] = min(
        quantity.get("maximum", settings.max_quantity_per_item), settings.max_quantity_per_item
    )
    limits = (
        f"Limits of this deployment: at most {settings.max_items_per_order} items per order, "
        f"at most {settings.max_quantity_per_item} units per item, bodies of at most "
        f"{settings.max_body_bytes} bytes (413 beyond)."
    )
    for operation in _operations(document):
        if operation.get("operationId") == "placeOrder":
            operation["description"] = f"{operation.get('description', '')}\n\n{limits}".strip()
