"""``ReadModel`` on the projector's tables: ``order_views``, ``product_sales`` and
``processed_events``.

Invariants, whatever the order, repetition or concurrency of ``apply`` calls:

- An event is applied at most once: its id goes into ``processed_events`` in the same
  transaction as its effects, and an id already there means the event is skipped.
- A view holds the newest version seen: an older snapshot never overwrites a newer one.
- ``product_sales`` counts each created order once and takes each cancelled or expired one
  back once (``sold``: units of live orders, paid or held), and counts each paid order's
  units once in ``paid`` (taken back when a paid order is cancelled), so both converge to
  the write side's figures whatever order the events arrive in.

Deadlock avoidance (MariaDB, several projectors): one batch locks its rows in a fixed order
(processed events by id, then views by order id, then sales by product id), so two batches
never wait on each other in a cycle. A batch whose events another transaction is applying
waits for it and then skips them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flashorder.adapters.sql.engine import READ_ONLY, begin_writing, is_sqlite
from flashorder.adapters.sql.errors import is_duplicate_key, unavailable_on_failure
from flashorder.adapters.sql.tables import order_views, processed_events, product_sales
from flashorder.adapters.sql.upsert import mariadb_upsert
from flashorder.application.ports import JsonObject
from flashorder.domain import errors
from flashorder.domain.events import (
    ORDER_CANCELLED,
    ORDER_CREATED,
    ORDER_DEADLINE_EXTENDED,
    ORDER_EXPIRED,
    ORDER_PAID,
    Event,
)
from flashorder.domain.model import OrderId, ProductId, UserId

_v = order_views.c
_s = product_sales.c

_SEEN_VALUES: dict[str, Any] = {"event_id": bindparam("eid"), "processed_at": bindparam("at")}
# SQLite reports no row for a duplicate. MariaDB raises a duplicate-key error instead, which
# undoes only that statement; a duplicate that a concurrent transaction is inserting makes us
# wait for its outcome first. (INSERT IGNORE would do the same, but asyncmy fetches and logs
# the warning every ignored row leaves: a round trip and a log line per redelivered event.)
_MARK_SEEN_SQLITE = sqlite.insert(processed_events).values(_SEEN_VALUES).on_conflict_do_nothing()
_MARK_SEEN_MARIADB = insert(processed_events).values(_SEEN_VALUES)

_VIEW_PARAMS = {
    "order_id": "oid",
    "user_id": "uid",
    "status": "status",
    "version": "version",
    "body": "body",
    "created_at": "created",
    "updated_at": "updated",
}
_VIEW_VALUES: dict[str, Any] = {column: bindparam(param) for column, param in _VIEW_PARAMS.items()}
_view_sqlite = sqlite.insert(order_views).values(_VIEW_VALUES)
_UPSERT_VIEW_SQLITE = _view_sqlite.on_conflict_do_update(
    index_elements=[_v.order_id],
    set_={
        "status": _view_sqlite.excluded.status,
        "body": _view_sqlite.excluded.body,
        "updated_at": _view_sqlite.excluded.updated_at,
        "version": _view_sqlite.excluded.version,
    },
    where=_v.version < _view_sqlite.excluded.version,
)
# MariaDB applies the assignments left to right, each seeing the ones before: ``version`` goes
# last so that every guard above compares against the stored version.
_UPSERT_VIEW_MARIADB = mariadb_upsert(
    order_views,
    _VIEW_PARAMS,
    ", ".join(
        f"{name} = IF(version < VALUES(version), VALUES({name}), {name})"
        for name in ("status", "body", "updated_at", "version")
    ),
)

_SALES_PARAMS = {"product_id": "pid", "sold": "sold", "orders": "n", "paid": "paid"}
_SALES_VALUES: dict[str, Any] = {
    column: bindparam(param) for column, param in _SALES_PARAMS.items()
}
_sales_sqlite = sqlite.insert(product_sales).values(_SALES_VALUES)
_ADD_SALES_SQLITE = _sales_sqlite.on_conflict_do_update(
    index_elements=[_s.product_id],
    set_={
        "sold": _s.sold + _sales_sqlite.excluded.sold,
        "orders": _s.orders + _sales_sqlite.excluded.orders,
        "paid": _s.paid + _sales_sqlite.excluded.paid,
    },
)
_ADD_SALES_MARIADB = mariadb_upsert(
    product_sales,
    _SALES_PARAMS,
    "sold = sold + VALUES(sold), orders = orders + VALUES(orders), paid = paid + VALUES(paid)",
)

_GET_VIEW = select(_v.body).where(_v.order_id == bindparam("oid"))
_FIRST_PAGE = (
    select(_v.order_id, _v.body)
    .where(_v.user_id == bindparam("uid"))
    .order_by(_v.order_id.desc())
    .limit(bindparam("n"))
)
_NEXT_PAGE = _FIRST_PAGE.where(_v.order_id < bindparam("after"))
_GET_SALES = select(_s.sold, _s.orders, _s.paid).where(_s.product_id == bindparam("pid"))

#: What each order event does to its products' live sales (units and orders); every one of
#: them carries the order's new snapshot for its view.
_SIGN = {
    ORDER_CREATED: 1,
    ORDER_CANCELLED: -1,
    ORDER_EXPIRED: -1,
    ORDER_PAID: 0,
    ORDER_DEADLINE_EXTENDED: 0,
}


class SqlReadModel:
    """The query side's tables, written only by ``apply`` (the projector)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = engine.execution_options(**{READ_ONLY: True})
        sqlite_ = self._sqlite = is_sqlite(engine)
        self._mark_seen = _MARK_SEEN_SQLITE if sqlite_ else _MARK_SEEN_MARIADB
        self._upsert_view = _UPSERT_VIEW_SQLITE if sqlite_ else _UPSERT_VIEW_MARIADB
        self._add_sales = _ADD_SALES_SQLITE if sqlite_ else _ADD_SALES_MARIADB

    async def apply(self, events: Sequence[Event]) -> int:
        if not events:
            return 0
        with unavailable_on_failure():
            async with begin_writing(self._engine) as conn:
                return await self._apply(conn, events)

    async def _apply(self, conn: AsyncConnection, events: Sequence[Event]) -> int:
        now = datetime.now(UTC)
        unique = {str(e.event_id): e for e in reversed(events)}
        new = [unique[event_id] for event_id in await self._first_times(conn, sorted(unique), now)]
        views: dict[str, dict[str, Any]] = {}
        sales: dict[str, list[int]] = {}  # product -> [sold, orders, paid]
        changed = 0
        for event in new:
            view = _order_view(event)
            if view is None:
                continue
            changed += 1
            held = views.get(view["oid"])
            if held is None or held["version"] < view["version"]:
                views[view["oid"]] = view
            sign = _SIGN[event.type]
            paid = _paid_sign(event)
            for product_id, quantity in _items(event.payload):
                totals = sales.setdefault(product_id, [0, 0, 0])
                totals[0] += sign * quantity
                totals[1] += sign
                totals[2] += paid * quantity
        if views:
            # One statement for the batch; rows in order-id order, as the locks go.
            rows = [views[order_id] for order_id in sorted(views)]
            await conn.execute(self._upsert_view, rows if len(rows) > 1 else rows[0])
        for product_id in sorted(sales):
            sold, orders, paid = sales[product_id]
            await conn.execute(
                self._add_sales, {"pid": product_id, "sold": sold, "n": orders, "paid": paid}
            )
        return changed

    async def _first_times(
        self, conn: AsyncConnection, event_ids: list[str], now: datetime
    ) -> list[str]:
        """Those of ``event_ids`` (sorted) not applied before, now marked as applied.

        MariaDB: one multi-row insert for the batch, the usual case; a duplicate among them
        (a redelivery) undoes that statement alone, and the ids are then marked one by one.
        """
        if len(event_ids) > 1 and not self._sqlite:
            rows = [{"eid": event_id, "at": now} for event_id in event_ids]
            try:
                await conn.execute(self._mark_seen, rows)
            except sa_exc.IntegrityError as exc:
                if not is_duplicate_key(exc):
                    raise
            else:
                return event_ids
        return [event_id for event_id in event_ids if await self._first_time(conn, event_id, now)]

    async def _first_time(self, conn: AsyncConnection, event_id: str, now: datetime) -> bool:
        try:
            seen = await conn.execute(self._mark_seen, {"eid": event_id, "at": now})
        except sa_exc.IntegrityError as exc:
            if is_duplicate_key(exc):
                return False
            raise
        return seen.rowcount == 1

    async def order(self, order_id: OrderId) -> JsonObject | None:
        with unavailable_on_failure():
            async with self._reader.connect() as conn:
                body = (await conn.execute(_GET_VIEW, {"oid": order_id})).scalar()
        return None if body is None else _json_object(body)

    async def orders_of(
        self, user_id: UserId, *, cursor: str | None, limit: int
    ) -> tuple[list[JsonObject], str | None]:
        if limit < 1:
            raise errors.Invalid("limit must be at least 1")
        params: dict[str, Any] = {"uid": user_id, "n": limit + 1}
        if cursor is not None:
            params["after"] = _decode_cursor(cursor)
        with unavailable_on_failure():
            async with self._reader.connect() as conn:
                stmt = _FIRST_PAGE if cursor is None else _NEXT_PAGE
                rows = (await conn.execute(stmt, params)).all()
        page = rows[:limit]
        # One row beyond the page proves a next page exists; the cursor is the last id shown.
        following = _encode_cursor(page[-1].order_id) if len(rows) > limit else None
        return [_json_object(r.body) for r in page], following

    async def product_sales(self, product_id: ProductId) -> Mapping[str, int] | None:
        with unavailable_on_failure():
            async with self._reader.connect() as conn:
                row = (await conn.execute(_GET_SALES, {"pid": product_id})).first()
        if row is None:
            return None
        return {"sold": row.sold, "orders": row.orders, "paid": row.paid}


def _order_view(event: Event) -> dict[str, Any] | None:
    """The ``order_views`` row an order event carries, or None for other events.

    A payload this projector cannot read yields None too: the event is recorded as processed
    and skipped, rather than stalling the stream behind it for ever.
    """
    if event.type not in _SIGN:
        return None
    p = event.payload
    user_id, status = p.get("userId"), p.get("status")
    if not isinstance(user_id, str) or not isinstance(status, str):
        return None
    return {
        "oid": event.aggregate_id,
        "uid": user_id,
        "status": status,
        "version": event.aggregate_version,
        "body": orjson.dumps(p).decode(),
        "created": _time(p.get("createdAt"), event.occurred_at),
        "updated": event.occurred_at,
    }


def _paid_sign(event: Event) -> int:
    """+1 when the event makes its order's units paid, -1 when it takes paid units back (a
    paid order cancelled: its snapshot still carries ``paidAt``), 0 otherwise."""
    if event.type == ORDER_PAID:
        return 1
    if event.type == ORDER_CANCELLED and event.payload.get("paidAt") is not None:
        return -1
    return 0


def _items(payload: Mapping[str, Any]) -> list[tuple[str, int]]:
    items = payload.get("items")
    if not isinstance(items, list):
        return []
    return [
        (item["productId"], item["quantity"])
        for item in items
        if isinstance(item, dict)
        and isinstance(item.get("productId"), str)
        and isinstance(item.get("quantity"), int)
    ]


def _time(text: object, default: datetime) -> datetime:
    if not isinstance(text, str):
        return default
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return default
    return at if at.tzinfo is not None else default


def _json_object(text: str) -> JsonObject:
    value = orjson.loads(text)
    if not isinstance(value, dict):
        raise TypeError("a stored view is not a JSON object")
    return value


def _encode_cursor(order_id: str) -> str:
    return base64.urlsafe_b64encode(order_id.encode()).rstrip(b"=").decode()


def _decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        order_id = raw.decode("ascii")
    except (binascii.Error, ValueError):
        raise errors.Invalid("the cursor is not one this service gave out") from None
    if not order_id or len(order_id) > 36:
        raise errors.Invalid("the cursor is not one this service gave out")
    return order_id
