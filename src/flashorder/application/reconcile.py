"""Reconciliation: finds where the stock gate and the database disagree, and repairs it.

The database is the source of truth; the gate only has to agree with it. At any instant

    gate count = database available - units of reservations in flight

where in flight means reserved in the gate but not (yet) paid for by a live order in the
database. Every step of the write path keeps this true: a reservation takes units from the
count and puts them in flight; a commit moves them from in flight to the database; a
release gives them back to the count. So the difference between the two sides ("drift")
stays constant while orders flow, and only a fault changes it: a worker killed between its
reservation and its commit, Redis restarted empty, stock edited by hand in the database, a
commit whose outcome its writer never learned.

Reconciliation makes two passes:

1. Reservations pending longer than ``older_than`` belong to workers that died (or hung):
   confirmed when the database holds their order live (CREATED or PAID), released
   otherwise (no order, or a cancellation or expiry whose own release never happened).
2. Per product, under the ``stock:<id>`` lock that ``change_stock`` takes and the product
   row's database lock, the gate's count is set to the database's figure minus what is in
   flight (see ``_measure``). A count missing from the gate is set; the per-user counts are
   rebuilt from ``user_purchases`` when the gate lost them.

Hazards, and why the repair is safe against them:

- Lowering the count is always safe (a sale refused), raising it could let a sale through
  that the database then refuses; so a raise is applied only if a second look, a moment
  later, confirms it (the smaller of the two is applied). The one transient the invariant
  above does not cover is a cancellation between its commit (the database got the units
  back) and its release in the gate (not yet): it looks like a raise is due, and vanishes
  a moment later.
- A pending reservation is released only once older than ``older_than``: long enough that
  no transaction that could still commit its order is alive. Should one commit anyway, the
  gate is then too high by its units until the next run lowers it; the guarded update in
  the database refuses any sale beyond the real stock meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import random
from contextlib import suppress
from dataclasses import dataclass, field

from flashorder.application.ports import (
    GateCorrection,
    Locks,
    ReconcilableStockGate,
    UnitOfWorkFactory,
)
from flashorder.domain import errors
from flashorder.domain.model import OrderId, ProductId

log = logging.getLogger(__name__)

#: How long to wait before taking the second look that confirms a raise.
SETTLE_SECONDS = 0.2
#: Stale reservations are looked up in the database this many per transaction.
_BATCH = 200


@dataclass(frozen=True, slots=True)
class ProductFix:
    """One product's repair (or, in a dry run, the repair it needs)."""

    product_id: ProductId
    #: The gate's count before; None when it had none.
    before: int | None
    #: The count it was set to.
    after: int
    #: The database's figure minus the units in flight: what the count should be.
    target: int
    in_flight: int
    #: How many users' counts the rebuild changed; None when there was no rebuild.
    users_rebuilt: int | None

    @property
    def changed(self) -> bool:
        return self.before != self.after or bool(self.users_rebuilt)


@dataclass(slots=True)
class ReconcileReport:
    """What a run found and changed. In a dry run, what it would have changed."""

    dry_run: bool
    #: Stale reservations given back (no live order behind them).
    released: list[OrderId] = field(default_factory=list)
    #: Stale reservations whose order had committed: marked as such.
    confirmed: list[OrderId] = field(default_factory=list)
    checked: int = 0
    #: Products whose count or per-user counts were repaired.
    fixed: list[ProductFix] = field(default_factory=list)
    #: Products skipped this run (their lock was busy), with the reason.
    skipped: dict[ProductId, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.released or self.confirmed or self.fixed)

    def as_dict(self) -> dict[str, object]:
        return {
            "dryRun": self.dry_run,
            "released": list(self.released),
            "confirmed": list(self.confirmed),
            "checked": self.checked,
            "fixed": [
                {
                    "productId": fix.product_id,
                    "before": fix.before,
                    "after": fix.after,
                    "target": fix.target,
                    "inFlight": fix.in_flight,
                    "usersRebuilt": fix.users_rebuilt,
                }
                for fix in self.fixed
            ],
            "skipped": dict(self.skipped),
        }


async def reconcile(
    *,
    uow: UnitOfWorkFactory,
    stock: ReconcilableStockGate,
    locks: Locks,
    older_than: float,
    dry_run: bool = False,
    settle: float = SETTLE_SECONDS,
) -> ReconcileReport:
    """Repair every difference between the gate and the database; report what changed.

    Raises Unavailable when the database or Redis is down (nothing half-done matters: each
    repair is atomic, and the next run starts over).
    """
    report = ReconcileReport(dry_run=dry_run)
    await _settle_stale(uow=uow, stock=stock, older_than=older_than, report=report)
    async with uow() as work:
        product_ids = await work.products.all_ids()
    for product_id in product_ids:
        try:
            fix = await _reconcile_product(
                product_id, uow=uow, stock=stock, locks=locks, dry_run=dry_run, settle=settle
            )
        except errors.DuplicateInFlight as exc:
            # Another reconciler or a stock change holds the product: it is theirs this time.
            report.skipped[product_id] = exc.detail
            continue
        report.checked += 1
        if fix is not None and fix.changed:
            report.fixed.append(fix)
    return report


async def _settle_stale(
    *,
    uow: UnitOfWorkFactory,
    stock: ReconcilableStockGate,
    older_than: float,
    report: ReconcileReport,
) -> None:
    stale = await stock.pending(older_than)
    for start in range(0, len(stale), _BATCH):
        batch = stale[start : start + _BATCH]
        async with uow() as work:
            live = {
                order_id
                for order_id in batch
                if (order := await work.orders.get(order_id)) is not None
                and order.status.holds_stock
            }
        for order_id in batch:
            if order_id in live:
                # Committed, and its worker died before saying so: the count already agrees.
                if not report.dry_run:
                    await stock.confirm(order_id)
                report.confirmed.append(order_id)
            elif report.dry_run or await stock.release(order_id):
                report.released.append(order_id)


async def _reconcile_product(
    product_id: ProductId,
    *,
    uow: UnitOfWorkFactory,
    stock: ReconcilableStockGate,
    locks: Locks,
    dry_run: bool,
    settle: float,
) -> ProductFix | None:
    # The stock lock keeps ``change_stock`` (which moves the gate before the database) and
    # other reconcilers out; orders do not take it, the row lock below handles them.
    async with locks.hold(f"stock:{product_id}"):
        first = await _measure(product_id, uow=uow, stock=stock, cap=0, dry_run=dry_run)
        if first is None:
            return None
        final = first
        wanted = first.target - first.after
        if first.before is not None and wanted > 0:
            # A raise is due: confirm it with a second look (see the module docstring).
            await asyncio.sleep(settle)
            second = await _measure(product_id, uow=uow, stock=stock, cap=wanted, dry_run=dry_run)
            if second is None:
                return None
            final = second
    # A run writes in one of the two looks at most (a lowering in the first, or a raise
    # in the second): ``final`` holds the write, if any.
    return ProductFix(
        product_id=product_id,
        before=final.before,
        after=final.after,
        target=final.target,
        in_flight=final.in_flight,
        users_rebuilt=first.users_rebuilt,
    )


async def _measure(
    product_id: ProductId,
    *,
    uow: UnitOfWorkFactory,
    stock: ReconcilableStockGate,
    cap: int,
    dry_run: bool,
) -> GateCorrection | None:
    """One consistent look at both sides, and the correction, under the product row lock.

    Why a concurrent order cannot be counted twice or missed:

    - The row lock (``FOR UPDATE``) is taken first. Every transaction that changes the
      product's ``available`` or its ``user_purchases`` updates this row, so none commits
      until we leave: the database side is frozen from here on.
    - Then the gate's in-flight reservations are read, and the database tells which of them
      it already paid for (live orders). A reservation made after this read cannot have
      committed either (frozen), so it is in flight, as ``correct`` counts it.
    - ``correct`` sums the in-flight units and writes the count in one Lua script, so a
      reservation or a release between the read and the write is counted exactly once.
    """
    async with uow() as work:
        product = await work.products.get(product_id, for_update=True)
        if product is None:
            return None
        seen = await stock.view(product_id)
        committed = await work.products.committed_among(product_id, list(seen.in_flight))
        # Per-user counts matter only to a product with a limit (they are checked nowhere
        # else); the database's are frozen by the row lock too.
        rebuild = not seen.users_known and product.max_per_user is not None
        user_counts = await work.purchases.counts(product_id) if rebuild else None
        return await stock.correct(
            product_id,
            available=product.available,
            committed=committed,
            raise_by_at_most=cap,
            user_counts=user_counts,
            dry_run=dry_run,
        )
        # Leaving without a commit rolls back (nothing was written) and frees the row.


async def run_reconciler(
    *,
    uow: UnitOfWorkFactory,
    stock: ReconcilableStockGate,
    locks: Locks,
    every: float,
    older_than: float,
    stop: asyncio.Event,
) -> None:
    """Reconcile every ``every`` seconds (jittered) until ``stop`` is set.

    Several processes may run this at once: each repair is under the product's lock and is
    idempotent, so they only repeat each other's work. A failed run is logged and retried on
    the next tick; the loop itself ends only on ``stop``.
    """
    while not stop.is_set():
        # Jitter spreads the runs of a deployment's workers over the period.
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every * random.uniform(0.5, 1.5))
        if stop.is_set():
            return
        try:
            report = await reconcile(
                uow=uow, stock=stock, locks=locks, older_than=older_than, dry_run=False
            )
        except errors.Unavailable as exc:
            log.warning("reconcile.unavailable", extra={"error": exc.detail})
            continue
        except Exception:
            # A bug: logged whole, and the next tick tries again rather than leaving the
            # gate unrepaired for the rest of the process's life.
            log.exception("reconcile.failed")
            continue
        if report.changed:
            log.warning("reconcile.repaired", extra=report.as_dict())
