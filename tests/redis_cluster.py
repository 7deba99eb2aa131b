"""A small Redis Cluster of the test run's own: three masters on free ports of 127.0.0.1.

The contract suites run the Redis adapters against it as well as against one Redis, so the
cluster client (slot routing, cluster pipelines, scripts loaded per node) cannot drift.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from flashorder.adapters._redis.batch import Client


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Ports free both as themselves and as their cluster bus (port + 10000)."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(20_000, 50_000)
        if port not in chosen and _bindable(port) and _bindable(port + 10_000):
            chosen.append(port)
    return chosen


class RedisCluster:
    """``start()`` the servers and join them; ``stop()`` shuts them down and removes their
    files. ``url`` is the service's ``redis+cluster://`` setting for it."""

    def __init__(self, masters: int = 3) -> None:
        self.ports = _free_ports(masters)
        self.dir = Path(tempfile.mkdtemp(prefix="flashorder-cluster-"))
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self, timeout: float = 30) -> None:
        for port in self.ports:
            node = self.dir / str(port)
            node.mkdir()
            subprocess.run(
                [
                    "redis-server",
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(node / "nodes.conf"),
                    "--cluster-node-timeout", "2000",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(node),
                    "--daemonize", "yes",
                    "--pidfile", str(node / "redis.pid"),
                    "--logfile", str(node / "redis.log"),
                ],
                check=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not all(self._cli(port, "ping") == "PONG" for port in self.ports):
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis servers of {self.dir} do not answer")
            time.sleep(0.1)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
        )
        while not all("cluster_state:ok" in self._cli(p, "cluster", "info") for p in self.ports):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster of {self.dir} is not ok")
            time.sleep(0.1)

    def stop(self) -> None:
        for port in self.ports:
            self._cli(port, "shutdown", "nosave")
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _cli(port: int, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return done.stdout.strip()


def client(url: str) -> AsyncRedisCluster:
    """A cluster client for ``url`` (as bootstrap builds it, without its retry policy)."""
    nodes = url.removeprefix("redis+cluster://").rstrip("/").split(",")
    return AsyncRedisCluster(
        startup_nodes=[ClusterNode(n.rsplit(":", 1)[0], int(n.rsplit(":", 1)[1])) for n in nodes],
        socket_timeout=5,
    )


def contract_client(request: pytest.FixtureRequest, redis_url: str) -> Client:
    """The client of a contract suite's ``cluster`` parameter (the session's cluster), or of
    one Redis for any other."""
    if request.param == "cluster":
        return client(request.getfixturevalue("redis_cluster_url"))
    return Redis.from_pool(
        BlockingConnectionPool.from_url(redis_url, max_connections=32, timeout=10, socket_timeout=5)
    )
