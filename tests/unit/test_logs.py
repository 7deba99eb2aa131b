"""Log lines: the fields a module passes to its logger reach the rendered output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import pytest

from flashorder.application.ports import OutboxBatch
from flashorder.application.relay import relay_once
from flashorder.domain import errors
from flashorder.domain.events import Event
from flashorder.entrypoints import logs


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Logging configured as a process configures it (JSON), into a buffer; undone after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    logs.configure("info", json=True, stream=out)
    try:
        yield out
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_fields_passed_in_extra_are_keys_of_the_json_line(json_lines: io.StringIO) -> None:
    logging.getLogger("flashorder.somewhere").warning(
        "order.noted", extra={"order_id": "o-1", "units": 3}
    )

    [line] = lines(json_lines)
    assert line["event"] == "order.noted"
    assert line["order_id"] == "o-1"
    assert line["units"] == 3
    assert line["level"] == "warning"
    assert line["logger"] == "flashorder.somewhere"
    assert "timestamp" in line


def test_records_below_the_level_are_not_written(json_lines: io.StringIO) -> None:
    logging.getLogger("flashorder.somewhere").debug("order.detail", extra={"order_id": "o-1"})

    assert lines(json_lines) == []


def test_an_exception_is_one_string_field_of_its_line(json_lines: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("flashorder.somewhere").exception("thing.failed", extra={"n": 1})

    [line] = lines(json_lines)
    assert line["n"] == 1
    assert isinstance(line["exception"], str)
    assert "RuntimeError: boom" in line["exception"]


class _DownStore:
    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[OutboxBatch]:
        raise errors.Unavailable("database", "connection refused")
        yield OutboxBatch([])  # unreached; the yield makes this a generator

    async def purge(self, older_than: datetime) -> int:
        return 0

    async def backlog(self) -> int:
        return 0


class _Publisher:
    async def publish(self, events: Sequence[Event]) -> None:
        raise AssertionError("nothing was claimed")


async def test_a_service_module_s_warning_carries_its_fields(json_lines: io.StringIO) -> None:
    assert await relay_once(_DownStore(), _Publisher(), batch_size=10) == 0

    [line] = lines(json_lines)
    assert line["event"] == "relay.unavailable"
    assert line["logger"] == "flashorder.application.relay"
    assert line["error"] == "database is unavailable: connection refused"


def test_a_console_traceback_shows_the_frames_but_not_their_local_variables() -> None:
    # The console renderer's default formatter printed every frame's locals: 13 s of CPU for
    # one 500 of the API (its event loop answered nothing meanwhile), tokens in the log.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    logs.configure("info", json=False, stream=out)
    try:
        bearer = "Bearer eyJ-local-variable"
        try:
            raise AttributeError(f"'NoneType' object has no attribute 'writelines' ({len(bearer)})")
        except AttributeError:
            logging.getLogger("flashorder.api").exception("api.unhandled_error")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

    written = out.getvalue()
    assert "api.unhandled_error" in written
    assert "Traceback (most recent call last)" in written
    assert "AttributeError: 'NoneType' object has no attribute 'writelines'" in written
    assert "eyJ-local-variable" not in written
