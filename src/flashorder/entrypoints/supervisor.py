"""uvicorn's worker supervisor, with a dead worker noticed at once.

The supervisor checks each worker every half second by a ping over a pipe, and waits up to
``timeout_worker_healthcheck`` (60 s here: a worker starting on a saturated CPU answers late)
for the answer. uvicorn keeps the worker's end of that pipe open in the supervisor too, so
a worker killed while the supervisor waits for its answer never closes the pipe: the
supervisor waits the whole 60 s before it looks again and starts a replacement. The
worker-kill drill met it (a worker killed mid-sale, not replaced within 30 s, in 4 of 10
runs); the busier the worker, the longer each ping waits for it, and the likelier a kill
falls into one.

``Worker`` closes the supervisor's copy of the worker's end once the worker has its own:
the death of the worker then ends the wait at once (the pipe reports its end), and the
supervisor replaces it within its half-second beat.
"""

from __future__ import annotations

from socket import socket

from uvicorn import Config
from uvicorn.supervisors import multiprocess


class Worker(multiprocess.Process):
    """uvicorn's worker process, whose pipe ends with the worker (see the module)."""

    def start(self) -> None:
        super().start()
        # The child received its own copy of this end when it was spawned.
        self.child_conn.close()


def supervise(config: Config, sockets: list[socket]) -> None:
    """Run uvicorn's supervisor (``config.workers`` workers) until it is told to stop."""
    # The supervisor builds its workers by this module-level name; this process does nothing
    # else than supervise.
    setattr(multiprocess, "Process", Worker)  # noqa: B010
    multiprocess.Multiprocess(config, sockets=sockets).run()
