"""The wait loop both lock adapters share: retry until taken, woken early by a release."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress

from flashorder.domain import errors


async def wait_for_signal(event: asyncio.Event, timeout: float) -> None:
    """Return when ``event`` is set or ``timeout`` seconds have passed, whichever is first."""
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
    # arrives as the event is set, and the cancelled task would go on to take the lock.
    if timeout > 0 and not event.is_set():
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()


async def retry_until_taken(
    name: str,
    attempt: Callable[[], Awaitable[float | None]],
    signal: asyncio.Event,
    *,
    deadline: float,
    max_retry_interval: float,
) -> None:
    """Call ``attempt`` until it takes lock ``name``; DuplicateInFlight once ``deadline`` passed.

    ``attempt`` answers None when it took the lock, else the seconds left on the holder's
    lease (negative: the lease has no expiry). Between attempts the loop waits for
    ``signal`` (set by a release), for the holder's lease to run out, or at most
    ``max_retry_interval`` seconds, whichever comes first: a lost wake-up costs latency only.
    """
    loop = asyncio.get_running_loop()
    while True:
        signal.clear()
        remaining_lease = await attempt()
        if remaining_lease is None:
            return
        left = deadline - loop.time()
        if left <= 0:
            raise errors.DuplicateInFlight(f"lock {name!r}")
        pause = min(left, max_retry_interval)
        if remaining_lease >= 0:
            pause = min(pause, remaining_lease)
        await wait_for_signal(signal, pause)
