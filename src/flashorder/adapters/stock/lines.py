"""The one rule both stock gates apply to a reservation's lines before taking anything."""

from __future__ import annotations

from collections.abc import Sequence

from flashorder.application.ports import ReservationLine
from flashorder.domain.model import ProductId


def merged_lines(lines: Sequence[ReservationLine]) -> list[ReservationLine]:
    """One line per product (quantities summed, tightest limit kept), in first-seen order.

    Raises ValueError for an empty reservation or a quantity below one: callers validate
    orders before they reach the gate, so this is a programming error, not a 4xx.
    """
    if not lines:
        raise ValueError("a reservation needs at least one line")
    merged: dict[ProductId, ReservationLine] = {}
    for line in lines:
        if line.quantity < 1:
            raise ValueError(f"quantity of {line.product_id!r} must be positive")
        seen = merged.get(line.product_id)
        if seen is None:
            merged[line.product_id] = line
            continue
        limits = [m for m in (seen.max_per_user, line.max_per_user) if m is not None]
        merged[line.product_id] = ReservationLine(
            line.product_id, seen.quantity + line.quantity, min(limits) if limits else None
        )
    return list(merged.values())
