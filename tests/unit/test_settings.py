from __future__ import annotations

from flashorder.config import Settings


def test_the_defaults_break_no_promise() -> None:
    assert Settings(database_url=None, redis_url=None, kafka_bootstrap=None).problems() == []


def test_an_idempotency_lease_shorter_than_the_request_deadline_is_refused() -> None:
    settings = Settings(idempotency_lease_seconds=5, request_timeout_seconds=15)
    assert any("IDEMPOTENCY_LEASE" in problem for problem in settings.problems())


def test_several_workers_need_the_shared_services() -> None:
    problems = Settings(
        workers=2, database_url=None, redis_url=None, kafka_bootstrap=None
    ).problems()
    assert len(problems) == 3
