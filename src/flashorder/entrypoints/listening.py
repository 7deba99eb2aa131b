"""The API workers' listening sockets: one per worker, so that the kernel spreads connections.

uvicorn's supervisor binds one socket and hands it to every worker: the workers then compete
for one accept queue, and whichever loop wakes first takes the whole burst. 64 keep-alive
connections opened at once went 57 to 7 between two workers, and a keep-alive connection
stays with the worker that took it, so one worker served almost the whole sale.

With ``SO_REUSEPORT`` each worker listens on a socket of its own bound to the same address,
and Linux hands each new connection to one of the listening sockets by a hash of its
addresses and ports: an even spread on average, whatever each worker's loop is doing.
``ReusePortSocket`` is the socket the supervisor passes on: bound in the supervisor (so a
port already taken fails there, as before) but never listening, so no connection ever waits
on it; each worker that unpickles it gets a fresh socket bound to the same address, which
uvicorn then listens on. A worker started again after a crash binds its own too.

The hazard: connections still waiting in a dying worker's queue are reset with it (with one
shared queue, another worker would have taken them). A client retries a reset connection
as any other transport error, and an order with an Idempotency-Key is safe to retry.
"""

from __future__ import annotations

import socket
from typing import Any

#: False where the platform has no SO_REUSEPORT (the workers then share one socket).
AVAILABLE = hasattr(socket, "SO_REUSEPORT")


class ReusePortSocket(socket.socket):
    """A bound, not listening, ``SO_REUSEPORT`` socket that a worker process receives as a
    fresh socket of its own on the same address (see the module)."""

    def __reduce__(self) -> tuple[Any, ...]:
        host, port = self.getsockname()[:2]
        return bound, (self.family, host, port)


def bound(family: int, host: str, port: int) -> ReusePortSocket:
    """A new TCP socket bound to ``host:port`` with ``SO_REUSEPORT``, not yet listening."""
    sock = ReusePortSocket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def supervisor_socket(host: str, port: int) -> ReusePortSocket:
    """The socket ``flashorder serve`` hands to its workers: bound here, listened on nowhere."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return bound(family, host, port)
