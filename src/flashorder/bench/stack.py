"""The full stack as OS processes on the local services, owned by one bench run.

Each ``BenchStack`` has a database of its own (``flashorder_bench_<rand>_<strategy>``,
created and migrated here, dropped at the end), its own Kafka topics (a prefix) and consumer
group, and one Redis database index, flushed at the start. It runs ``flashorder serve``
(N workers), one ``flashorder relay`` and one ``flashorder projector``.
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
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis
from sqlalchemy.engine import URL, make_url

from flashorder.adapters.events.topics import ensure_topics
from flashorder.adapters.sql.migrate import create_database_if_missing, drop_database, migrate
from flashorder.bench.options import Strategy
from flashorder.config import Settings

EXE = str(Path(sys.executable).with_name("flashorder"))
KINDS = ("api", "relay", "projector")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_url(database_url: str) -> str:
    """``database_url`` without its database: the server, where bench databases are made."""
    url = make_url(database_url)
    # ``URL.set(database=None)`` leaves the database as it was: build the URL anew.
    server = URL.create(url.drivername, url.username, url.password, url.host, url.port)
    return server.render_as_string(hide_password=False)


def with_database(database_url: str, name: str) -> str:
    return make_url(database_url).set(database=name).render_as_string(hide_password=False)


def redis_url_with_db(url: str, db: int) -> str:
    return make_url(url).set(database=str(db)).render_as_string(hide_password=False)


class BenchStack:
    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        kafka_bootstrap: str,
        redis_db: int,
        workers: int,
        strategy: Strategy,
        logs: Path,
    ) -> None:
        self.name = f"flashorder_bench_{secrets.token_hex(3)}_{strategy}"
        self.server_url = server_url(database_url)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.logs = logs
        self.workers = workers
        self.strategy: Strategy = strategy
        self.env: dict[str, str] = {
            **os.environ,
            "FLASHORDER_DATABASE_URL": with_database(database_url, self.name),
            "FLASHORDER_REDIS_URL": redis_url_with_db(redis_url, redis_db),
            "FLASHORDER_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "FLASHORDER_KAFKA_TOPIC_PREFIX": f"{self.name}.",
            "FLASHORDER_PROJECTOR_GROUP": f"{self.name}-projector",
            "FLASHORDER_DATA_DIR": str(logs),
            "FLASHORDER_LOG_LEVEL": "warning",
            "FLASHORDER_STRATEGY": strategy,
            "FLASHORDER_BENCH_ENDPOINTS": "true",
        }
        self.env.update(_bench_settings())
        # A fresh folder: the API supervisor would otherwise reuse another run's metrics.
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def settings(self) -> Settings:
        """The settings every process of this stack runs with: the bench's own clients (and
        its tokens) use the same."""
        fields = Settings.model_fields
        values: dict[str, Any] = {}
        for key, value in self.env.items():
            name = key.removeprefix("FLASHORDER_").lower()
            if key.startswith("FLASHORDER_") and name in fields:
                values[name] = value
        return Settings(**values)

    async def up(self, *, timeout: float = 300.0) -> None:
        """Database, Redis, schema and topics, then the processes; returns once ready."""
        self.logs.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(create_database_if_missing, self.server_url, self.name)
        await _flush(self.env["FLASHORDER_REDIS_URL"])
        # Once, before the processes: concurrent first migrations would race. In a thread:
        # Alembic runs its own event loop.
        settings = self.settings
        await asyncio.to_thread(migrate, settings.effective_database_url)
        await ensure_topics(
            self.env["FLASHORDER_KAFKA_BOOTSTRAP"],
            partitions=settings.kafka_partitions,
            replication=settings.kafka_replication,
            prefix=settings.kafka_topic_prefix,
        )
        commands = {
            "api": [EXE, "serve", "--port", str(self.port), "--workers", str(self.workers)],
            "relay": [EXE, "relay"],
            "projector": [EXE, "projector"],
        }
        for kind in KINDS:
            self._spawn(kind, commands[kind])
        await self._wait_ready(timeout)

    def _spawn(self, kind: str, command: list[str]) -> None:
        with open(self.logs / f"{kind}.log", "wb") as out:
            # A session of its own, so that a stop reaches the API's workers too.
            self.procs[kind] = subprocess.Popen(
                command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                for kind, proc in self.procs.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"{kind} exited with {proc.returncode}: {self.logs}")
                try:
                    async with session.get(
                        self.base_url + "/readyz", timeout=aiohttp.ClientTimeout(total=3)
                    ) as answer:
                        if answer.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{self.base_url} not ready after {timeout}s (logs in {self.logs})")

    def dead(self) -> dict[str, int]:
        """The processes that exited, by kind, with their exit status (-9: SIGKILL)."""
        return {k: p.returncode for k, p in self.procs.items() if p.poll() is not None}

    def pids(self) -> dict[str, int]:
        return {kind: proc.pid for kind, proc in self.procs.items() if proc.poll() is None}

    async def down(self, *, drop: bool = True) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
        if drop:
            await asyncio.to_thread(drop_database, self.server_url, self.name)


def _bench_settings() -> dict[str, str]:
    """Settings the bench needs whatever the environment says (where this build has them)."""
    fields = Settings.model_fields
    env: dict[str, str] = {}
    if "jwt_secret" in fields and "FLASHORDER_JWT_SECRET" not in os.environ:
        # The stack's own secret: the documented development one is refused by a deployment.
        env["FLASHORDER_JWT_SECRET"] = secrets.token_hex(32)
    if "rate_ip_per_second" in fields:
        # The whole crowd comes from one address here, which the per-address flood limit
        # would refuse. Raised out of reach rather than turned off: its cost still counts.
        env["FLASHORDER_RATE_IP_PER_SECOND"] = "1000000000"
        env["FLASHORDER_RATE_IP_BURST"] = "1000000000"
    return env


async def _flush(url: str) -> None:
    client = Redis.from_url(url)
    try:
        async with asyncio.timeout(10):
            await client.flushdb()
    finally:
        await client.aclose()
