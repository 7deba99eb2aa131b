"""The drills' own MariaDB and Redis: servers they may stop without touching anyone else's.

The drills stop and start MariaDB and Redis mid-burst. On the servers the rest of the suite
uses, that would fail every test running beside them; so the drills get servers of their
own, started once per session by ``scripts/services.sh`` with a services folder and ports of
their own (free ones), and stopped at the end. They override the ``mariadb_url`` and
``redis_url`` fixtures for the tests of this folder only. Kafka, which no drill stops, is the
suite's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flashorder_bench.stack import free_port
from tests.support.own_services import DrillServices


@pytest.fixture(scope="session")
def drill_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DrillServices]:
    own = DrillServices(
        folder=tmp_path_factory.mktemp("drill-services"),
        mariadb_port=free_port(),
        redis_port=free_port(),
    )
    try:
        own.run("up", "mariadb", "redis")
        yield own
    finally:
        own.run("down", "mariadb", "redis")


@pytest.fixture(scope="session")
def mariadb_url(drill_services: DrillServices) -> str:
    return f"mysql+asyncmy://flashorder:flashorder@127.0.0.1:{drill_services.mariadb_port}"


@pytest.fixture(scope="session")
def redis_url(drill_services: DrillServices) -> str:
    return f"redis://127.0.0.1:{drill_services.redis_port}/0"
