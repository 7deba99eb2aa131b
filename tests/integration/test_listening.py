"""The API workers' sockets: a flash crowd that connects at once is spread over the workers."""

from __future__ import annotations

import multiprocessing
import socket
import sys
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import pytest

from flashorder.entrypoints import listening

pytestmark = pytest.mark.skipif(
    not listening.AVAILABLE or sys.platform != "linux", reason="SO_REUSEPORT spreads on Linux"
)

WORKERS = 2
CONNECTIONS = 64


def _worker(
    sockets: list[socket.socket], ready: Queue[int], done: Event, counts: Queue[int]
) -> None:
    # As uvicorn's worker gets it: the supervisor's socket list, pickled by spawn.
    (sock,) = sockets
    sock.listen(CONNECTIONS)
    sock.settimeout(0.1)
    ready.put(1)
    accepted: list[socket.socket] = []
    while not done.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        accepted.append(conn)
    counts.put(len(accepted))
    for conn in accepted:
        conn.close()


def test_connections_opened_at_once_are_spread_over_the_workers() -> None:
    spawn = multiprocessing.get_context("spawn")
    supervisor = listening.supervisor_socket("127.0.0.1", 0)
    port = supervisor.getsockname()[1]
    ready: Queue[int] = spawn.Queue()
    counts: Queue[int] = spawn.Queue()
    done = spawn.Event()
    workers = [
        spawn.Process(target=_worker, args=([supervisor], ready, done, counts))
        for _ in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            ready.get(timeout=60)
        # The crowd: every connection opened before any worker's loop gets a turn.
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
        time.sleep(0.5)
        done.set()
        split = sorted(counts.get(timeout=30) for _ in workers)
    finally:
        done.set()
        for worker in workers:
            worker.join(timeout=30)
        supervisor.close()
    for client in clients:
        client.close()

    # Every connection went to a worker, none to the supervisor's socket (never listening).
    assert sum(split) == CONNECTIONS
    # By a hash of the client's port: about half each. One shared queue gave 57 to 7 here; a
    # fair hash falls below 16 of 64 about three times in 100,000.
    assert split[0] >= CONNECTIONS // 4, split
