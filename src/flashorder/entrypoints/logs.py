"""Logging for every process: the standard library's loggers, rendered by structlog.

The code logs one way: ``log = logging.getLogger(__name__)``, an event name as the message
and its fields in ``extra`` (``log.warning("relay.unavailable", extra={"error": ...})``).
``ExtraAdder`` copies those fields into the rendered line, so they reach the output as
keys of the JSON object (or ``key=value`` pairs on a console); libraries' records pass
through the same chain.
"""

from __future__ import annotations

import logging
from typing import TextIO

import structlog


def configure(level: str = "info", *, json: bool = False, stream: TextIO | None = None) -> None:
    """Send every record to one stream (stderr unless ``stream``) in one format. Called once,
    by the entrypoint of a process (never at import)."""
    pre_chain: list[structlog.types.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    rendering: list[structlog.types.Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta
    ]
    if json:
        # A traceback becomes one string field; the console renderer formats its own.
        rendering += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        # The standard library's traceback: the console renderer's default (rich, with every
        # frame's local variables) took 13 s of CPU for one 500 of the API, during which the
        # process's event loop answered nothing (every request of the host timed out after
        # a Redis failover), and it wrote the locals (tokens among them) to the log.
        rendering.append(
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            )
        )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=pre_chain, processors=rendering)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
