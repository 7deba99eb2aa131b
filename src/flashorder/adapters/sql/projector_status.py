"""Where each projector reports its progress and lag, for the API processes to read.

One row per projector (its consumer name), overwritten about once a second. Every member of
a consumer group reports the lag of the whole group (see ``KafkaEventConsumer.lag``), so a
reader takes the largest recent report; a row that stopped being refreshed belongs to a
projector that stopped, and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Column, Double, String, Table, select
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import Insert

from flashorder.adapters.sql.engine import READ_ONLY, begin_writing
from flashorder.adapters.sql.errors import as_unavailable
from flashorder.adapters.sql.tables import ID, MARIADB_TABLE_OPTIONS, UtcDateTime, metadata
from flashorder.application.projector import ProjectorStats

projector_status = Table(
    "projector_status",
    metadata,
    Column("consumer", String(ID), primary_key=True),
    Column("lag_events", BigInteger, nullable=False),
    Column("lag_seconds", Double, nullable=False),
    Column("applied_total", BigInteger, nullable=False),
    Column("last_batch_at", UtcDateTime(), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
    **MARIADB_TABLE_OPTIONS,
)


@dataclass(frozen=True, slots=True)
class ProjectorStatus:
    consumer: str
    lag_events: int
    lag_seconds: float
    applied_total: int
    last_batch_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReadModelLag:
    """How far the read model is behind, from the projectors that reported recently."""

    lag_events: int
    lag_seconds: float
    projectors: int


async def write(engine: AsyncEngine, stats: ProjectorStats) -> None:
    """Insert or overwrite the row of ``stats.name``. Raises Unavailable."""
    row = {
        "consumer": stats.name,
        "lag_events": stats.lag_events,
        "lag_seconds": stats.lag_seconds,
        "applied_total": stats.applied_total,
        "last_batch_at": stats.last_batch_at,
        "updated_at": stats.updated_at or stats.started_at,
    }
    try:
        async with begin_writing(engine) as conn:
            await conn.execute(_upsert(engine.dialect.name, row))
    except Exception as exc:
        if (unavailable := as_unavailable(exc)) is not None:
            raise unavailable from exc
        raise


async def read(engine: AsyncEngine) -> list[ProjectorStatus]:
    """Every projector's last report, by consumer name. Raises Unavailable."""
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(**{READ_ONLY: True})
            rows = (
                await conn.execute(select(projector_status).order_by(projector_status.c.consumer))
            ).all()
    except Exception as exc:
        if (unavailable := as_unavailable(exc)) is not None:
            raise unavailable from exc
        raise
    return [
        ProjectorStatus(
            consumer=r.consumer,
            lag_events=r.lag_events,
            lag_seconds=r.lag_seconds,
            applied_total=r.applied_total,
            last_batch_at=r.last_batch_at,
            updated_at=r.updated_at,
        )
        for r in rows
    ]


def current_lag(
    statuses: list[ProjectorStatus],
    *,
    now: datetime,
    stale_after: timedelta = timedelta(seconds=10),
) -> ReadModelLag | None:
    """The lag to show, or None when no projector reported within ``stale_after``.

    The largest recent report, not the sum: every member reports the whole group's lag.
    """
    fresh = [s for s in statuses if now - s.updated_at <= stale_after]
    if not fresh:
        return None
    return ReadModelLag(
        lag_events=max(s.lag_events for s in fresh),
        lag_seconds=max(s.lag_seconds for s in fresh),
        projectors=len(fresh),
    )


def _upsert(dialect: str, row: dict[str, object]) -> Insert:
    changed = [c for c in row if c != "consumer"]
    if dialect in ("mysql", "mariadb"):
        my = mysql.insert(projector_status).values(row)
        return my.on_duplicate_key_update({c: my.inserted[c] for c in changed})
    lite = sqlite.insert(projector_status).values(row)
    return lite.on_conflict_do_update(
        index_elements=[projector_status.c.consumer],
        set_={c: lite.excluded[c] for c in changed},
    )
