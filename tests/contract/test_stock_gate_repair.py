"""The reconciliation side of the StockGate contract (``view`` and ``correct``), run against
the Redis gate and its in-memory twin."""

from __future__ import annotations

import pytest

from flashorder.adapters.stock.memory import MemoryStockGate
from flashorder.adapters.stock.redis import RedisStockGate
from flashorder.adapters.stock.redis_cluster import ShardedStockGate
from flashorder.application.ports import ReconcilableStockGate
from flashorder.domain import errors
from flashorder.domain.model import ProductId
from tests.support.stock import line, order, product, user


async def test_view_shows_the_count_and_the_unconfirmed_reservations_of_the_product(
    gate: ReconcilableStockGate,
) -> None:
    p, other = product(), product()
    await gate.put(p, 10)
    await gate.put(other, 10)
    mine, confirmed, released, elsewhere = order(), order(), order(), order()
    await gate.reserve(mine, user(), [line(p, 2), line(other, 1)])
    await gate.reserve(confirmed, user(), [line(p, 1)])
    await gate.reserve(released, user(), [line(p, 3)])
    await gate.reserve(elsewhere, user(), [line(other, 4)])
    await gate.confirm(confirmed)
    await gate.release(released)

    seen = await gate.view(p)

    assert seen.available == 7
    assert dict(seen.in_flight) == {mine: 2}
    assert seen.users_known is False


async def test_view_of_a_product_without_a_count_says_so(gate: ReconcilableStockGate) -> None:
    seen = await gate.view(product())

    assert (seen.available, dict(seen.in_flight)) == (None, {})


async def test_correct_sets_a_missing_count_to_the_database_figure_minus_what_is_in_flight(
    gate: ReconcilableStockGate,
) -> None:
    p, in_flight, paid = product(), order(), order()
    await gate.put(p, 10)
    await gate.reserve(in_flight, user(), [line(p, 2)])
    await gate.reserve(paid, user(), [line(p, 3)])
    await _forget(gate, p)

    fixed = await gate.correct(p, available=7, committed=[paid], raise_by_at_most=0)

    assert (fixed.before, fixed.target, fixed.after, fixed.in_flight) == (None, 5, 5, 2)
    assert await gate.available(p) == 5


async def test_correct_lowers_the_count_at_once(gate: ReconcilableStockGate) -> None:
    p = product()
    await gate.put(p, 10)

    fixed = await gate.correct(p, available=4, committed=[], raise_by_at_most=0)

    assert (fixed.before, fixed.after, fixed.changed) == (10, 4, True)
    assert await gate.available(p) == 4


async def test_correct_raises_the_count_by_at_most_the_cap(gate: ReconcilableStockGate) -> None:
    p = product()
    await gate.put(p, 3)

    held = await gate.correct(p, available=10, committed=[], raise_by_at_most=0)
    capped = await gate.correct(p, available=10, committed=[], raise_by_at_most=4)
    free = await gate.correct(p, available=10, committed=[], raise_by_at_most=None)

    assert (held.target, held.after, held.changed) == (10, 3, False)
    assert (capped.before, capped.after) == (3, 7)
    assert (free.before, free.after) == (7, 10)
    assert await gate.available(p) == 10


async def test_correct_in_a_dry_run_reports_and_changes_nothing(
    gate: ReconcilableStockGate,
) -> None:
    p = product()
    await gate.put(p, 10)

    fixed = await gate.correct(p, available=4, committed=[], user_counts={}, dry_run=True)

    assert (fixed.before, fixed.after, fixed.users_rebuilt) == (10, 4, 0)
    assert await gate.available(p) == 10
    assert (await gate.view(p)).users_known is False


async def test_a_negative_target_is_kept_so_that_releases_land_on_the_exact_figure(
    gate: ReconcilableStockGate,
) -> None:
    p, first, second = product(), order(), order()
    await gate.put(p, 5)
    await gate.reserve(first, user(), [line(p, 2)])
    await gate.reserve(second, user(), [line(p, 2)])

    fixed = await gate.correct(p, available=1, committed=[])

    assert fixed.after == -3
    with pytest.raises(errors.SoldOut):
        await gate.reserve(order(), user(), [line(p, 1)])
    await gate.release(first)
    await gate.release(second)
    assert await gate.available(p) == 1


async def test_correct_rebuilds_the_per_user_counts_from_the_database_and_what_is_in_flight(
    gate: ReconcilableStockGate,
) -> None:
    p, buyer, waiting, ghost = product(), user(), user(), user()
    await gate.put(p, 10)
    await gate.reserve(order(), waiting, [line(p, 1, max_per_user=2)])
    await gate.set_user_count(p, ghost, 1)

    fixed = await gate.correct(
        p, available=9, committed=[], user_counts={buyer: 2}, raise_by_at_most=0
    )

    # buyer: 2 from the database (was 0); waiting: 1 in flight (unchanged); ghost: in
    # neither, so dropped. Two counts changed.
    assert fixed.users_rebuilt == 2
    await gate.reserve(order(), ghost, [line(p, 2, max_per_user=2)])
    assert (await gate.view(p)).users_known is True
    with pytest.raises(errors.LimitReached):
        await gate.reserve(order(), buyer, [line(p, 1, max_per_user=2)])
    await gate.reserve(order(), waiting, [line(p, 1, max_per_user=2)])
    with pytest.raises(errors.LimitReached):
        await gate.reserve(order(), waiting, [line(p, 1, max_per_user=2)])


async def _forget(gate: ReconcilableStockGate, p: ProductId) -> None:
    # A lost counter (Redis restarted, or an operator's DEL).
    if isinstance(gate, RedisStockGate):
        await gate._client.delete(gate._avail(p))
    elif isinstance(gate, ShardedStockGate):
        await gate._client.delete(gate._p(p, "avail"))
    else:
        assert isinstance(gate, MemoryStockGate)
        del gate._available[p]
