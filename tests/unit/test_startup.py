"""A worker's first step waits out a database or broker it cannot reach, and only that."""

from __future__ import annotations

import pytest
from asyncmy import errors as asyncmy_errors
from sqlalchemy import exc as sa_exc

from flashorder.domain.errors import Unavailable
from flashorder.entrypoints.startup import waiting_out_outages


def driver_error(code: int, message: str) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, asyncmy_errors.OperationalError(code, message))


class Flaky:
    """Fails with each of ``failures`` in turn, then succeeds."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)


def test_a_server_that_cannot_be_reached_is_waited_for_with_a_growing_pause() -> None:
    step = Flaky(
        driver_error(2003, "Can't connect to MySQL server"),
        driver_error(2013, "Lost connection to server during query"),
        ConnectionRefusedError(111, "Connection refused"),
        Unavailable("kafka", "no broker answered"),
        driver_error(1053, "Server shutdown in progress"),
        driver_error(2006, "Server has gone away"),
    )
    pauses: list[float] = []

    waiting_out_outages(step, what="migrate", max_pause=1.0, sleep=pauses.append)

    assert step.calls == 7
    assert pauses == [0.25, 0.5, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "refusal",
    [
        driver_error(1045, "Access denied for user 'flashorder'"),
        driver_error(1049, "Unknown database 'flashorder'"),
        sa_exc.ProgrammingError("CREATE TABLE", {}, Exception("syntax")),
        RuntimeError("a broken migration"),
    ],
    ids=["access-denied", "unknown-database", "bad-statement", "bug"],
)
def test_a_server_that_refuses_ends_the_start_at_once(refusal: Exception) -> None:
    step = Flaky(refusal)
    pauses: list[float] = []

    with pytest.raises(type(refusal)):
        waiting_out_outages(step, what="migrate", sleep=pauses.append)

    assert step.calls == 1
    assert pauses == []
