"""Fixtures of the integration suites: databases on the real MariaDB (and SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sql import BACKENDS, migrated_database


@pytest.fixture(scope="module")
def mariadb_database(mariadb_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MariaDB database shared by the module's tests: they use ids of their own."""
    folder = tmp_path_factory.mktemp("mariadb")
    with migrated_database("mariadb", folder=folder, mariadb_url=mariadb_url) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path, mariadb_url: str) -> Iterator[str]:
    """A database of the test's own, per backend: for tests that count whole tables."""
    with migrated_database(request.param, folder=tmp_path, mariadb_url=mariadb_url) as url:
        yield url
