"""The payment provider's webhook. No bearer token: the provider proves itself with the
signature of each request (``payment_signature``), checked before the body is even parsed."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response

from flashorder.application.payments import record_payment
from flashorder.domain import commands
from flashorder.domain.model import OrderId
from flashorder.entrypoints.api.deps import ServiceDep
from flashorder.entrypoints.api.problems import BadSignature, ProblemType, documented
from flashorder.entrypoints.api.schemas import PaymentEventIn, PaymentEventOut
from flashorder.entrypoints.payment_signature import HEADER, SignatureError, verify

router = APIRouter(prefix="/api/v1/payments", tags=["payments"])


@router.post(
    "/events",
    response_model=PaymentEventOut,
    summary="The payment provider's signed webhook",
    description=f"Signed with the shared secret: `{HEADER}: t=<unix seconds>,v1=<hex>` where "
    "`v1 = HMAC-SHA256(secret, t + '.' + body)`. `succeeded` with the order's amount pays a "
    "CREATED order; `processing` moves its deadline once by the grace period; `failed` "
    "leaves it waiting for its deadline. A `succeeded` for an order that no longer waits "
    "(expired, cancelled, paid by another payment) is recorded and announced for a refund. "
    "An event id counts once: its repeats get the first answer with `replayed: true`.",
    openapi_extra={
        "parameters": [
            {"name": HEADER, "in": "header", "required": True, "schema": {"type": "string"}}
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": PaymentEventIn.model_json_schema(
                        by_alias=True, ref_template="#/components/schemas/{model}"
                    )
                }
            },
        },
    },
    responses={
        401: documented(
            "Missing or bad signature, or a timestamp out of tolerance", ProblemType.BAD_SIGNATURE
        ),
        404: documented("No such order", ProblemType.NOT_FOUND),
        422: documented(
            "Malformed, the amount is not the order's, or a known event id with other content; "
            "nothing changed",
            ProblemType.PAYMENT_AMOUNT_MISMATCH,
            ProblemType.PAYMENT_EVENT_REUSED,
        ),
    },
)
async def payment_event(request: Request, service: ServiceDep) -> Response:
    raw = await request.body()
    settings = service.settings
    try:
        verify(
            settings.payment_webhook_secret.get_secret_value(),
            request.headers.get(HEADER),
            raw,
            tolerance=settings.payment_webhook_tolerance_seconds,
        )
    except SignatureError as exc:
        raise BadSignature(str(exc)) from None
    try:
        event = PaymentEventIn.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    answer = await record_payment(
        commands.RecordPayment(
            payment_ref=event.event_id,
            order_id=OrderId(event.order_id),
            amount=event.amount,
            status=event.status,
        ),
        deps=service.deps,
    )
    return Response(orjson.dumps(answer.body()), media_type="application/json")
