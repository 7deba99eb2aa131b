"""The projector status table, after the migrations, on SQLite and MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.sql import projector_status as status
from flashorder.application.projector import ProjectorStats

NOW = datetime(2024, 7, 1, 12, 0, 0, 250000, tzinfo=UTC)


def stats(name: str, *, lag: int, lag_seconds: float, at: datetime) -> ProjectorStats:
    s = ProjectorStats(name=name, started_at=at - timedelta(minutes=5))
    s.applied_total = 1234
    s.last_batch_at = at - timedelta(seconds=1)
    s.lag_events = lag
    s.lag_seconds = lag_seconds
    s.updated_at = at
    return s


async def test_a_report_is_read_back_as_written(engine: AsyncEngine) -> None:
    await status.write(engine, stats("projector-1", lag=7, lag_seconds=1.5, at=NOW))

    assert await status.read(engine) == [
        status.ProjectorStatus(
            consumer="projector-1",
            lag_events=7,
            lag_seconds=1.5,
            applied_total=1234,
            last_batch_at=NOW - timedelta(seconds=1),
            updated_at=NOW,
        )
    ]


async def test_a_new_report_overwrites_the_previous_one_of_the_same_projector(
    engine: AsyncEngine,
) -> None:
    await status.write(engine, stats("projector-1", lag=7, lag_seconds=1.5, at=NOW))
    await status.write(engine, stats("projector-1", lag=0, lag_seconds=0.0, at=NOW))
    await status.write(engine, stats("projector-2", lag=3, lag_seconds=0.5, at=NOW))

    rows = await status.read(engine)

    assert [(r.consumer, r.lag_events) for r in rows] == [("projector-1", 0), ("projector-2", 3)]


def test_the_lag_shown_is_the_largest_recent_report() -> None:
    def row(name: str, lag: int, age: float) -> status.ProjectorStatus:
        return status.ProjectorStatus(name, lag, lag / 10, 0, None, NOW - timedelta(seconds=age))

    rows = [row("a", 40, 1), row("b", 30, 2), row("dead", 900, 60)]

    assert status.current_lag(rows, now=NOW) == status.ReadModelLag(40, 4.0, 2)
    assert status.current_lag([row("dead", 900, 60)], now=NOW) is None
