"""The full stack as OS processes on the local services: the one harness of the bench and of
the tests that start stacks (tests/e2e, tests/integration, tests/drills).

A ``Stack`` has a database of its own (created here, its schema made by the service's own
``flashorder migrate``, which also creates the Kafka topics; dropped at the end), its own
Kafka topics (a prefix) and consumer group, and one Redis database index, flushed at the
start. It runs ``flashorder serve`` (N workers), relays and projectors, each in a session of
its own so that a stop or a kill reaches an API's worker processes too. Only the service's
command and its documented ``FLASHORDER_*`` settings are used.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from flashorder_bench.procs import cpu_seconds, labelled
from flashorder_bench.settings import StackSettings

#: The service's command, installed beside this interpreter (the workspace's venv).
EXE = str(Path(sys.executable).with_name("flashorder"))
KINDS = ("api", "relay", "projector", "expirer")
_DATABASE_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_url(database_url: str) -> str:
    """``database_url`` without its database: the server, where stacks' databases are made."""
    url = make_url(database_url)
    # ``URL.set(database=None)`` leaves the database as it was: build the URL anew.
    server = URL.create(url.drivername, url.username, url.password, url.host, url.port)
    return server.render_as_string(hide_password=False)


def redis_url_with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def _plain(name: str) -> str:
    # The name goes into DDL, which takes no bind parameters: allow only a plain identifier.
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


def _ddl(server: str, statement: str) -> None:
    async def run() -> None:
        engine = create_async_engine(server, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


def create_database(server: str, name: str) -> None:
    """A MariaDB database for one stack (utf8mb4, binary collation, as the service's own)."""
    charset = "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    _ddl(server, f"CREATE DATABASE IF NOT EXISTS `{_plain(name)}` {charset}")


def drop_database(server: str, name: str) -> None:
    _ddl(server, f"DROP DATABASE IF EXISTS `{_plain(name)}`")


async def flush_redis(url: str) -> None:
    client = Redis.from_url(url)
    try:
        async with asyncio.timeout(10):
            await client.flushdb()
    finally:
        await client.aclose()


class Stack:
    """API workers, relays and projectors as OS processes on the real services.

    ``mariadb_url`` is the MariaDB server's URL without a database (the stack makes its
    own). ``start(kind)`` starts one more process of a kind (``api``, ``relay``,
    ``projector``); ``kill(kind)`` sends SIGKILL to the newest of that kind (a crash, not a
    shutdown). Everything here blocks: async callers run it in a thread.
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
        name_prefix: str = "flashorder_t",
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = f"{name_prefix}_{secrets.token_hex(4)}"
        self.server_url = mariadb_url.rstrip("/")
        self.database_url = f"{self.server_url}/{self.name}"
        self.redis_url = redis_url_with_db(redis_url, redis_db)
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
            # The API listens on 127.0.0.1 only, and the tests mint their tokens with the
            # development secret: allowed there, where the service otherwise refuses it with
            # a store configured.
            "FLASHORDER_ALLOW_DEV_SECRET": "1",
            **(extra_env or {}),
        }
        # A fresh folder: the API supervisor would otherwise reuse another run's metrics.
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {}
        #: The metrics ports of the relays and projectors, in start order.
        self.metrics_ports: dict[str, list[int]] = {}
        #: Set by ``down``: a start still under way (in another thread) stops starting.
        self._stopped = False

    @property
    def settings(self) -> StackSettings:
        """The settings every process of this stack runs with."""
        return StackSettings.from_env(self.env)

    def setup(self) -> None:
        """A fresh database with the schema, an empty Redis database, and the topics."""
        self.logs.mkdir(parents=True, exist_ok=True)
        create_database(self.server_url, self.name)
        asyncio.run(flush_redis(self.redis_url))
        # Once, before the processes: concurrent first migrations would race.
        with open(self.logs / "migrate.log", "wb") as out:
            subprocess.run(
                [EXE, "migrate"], env=self.env, stdout=out, stderr=subprocess.STDOUT, check=True
            )

    def start(self, kind: str) -> subprocess.Popen[bytes]:
        if self._stopped:
            raise RuntimeError(f"{self.name} was stopped")
        command = {
            "api": [EXE, "serve", "--port", str(self.port), "--workers", str(self.api_workers)],
            "relay": [EXE, "relay"],
            "projector": [EXE, "projector"],
            "expirer": [EXE, "expirer"],
        }[kind]
        running = self.procs.setdefault(kind, [])
        env = dict(self.env)
        if kind in ("relay", "projector"):
            # Each relay and projector serves its metrics on a port of its own.
            port = free_port()
            env[f"FLASHORDER_{kind.upper()}_METRICS_PORT"] = str(port)
            self.metrics_ports.setdefault(kind, []).append(port)
        with open(self.logs / f"{kind}-{len(running)}.log", "wb") as out:
            proc = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        running.append(proc)
        return proc

    def up(
        self, *, relays: int = 1, projectors: int = 1, expirers: int = 1, timeout: float = 300
    ) -> None:
        self.setup()
        self.start("api")
        for _ in range(relays):
            self.start("relay")
        for _ in range(projectors):
            self.start("projector")
        self.wait_ready(timeout)
        # Once the API answers: nothing waits for the expirer, and on a busy machine its start
        # would only slow the others'.
        for _ in range(expirers):
            self.start("expirer")

    def settle(self, *, window_s: float = 1.0, busy: float = 0.05, timeout: float = 60) -> bool:
        """Wait until the stack is at rest: its processes together used less than ``busy`` of
        a CPU over ``window_s``, so that no start-up (the expirer's, started last, with its
        imports and first pass) lands in the first phase's window. Idle processes still
        tick (the relay polls, the workers sample their loop): at rest is not zero. False if
        it was still busy after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = self._cpu_s()
            time.sleep(window_s)
            if self._cpu_s() - before < busy * window_s:
                return True
        return False

    def _cpu_s(self) -> float:
        # The API workers too: they are children of the supervisor, not in ``pids``.
        return sum(cpu_seconds(pid) or 0.0 for pid in labelled(self.pids()).values())

    def wait_ready(self, timeout: float = 300) -> None:
        # Generous: a healthy stack is ready in seconds, but on a loaded machine (a shared
        # runner) starting the Python processes alone can take a minute or two.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._stopped:
                raise RuntimeError(f"{self.name} was stopped while starting")
            for kind, procs in self.procs.items():
                for proc in procs:
                    # A kill or a stop of the test's own doing is not a failure to start.
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

    def dead(self) -> dict[str, int]:
        """The processes that exited, labelled as in ``pids``, with their exit status (a
        negative status is the signal that ended it: -9 is SIGKILL)."""
        return {
            label: proc.returncode
            for label, proc in self._labelled().items()
            if proc.poll() is not None
        }

    def pids(self) -> dict[str, int]:
        """The live processes: ``api``, ``relay``, ``projector`` (``relay-2``… for more)."""
        return {label: proc.pid for label, proc in self._labelled().items() if proc.poll() is None}

    def _labelled(self) -> dict[str, subprocess.Popen[bytes]]:
        return {
            kind if n == 0 else f"{kind}-{n + 1}": proc
            for kind, procs in self.procs.items()
            for n, proc in enumerate(procs)
        }

    def down(self, *, drop: bool = True) -> None:
        self._stopped = True
        for procs in self.procs.values():
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
        for procs in self.procs.values():
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if drop:
            drop_database(self.server_url, self.name)


def bench_env() -> dict[str, str]:
    """The settings a bench stack runs with whatever the environment says."""
    env = {"FLASHORDER_BENCH_ENDPOINTS": "true"}
    if "FLASHORDER_JWT_SECRET" not in os.environ:
        # The stack's own secret: the documented development one is refused by a deployment.
        env["FLASHORDER_JWT_SECRET"] = secrets.token_hex(32)
    # The whole crowd comes from one address here, which the per-address flood limit would
    # refuse. Raised out of reach rather than turned off: its cost still counts.
    env["FLASHORDER_RATE_IP_PER_SECOND"] = "1000000000"
    env["FLASHORDER_RATE_IP_BURST"] = "1000000000"
    return env
