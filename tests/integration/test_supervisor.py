"""The API's supervisor replaces a dead worker at once, even one that died while it waited
for that worker's answer to a health check."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _workers(supervisor: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{supervisor}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                continue
            if b"spawn_main" in command and state != "Z":
                found.add(int(pid))
    return found


@pytest.fixture
def api(
    mariadb_database: str, redis_url: str, kafka_bootstrap: str, tmp_path: Path
) -> Iterator[int]:
    """``flashorder serve --workers 2`` on the real services, once both workers serve."""
    env = {
        **os.environ,
        "FLASHORDER_DATABASE_URL": mariadb_database,
        "FLASHORDER_REDIS_URL": redis_url,
        "FLASHORDER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLASHORDER_KAFKA_TOPIC_PREFIX": f"supervisor{os.getpid()}.",
        "FLASHORDER_ALLOW_DEV_SECRET": "1",
        "FLASHORDER_DATA_DIR": str(tmp_path),
        "FLASHORDER_LOG_LEVEL": "info",
    }
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        command = [str(Path(sys.executable).parent / "flashorder"), "serve", "--workers", "2"]
        proc = subprocess.Popen(
            [*command, "--port", str(_free_port())],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while log.read_text().count("Application startup complete") < 2:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield proc.pid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_a_worker_killed_during_its_health_check_is_replaced_at_once(api: int) -> None:
    workers = _workers(api)
    assert len(workers) == 2, workers
    victim = max(workers)
    # Stopped, it cannot answer the supervisor's ping (sent every half second), which then
    # waits for it; killed during that wait, it used to be noticed only when the wait ran
    # out (60 s).
    os.kill(victim, signal.SIGSTOP)
    time.sleep(2)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    while len(_workers(api) - {victim}) < 2:
        assert time.monotonic() - killed_at < 10, "the dead worker was not replaced in 10 s"
        time.sleep(0.1)
