"""Payment events from the provider's webhook: an order is paid, given a little more time,
or its money announced for a refund; each event counts once.

Why an event delivered many times changes the order at most once:

- its id goes into ``payment_events`` (primary key) in the same transaction as its effect on
  the order. A copy that arrives later finds the row and gets the recorded answer; a copy
  that arrives concurrently waits on the first one's insert and then finds it, or loses the
  guarded update of the order below and, in a fresh transaction, finds it;
- the order's change is one guarded write (``status`` and ``version`` as loaded): of
  payments, expiries and cancels that read the same CREATED order, exactly one write lands.
  The losers start over and meet the new state: a payment that lost to an expiry finds the
  order EXPIRED and announces a refund; it never revives the order.
"""

from __future__ import annotations

from dataclasses import dataclass

from flashorder.application.handlers import Deps
from flashorder.application.ports import PaymentRecord
from flashorder.domain import commands, errors
from flashorder.domain.model import PaymentOutcome

#: Fresh attempts after losing a race; each loss means another writer changed the order,
#: and an order changes state at most three times.
_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class PaymentAnswer:
    record: PaymentRecord
    #: True when the event had been processed before: this delivery changed nothing.
    replayed: bool

    def body(self) -> dict[str, object]:
        r = self.record
        return {
            "paymentRef": r.payment_ref,
            "orderId": r.order_id,
            "status": r.status.value,
            "amount": r.amount,
            "outcome": r.outcome.value,
            "orderStatus": r.order_status.value,
            "replayed": self.replayed,
        }


async def record_payment(cmd: commands.RecordPayment, *, deps: Deps) -> PaymentAnswer:
    """Apply one payment event (its signature checked by the caller). Raises OrderNotFound,
    PaymentAmountMismatch (nothing recorded), or PaymentEventReused when the event id was
    processed with other content."""
    for _ in range(_ATTEMPTS):
        answer = await _attempt(cmd, deps=deps)
        if answer is not None:
            if answer.replayed:
                _check_same(answer.record, cmd)
            return answer
    raise errors.DuplicateInFlight(f"payment event {cmd.payment_ref!r}")


async def _attempt(cmd: commands.RecordPayment, *, deps: Deps) -> PaymentAnswer | None:
    """None when a concurrent writer got there first: the caller tries again."""
    async with deps.uow() as uow:
        recorded = await uow.payments.get(cmd.payment_ref)
        if recorded is not None:
            return PaymentAnswer(recorded, replayed=True)
        order = await uow.orders.get(cmd.order_id)
        if order is None:
            raise errors.OrderNotFound(cmd.order_id)
        now = deps.clock()
        outcome = order.record_payment(
            status=cmd.status,
            amount=cmd.amount,
            payment_ref=cmd.payment_ref,
            at=now,
            grace=deps.payment_grace,
        )
        if outcome in (PaymentOutcome.PAID, PaymentOutcome.EXTENDED):
            if not await uow.orders.save(order):
                return None
        elif order.events:
            # A refund announced: the order itself does not change, so it is not saved and
            # its event goes to the outbox as one of the unit of work's own.
            uow.record(*order.events)
            order.events.clear()
        record = PaymentRecord(
            payment_ref=cmd.payment_ref,
            order_id=cmd.order_id,
            amount=cmd.amount,
            status=cmd.status,
            outcome=outcome,
            order_status=order.status,
            at=now,
        )
        try:
            await uow.payments.add(record)
        except errors.AlreadyExists:
            # A copy of this event committed first; its row is the answer.
            return None
        await uow.commit()
    return PaymentAnswer(record, replayed=False)


def _check_same(recorded: PaymentRecord, cmd: commands.RecordPayment) -> None:
    if (recorded.order_id, recorded.amount, recorded.status) != (
        cmd.order_id,
        cmd.amount,
        cmd.status,
    ):
        raise errors.PaymentEventReused(cmd.payment_ref)
