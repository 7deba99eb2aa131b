"""Real processes of the full stack, started, killed and restarted by tests.

Each ``Stack`` gets a database, a Redis database index, Kafka topics (by prefix) and a
consumer group of its own, so stacks of different tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from redis.asyncio import Redis

from flashorder.adapters.sql.migrate import create_database_if_missing, drop_database

EXE = str(Path(sys.executable).with_name("flashorder"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    """API workers, relays and projectors as OS processes on the real services.

    ``start(kind)`` starts one more process of a kind (``api``, ``relay``, ``projector``);
    ``kill(kind)`` sends SIGKILL to the newest of that kind (a crash, not a shutdown).
    """

    def __init__(
        self,
        *,
        mariadb_url: str,
        redis_url: str,
        kafka_bootstrap: str,
        logs: Path,
        redis_db: int,
        api_workers: int = 2,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = f"flashorder_t_{secrets.token_hex(4)}"
        self.server_url = mariadb_url
        self.database_url = f"{mariadb_url}/{self.name}"
        self.redis_url = redis_url.rsplit("/", 1)[0] + f"/{redis_db}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.logs = logs
        self.api_workers = api_workers
        self.env = {
            **os.environ,
            "FLASHORDER_DATABASE_URL": self.database_url,
            "FLASHORDER_REDIS_URL": self.redis_url,
            "FLASHORDER_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "FLASHORDER_KAFKA_TOPIC_PREFIX": f"{self.name}.",
            "FLASHORDER_PROJECTOR_GROUP": f"{self.name}-projector",
            "FLASHORDER_DATA_DIR": str(logs),
            "FLASHORDER_LOG_LEVEL": "warning",
            # Tests mint their tokens with the development secret, on 127.0.0.1.
            "FLASHORDER_ALLOW_DEV_SECRET": "1",
            **(extra_env or {}),
        }
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {}

    def setup(self) -> None:
        """A fresh database (migrated), an empty Redis database, and the topics."""
        create_database_if_missing(self.server_url, self.name)
        asyncio.run(_flush_redis(self.redis_url))
        subprocess.run([EXE, "migrate"], env=self.env, check=True)

    def start(self, kind: str) -> subprocess.Popen[bytes]:
        command = {
            "api": [EXE, "serve", "--port", str(self.port), "--workers", str(self.api_workers)],
            "relay": [EXE, "relay"],
            "projector": [EXE, "projector"],
        }[kind]
        running = self.procs.setdefault(kind, [])
        with open(self.logs / f"{kind}-{len(running)}.log", "wb") as out:
            # A session of its own: a kill reaches an API's worker processes too.
            proc = subprocess.Popen(
                command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        running.append(proc)
        return proc

    def up(self, *, relays: int = 1, projectors: int = 1, timeout: float = 90) -> None:
        self.setup()
        self.start("api")
        for _ in range(relays):
            self.start("relay")
        for _ in range(projectors):
            self.start("projector")
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for kind, procs in self.procs.items():
                for proc in procs:
                    if proc.poll() is not None and proc.returncode not in (-9, -15, 0):
                        raise RuntimeError(f"{kind} exited with {proc.returncode}: {self.logs}")
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.base} not ready after {timeout}s (logs in {self.logs})")

    def kill(self, kind: str, sig: int = signal.SIGKILL) -> None:
        """Kill the newest live process of ``kind`` and its whole process group."""
        for proc in reversed(self.procs.get(kind, [])):
            if proc.poll() is None:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=30)
                return
        raise LookupError(f"no live {kind}")

    def down(self, *, drop: bool = True) -> None:
        for procs in self.procs.values():
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
        for procs in self.procs.values():
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if drop:
            drop_database(self.server_url, self.name)


async def _flush_redis(url: str) -> None:
    client = Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
