"""The service's settings the bench needs, read from the documented ``FLASHORDER_*``
environment variables (README, "Settings") with the documented defaults.

The bench imports nothing of the service: it reads the same variables the service reads,
passes them on to the processes it starts, and talks to the stores and the API with them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

#: The service's documented development secret (README): what a stack started without
#: ``FLASHORDER_JWT_SECRET`` signs with. The bench's own stacks get a random one instead.
DEV_JWT_SECRET = "flashorder-development-secret-change-me"

#: The stores of ``make services`` (scripts/services.sh), when no setting names others.
LOCAL_STORES = {
    "FLASHORDER_DATABASE_URL": "mysql+asyncmy://flashorder:flashorder@127.0.0.1:3306/flashorder",
    "FLASHORDER_REDIS_URL": "redis://127.0.0.1:6379/0",
    "FLASHORDER_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
}

Strategy = Literal["reserve", "lock"]


@dataclass(frozen=True, slots=True)
class StackSettings:
    """One stack's settings as the bench uses them (it crosses into the generator processes,
    so it is a plain value)."""

    database_url: str | None = None
    redis_url: str | None = None
    kafka_bootstrap: str | None = None
    kafka_topic_prefix: str = ""
    strategy: Strategy = "reserve"
    jwt_secret: str = DEV_JWT_SECRET
    jwt_issuer: str = "flashorder"
    jwt_audience: str = "flashorder-api"
    #: The command deadline: a 503 that came back sooner is not the deadline's.
    request_timeout_seconds: float = 15.0
    #: How often a queued sale admits its next batch (``FLASHORDER_QUEUE_TICK_SECONDS``).
    queue_tick_seconds: float = 0.25

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackSettings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            return env.get(f"FLASHORDER_{name}") or None

        strategy: Strategy = "lock" if get("STRATEGY") == "lock" else "reserve"
        return cls(
            database_url=get("DATABASE_URL"),
            redis_url=get("REDIS_URL"),
            kafka_bootstrap=get("KAFKA_BOOTSTRAP"),
            kafka_topic_prefix=get("KAFKA_TOPIC_PREFIX") or "",
            strategy=strategy,
            jwt_secret=get("JWT_SECRET") or DEV_JWT_SECRET,
            jwt_issuer=get("JWT_ISSUER") or "flashorder",
            jwt_audience=get("JWT_AUDIENCE") or "flashorder-api",
            request_timeout_seconds=float(get("REQUEST_TIMEOUT_SECONDS") or 15.0),
            queue_tick_seconds=float(get("QUEUE_TICK_SECONDS") or 0.25),
        )


def local_store(name: str, env: Mapping[str, str] | None = None) -> str:
    """A store of the full stack (``FLASHORDER_DATABASE_URL``, ``…_REDIS_URL`` or
    ``…_KAFKA_BOOTSTRAP``): from the environment (``make bench``), else the local one."""
    env = os.environ if env is None else env
    return env.get(name) or LOCAL_STORES[name]
