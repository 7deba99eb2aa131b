"""A worker's start while the database or the broker is down.

The relay, the projector and the expirer ride out an outage once they run (their loops log
the failure and try again). Their start must too: a worker started, or restarted by its
supervisor, while MariaDB restarts or before the broker is up (compose starts everything at
once) would otherwise exit at its first step, the schema migration or the topics' creation.
So a worker retries that step with a growing pause (0.25 s doubling to ``max_pause``), logging
each miss, until it succeeds or the process is stopped (SIGTERM ends it as usual: nothing was
done yet). Only a server that cannot be reached is waited for; one that refuses (a wrong
password, an unknown database, a broken migration) ends the process at once.

``flashorder serve`` and ``flashorder migrate`` do not wait: run by hand or by a deploy step,
they fail fast and say why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flashorder.adapters.sql.errors import is_unreachable
from flashorder.domain.errors import Unavailable

log = logging.getLogger(__name__)


def waiting_out_outages(
    step: Callable[[], object],
    *,
    what: str,
    max_pause: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Run ``step`` until it succeeds, waiting out failures to reach a server."""
    pause = 0.25
    while True:
        try:
            step()
        except Exception as exc:
            if not (isinstance(exc, Unavailable) or is_unreachable(exc)):
                raise
            log.warning(
                "startup.waiting",
                extra={"step": what, "error": f"{type(exc).__name__}: {exc}", "retry_in": pause},
            )
        else:
            return
        sleep(pause)
        pause = min(max_pause, pause * 2)
