"""The command handlers' dependencies over given adapters, for tests that call handlers
directly: the reserve strategy on a group commit of its own, closed on the way out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from flashorder.application.group_commit import GroupCommit
from flashorder.application.handlers import Deps
from flashorder.application.placement import ReservePlacement
from flashorder.application.ports import IdempotencyCache, Locks, StockGate, UnitOfWorkFactory
from flashorder.application.sold_out import SoldOutCache


@asynccontextmanager
async def reserving(
    *,
    uow: UnitOfWorkFactory,
    stock: StockGate,
    locks: Locks,
    idempotency: IdempotencyCache,
    batching: bool = False,
    sold_out: SoldOutCache | None = None,
) -> AsyncIterator[Deps]:
    """``batching`` False: each order is a batch of one, written in its caller's task."""
    writer = GroupCommit(uow, stock, batching=batching)
    try:
        yield Deps(
            uow=uow,
            stock=stock,
            locks=locks,
            idempotency=idempotency,
            placement=ReservePlacement(uow=uow, stock=stock, writer=writer, sold_out=sold_out),
        )
    finally:
        await writer.close()
