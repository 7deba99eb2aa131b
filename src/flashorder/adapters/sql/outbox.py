"""The transactional outbox: events are rows written in the transaction that made them
(by the unit of work at commit, ``uow``), and a relay publishes the rows
(``SqlOutboxRelayStore``).

On MariaDB several relays may run at once: ``claim`` locks its rows with
``FOR UPDATE SKIP LOCKED``, so relays take disjoint batches, and marks them published in the
same transaction. On SQLite (embedded mode, one relay per database) the rows are read without
a lock and marked published in a short write transaction afterwards, so the database's single
write lock is not held while the batch is being delivered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import Row, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.sql.engine import READ_ONLY, begin_writing, is_sqlite
from flashorder.adapters.sql.errors import release, unavailable_on_failure
from flashorder.adapters.sql.tables import outbox
from flashorder.application.ports import OutboxBatch
from flashorder.domain.events import Event

_o = outbox.c

INSERT_EVENTS = insert(outbox)

_UNPUBLISHED = (
    select(
        _o.id,
        _o.event_id,
        _o.type,
        _o.aggregate_id,
        _o.aggregate_version,
        _o.occurred_at,
        _o.payload,
        _o.traceparent,
    )
    .where(_o.published_at.is_(None))
    .order_by(_o.id)
    .limit(bindparam("n"))
)
# SQLite renders no locking clause; MariaDB skips rows another relay holds.
_CLAIM = _UNPUBLISHED.with_for_update(skip_locked=True)
_MARK = (
    update(outbox)
    .where(_o.id.in_(bindparam("ids", expanding=True)))
    .values(published_at=bindparam("now"))
)
_PURGEABLE = (
    select(_o.id)
    .where(_o.published_at < bindparam("before"))
    .order_by(_o.published_at, _o.id)
    .limit(bindparam("n"))
)
_DELETE = delete(outbox).where(_o.id.in_(bindparam("ids", expanding=True)))
_BACKLOG = select(func.count()).select_from(outbox).where(_o.published_at.is_(None))

#: Rows deleted per transaction by ``purge``: short transactions, short row locks.
PURGE_CHUNK = 1000


def event_rows(events: Sequence[Event]) -> list[dict[str, Any]]:
    """The outbox rows of ``events``, in order (their ids then follow that order)."""
    return [
        {
            "event_id": str(e.event_id),
            "type": e.type,
            "aggregate_id": e.aggregate_id,
            "aggregate_version": e.aggregate_version,
            "occurred_at": e.occurred_at,
            "payload": orjson.dumps(e.payload).decode(),
            "traceparent": e.traceparent,
        }
        for e in events
    ]


def row_event(row: Row[Any]) -> Event:
    return Event(
        type=row.type,
        aggregate_id=row.aggregate_id,
        aggregate_version=row.aggregate_version,
        occurred_at=row.occurred_at,
        payload=orjson.loads(row.payload),
        event_id=UUID(row.event_id),
        traceparent=row.traceparent,
    )


class SqlOutboxRelayStore:
    """``OutboxRelayStore`` over the ``outbox`` table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = engine.execution_options(**{READ_ONLY: True})
        self._sqlite = is_sqlite(engine)

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[OutboxBatch]:
        if self._sqlite:
            with unavailable_on_failure():
                async with self._reader.connect() as conn:
                    rows = (await conn.execute(_UNPUBLISHED, {"n": limit})).all()
            yield OutboxBatch([row_event(r) for r in rows])
            if rows:
                with unavailable_on_failure():
                    async with begin_writing(self._engine) as conn:
                        await conn.execute(_MARK, {"ids": [r.id for r in rows], "now": _now()})
            return
        with unavailable_on_failure():
            conn = await self._engine.connect()
        try:
            with unavailable_on_failure():
                await conn.begin()
                rows = (await conn.execute(_CLAIM, {"n": limit})).all()
            # The row locks are held while the body publishes. A relay that dies meanwhile
            # loses its connection and its locks with it; another relay then takes the rows.
            yield OutboxBatch([row_event(r) for r in rows])
            with unavailable_on_failure():
                if rows:
                    await conn.execute(_MARK, {"ids": [r.id for r in rows], "now": _now()})
                await conn.commit()
        finally:
            await release(conn)

    async def purge(self, older_than: datetime) -> int:
        deleted = 0
        while True:
            with unavailable_on_failure():
                async with begin_writing(self._engine) as conn:
                    found = await conn.execute(_PURGEABLE, {"before": older_than, "n": PURGE_CHUNK})
                    ids = list(found.scalars())
                    if ids:
                        await conn.execute(_DELETE, {"ids": ids})
            deleted += len(ids)
            if len(ids) < PURGE_CHUNK:
                return deleted

    async def backlog(self) -> int:
        with unavailable_on_failure():
            async with self._reader.connect() as conn:
                return int((await conn.execute(_BACKLOG)).scalar_one())


def _now() -> datetime:
    return datetime.now(UTC)
