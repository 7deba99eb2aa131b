"""The event topics: one per event type, created by the project (the broker auto-creates none).

Kafka keeps order only within a partition; events are keyed by aggregate id, so all events of
one order land in one partition and stay in order. Changing ``partitions`` later moves keys
to other partitions: pick it once, generously.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from flashorder.domain import errors
from flashorder.domain.events import EVENT_TYPES

log = logging.getLogger(__name__)

#: Topic names are the event types.
TOPICS: tuple[str, ...] = EVENT_TYPES


def topic_names(prefix: str = "") -> tuple[str, ...]:
    """The topics of one deployment. A prefix lets several deployments (or test runs) share
    a broker without reading each other's events."""
    return tuple(prefix + t for t in TOPICS)


def topic_for(event_type: str, prefix: str = "") -> str:
    return prefix + event_type


async def ensure_topics(
    bootstrap: str,
    *,
    partitions: int = 6,
    replication: int = 1,
    timeout: float = 15.0,
    prefix: str = "",
) -> list[str]:
    """Create the event topics that do not exist yet; returns the names it created.

    Safe to run from several processes at once: a topic another process created first
    counts as done. Raises Unavailable when the broker does not answer within ``timeout``.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout * 1000),
        client_id="flashorder-admin",
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in topic_names(prefix) if t not in existing]
            if not missing:
                return []
            response = await admin.create_topics(
                [NewTopic(t, partitions, replication) for t in missing],
                timeout_ms=int(timeout * 1000),
            )
    except (KafkaError, OSError, TimeoutError) as exc:
        raise errors.Unavailable("kafka", f"cannot create topics: {exc!r}") from exc
    finally:
        await _close(admin, timeout)

    created: list[str] = []
    for topic, code, *rest in response.topic_errors:
        if code == 0:
            created.append(topic)
        elif code != TopicAlreadyExistsError.errno:
            message = rest[0] if rest else ""
            raise errors.Unavailable("kafka", f"topic {topic}: {for_code(code).__name__} {message}")
    if created:
        log.info("kafka.topics_created", extra={"topics": created, "partitions": partitions})
    return created


async def _close(admin: AIOKafkaAdminClient, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            await admin.close()
    except (KafkaError, OSError, TimeoutError):
        log.warning("kafka.admin_close_failed", exc_info=True)
