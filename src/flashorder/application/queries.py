"""The query side's order read, with read-your-writes for the order's owner.

The read model trails the write model by the event pipeline's lag (a few to a few hundred
milliseconds; seconds under a burst). A buyer who just placed, paid or cancelled an order
must still see it as it is now, so a single order's read is checked against the write side:

- the view is final (CANCELLED, EXPIRED): nothing can change it any more; it is the answer;
- otherwise one primary-key probe of the write side (``OrderLookup.head``) gives the order's
  owner and current version. When the read model has no view yet, or an older version, the
  answer is the write side's own snapshot (the same shape as the view);
- an order that is not the caller's looks absent, whichever side knew it.

So a GET after a 201, a payment or a cancel shows the new state at once, embedded and on the
full stack, for the one extra read of a small row. Lists of orders (``orders_of``) and the
sales figures come from the read model alone and may lag by the reported lag.
"""

from __future__ import annotations

from flashorder.application.ports import JsonObject, OrderLookup, ReadModel
from flashorder.domain import errors
from flashorder.domain.model import OrderId, OrderStatus, UserId

#: States no transition leaves: a view in one of them is as new as the write side.
_FINAL = frozenset({OrderStatus.CANCELLED.value, OrderStatus.EXPIRED.value})


async def order_view(
    order_id: OrderId,
    *,
    viewer: UserId | None,
    read_model: ReadModel,
    lookup: OrderLookup,
) -> JsonObject:
    """The order as its owner (or, with ``viewer=None``, an admin) may see it now."""
    view = await read_model.order(order_id)
    if view is not None:
        if viewer is not None and view.get("userId") != viewer:
            raise errors.OrderNotFound(order_id)
        if view.get("status") in _FINAL:
            return view
    head = await lookup.head(order_id)
    if head is None or (viewer is not None and head.user_id != viewer):
        if view is not None:
            return view
        raise errors.OrderNotFound(order_id)
    version = view.get("version") if view is not None else None
    if view is not None and isinstance(version, int) and version >= head.version:
        return view
    current = await lookup.snapshot(order_id)
    if current is None:
        raise errors.OrderNotFound(order_id)
    return current
