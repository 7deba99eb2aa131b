"""An order request's Idempotency-Key, from its claim to its answer.

The cache claims the key for one request at a time and keeps its answer for the retries;
the database's record (written with the order) is the durable answer. Every function here
does nothing for a request without a key.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable

import orjson

from flashorder.application.group_commit import PendingOrder
from flashorder.application.placement import PlacedOrder
from flashorder.application.ports import IdempotencyCache, StoredResponse, UnitOfWorkFactory
from flashorder.domain import commands, errors

log = logging.getLogger(__name__)


def fingerprint(cmd: commands.PlaceOrder) -> str:
    """A digest of everything in the request that changes its meaning (not the key itself);
    empty for a request without a key, which nothing is compared with."""
    if cmd.idempotency_key is None:
        return ""
    canonical = orjson.dumps(
        {
            "lines": [[ln.product_id, ln.quantity, ln.product_price] for ln in cmd.lines],
            "discountPolicyId": cmd.discount_policy_id,
            "discountAmount": cmd.discount_amount,
            "deliveryFee": cmd.delivery_fee,
            "paymentAmount": cmd.payment_amount,
            "paymentType": cmd.payment_type.value,
        }
    )
    return hashlib.sha256(canonical).hexdigest()


async def begin(cmd: commands.PlaceOrder, fp: str, cache: IdempotencyCache) -> PlacedOrder | None:
    """Claim the key; the first answer if an earlier request with it completed."""
    if cmd.idempotency_key is None:
        return None
    stored = await cache.begin(cmd.user_id, cmd.idempotency_key, fp)
    if stored is None:
        return None
    return PlacedOrder(stored.status_code, stored.body, replayed=True)


async def finish(
    cmd: commands.PlaceOrder, fp: str, placed: PlacedOrder, cache: IdempotencyCache
) -> None:
    if cmd.idempotency_key is None:
        return
    try:
        await cache.finish(
            cmd.user_id, cmd.idempotency_key, StoredResponse(fp, placed.status_code, placed.body)
        )
    except errors.Unavailable:
        # The order and its idempotency record are committed; a retry that finds the
        # cache without the answer is answered from the database.
        log.warning("idempotency.finish_failed", extra={"user_id": cmd.user_id})


async def abandon(cmd: commands.PlaceOrder, cache: IdempotencyCache) -> None:
    if cmd.idempotency_key is not None:
        await cache.abandon(cmd.user_id, cmd.idempotency_key)


async def recorded_instead(
    refusal: errors.SoldOut | errors.LimitReached,
    cmd: commands.PlaceOrder,
    fp: str,
    *,
    uow: UnitOfWorkFactory,
    cache: IdempotencyCache,
) -> PlacedOrder:
    """The database's answer to the key, or the refusal raised again (the key abandoned).

    A retry of an order that was placed but whose answer was lost (its worker died after the
    commit, Redis lost the cached answer) meets the product sold out or the limit reached, by
    that very order perhaps: the database's record of the key is the answer, not the refusal.
    Only refusals of keyed requests pay this one read.
    """
    key = cmd.idempotency_key
    if key is None:
        raise refusal
    try:
        async with uow() as work:
            recorded = await work.idempotency.get(cmd.user_id, key)
        if recorded is not None and recorded.fingerprint != fp:
            raise errors.IdempotencyKeyReused()
    except BaseException:
        await cache.abandon(cmd.user_id, key)
        raise
    if recorded is None:
        await cache.abandon(cmd.user_id, key)
        raise refusal
    return PlacedOrder(recorded.status_code, recorded.body, replayed=True)


def finish_when_known(pending: PendingOrder, cache: IdempotencyCache) -> None:
    """The caller gave up while its order was being written: the key stays claimed until the
    outcome is known, then keeps the answer or is abandoned. Abandoned now, a retry with the
    same key could be refused as sold out for an order that was placed."""

    def known(done: asyncio.Future[StoredResponse | None]) -> None:
        failed = done.cancelled() or done.exception() is not None
        if pending.idempotency_key is not None:
            _background(_settle_key(pending, None if failed else done.result(), failed, cache))

    pending.done.add_done_callback(known)


async def _settle_key(
    pending: PendingOrder, replay: StoredResponse | None, failed: bool, cache: IdempotencyCache
) -> None:
    user_id, key = pending.order.user_id, pending.idempotency_key
    assert key is not None
    if failed:
        await cache.abandon(user_id, key)
        return
    answer = replay or StoredResponse(pending.fingerprint, 201, pending.body)
    try:
        await cache.finish(user_id, key, answer)
    except errors.Unavailable:
        # The claim lapses with its lease; a later retry is then answered from the
        # database's record only if the gate lets it that far.
        log.warning("idempotency.finish_failed", extra={"user_id": user_id})


_background_tasks: set[asyncio.Task[None]] = set()


def _background(work: Awaitable[None]) -> None:
    task: asyncio.Task[None] = asyncio.ensure_future(work)
    # Held until done: the loop keeps only weak references to tasks.
    _background_tasks.add(task)
    task.add_done_callback(_background_tasks.discard)
