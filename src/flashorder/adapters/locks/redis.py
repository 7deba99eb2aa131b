"""A distributed lock on Redis whose waiters are woken by pub/sub when the holder lets go.

    key      P:lock:{<name>}            the holder's token, with the lease as its PX
    channel  P:lock-released:{<name>}   one message per release

Invariants: only the holder of the token extends or deletes the key (compare-and-* scripts),
so a holder whose lease ran out can never free a lock that someone else now holds.
A release message is only a hint: waiters also retry when the remaining lease runs out, and
at least every ``max_retry_interval``. A lost message (reconnect, subscribe race) costs
latency, never a stuck waiter.

All waiters of one ``RedisLocks`` share a single pub/sub connection (``_ReleaseFeed``),
subscribed to a lock's channel only while someone in this process waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from flashorder.adapters._redis import keys
from flashorder.adapters._redis.batch import Client, ScriptBatcher
from flashorder.adapters._redis.errors import FAILURES, text, translated
from flashorder.adapters.locks.waiting import retry_until_taken, wait_for_signal
from flashorder.domain import errors

log = logging.getLogger(__name__)

# Returns {1} when acquired, else {0, PTTL of the current holder}. Held under the caller's
# own token, the lock is the caller's: the cluster client sends a script again when the
# connection broke before its answer (a failover), and the first run may have taken it.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1} end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1}
end
return {0, redis.call('PTTL', KEYS[1])}
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], '')
  return 1
end
return 0
"""


@dataclass(slots=True)
class _Channel:
    #: One event per waiting holder, oldest first. A release message wakes one of them.
    waiters: list[asyncio.Event] = field(default_factory=list)
    #: Set once Redis confirmed the subscription: releases after that reach us.
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)


class _ReleaseFeed:
    """One pub/sub connection that routes release messages to the waiters of this process.

    Its listener task is the only user of the connection: waiters only register (``join``,
    ``leave``, both synchronous) and the listener subscribes to match. redis-py's async
    PubSub is not safe for two tasks at once: a health check or a reconnect inside a
    SUBSCRIBE sent by one task reads the socket while the listener reads it too.
    """

    def __init__(self, client: Client) -> None:
        self._pubsub = client.pubsub()
        self._channels: dict[str, _Channel] = {}
        self._changed = asyncio.Event()
        #: Channels the connection is subscribed to (or asked for), and those confirmed.
        self._asked: set[str] = set()
        self._confirmed: set[str] = set()
        self._listener: asyncio.Task[None] | None = None
        self._closing = False

    def join(self, channel: str) -> tuple[_Channel, asyncio.Event]:
        signal = asyncio.Event()
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
            if channel in self._confirmed:
                state.subscribed.set()
            else:
                self._changed.set()
        state.waiters.append(signal)
        if not self._closing and (self._listener is None or self._listener.done()):
            self._listener = asyncio.create_task(self._listen(), name="lock-release-feed")
        return state, signal

    def leave(self, channel: str, signal: asyncio.Event, *, pass_on: bool) -> None:
        state = self._channels.get(channel)
        if state is None:
            return
        state.waiters.remove(signal)
        if pass_on:
            # This waiter was woken but leaves without the lock: the wake-up is not lost.
            self._wake_one(state)
        if not state.waiters:
            del self._channels[channel]
            self._changed.set()

    @staticmethod
    def _wake_one(state: _Channel) -> None:
        # Waking one waiter per release (not all) avoids a thundering herd of retries on a
        # contended lock. Each process wakes one of its own, so some process always tries.
        for waiter in state.waiters:
            if not waiter.is_set():
                waiter.set()
                return

    async def _listen(self) -> None:
        failures = 0
        # The flag, not only the cancellation, ends the loop: redis-py sends commands
        # through wait_for, which on Python 3.11 can swallow a cancellation.
        while not self._closing:
            try:
                self._changed.clear()
                await self._sync()
                if not self._asked:
                    await self._changed.wait()
                    continue
                response = await self._read_unless_changed()
                if response is not None:
                    message = await self._pubsub.handle_message(response)  # type: ignore[no-untyped-call]
                    self._dispatch(message)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The next command or read reconnects, and redis-py then re-subscribes what
                # it knows. Waiters poll meanwhile.
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "lock.feed_interrupted", extra={"error": repr(exc)})
                self._asked = {text(channel) for channel in self._pubsub.channels}
                self._confirmed.clear()
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))

    async def _sync(self) -> None:
        wanted = set(self._channels)
        gone, new = self._asked - wanted, wanted - self._asked
        if gone:
            await self._pubsub.unsubscribe(*gone)
            self._asked -= gone
            self._confirmed -= gone
        if new:
            await self._pubsub.subscribe(*new)
            self._asked |= new

    async def _read_unless_changed(self) -> object:
        # Cancelling a pub/sub read loses no bytes (redis-py's own read timeouts do the
        # same); at worst a message parsed at that instant is dropped, and it is only a hint.
        reader = asyncio.ensure_future(self._pubsub.parse_response(block=False, timeout=5.0))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({reader, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            if not reader.done():
                reader.cancel()
                await asyncio.wait([reader])
        return None if reader.cancelled() else reader.result()

    def _dispatch(self, message: dict[str, object] | None) -> None:
        if message is None or message.get("channel") is None:
            return
        channel = text(message["channel"])
        if message["type"] == "subscribe":
            self._confirmed.add(channel)
        state = self._channels.get(channel)
        if state is None:
            return
        if message["type"] == "message":
            self._wake_one(state)
        elif message["type"] == "subscribe":
            state.subscribed.set()

    async def close(self) -> None:
        self._closing = True
        self._changed.set()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.wait([self._listener])
            self._listener = None
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py


class RedisLocks:
    """``Locks`` on Redis: a token per holder, a renewed lease, waiters woken on release.

    Call ``close()`` on shutdown to stop the shared pub/sub listener.
    """

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = "fo",
        default_wait: float = 5.0,
        default_lease: float = 10.0,
        max_retry_interval: float = 0.1,
        batcher: ScriptBatcher | None = None,
    ) -> None:
        self._prefix = prefix
        self._default_wait = default_wait
        self._default_lease = default_lease
        self._max_retry = max_retry_interval
        # Taking and letting go ride in shared pipelines (see _redis.batch); renewals are rare.
        batcher = batcher or ScriptBatcher(client)
        self._acquire_script = batcher.register(_ACQUIRE)
        self._renew_script = client.register_script(_RENEW)
        self._release_script = batcher.register(_RELEASE)
        self._feed = _ReleaseFeed(client)

    def key(self, name: str) -> str:
        """The Redis key of lock ``name`` (for operators and tests; not part of ``Locks``)."""
        return keys.lock(self._prefix, name)

    def _channel(self, name: str) -> str:
        return keys.lock_channel(self._prefix, name)

    @asynccontextmanager
    async def hold(
        self, name: str, *, wait: float | None = None, lease: float | None = None
    ) -> AsyncIterator[None]:
        """Hold ``name`` for the body; raises DuplicateInFlight after ``wait`` seconds."""
        wait_s = self._default_wait if wait is None else wait
        lease_ms = max(1, int(1000 * (self._default_lease if lease is None else lease)))
        key = self.key(name)
        token = uuid.uuid4().hex
        try:
            await self._acquire(name, key, token, wait_s, lease_ms)
        except asyncio.CancelledError:
            # Cancelled while an attempt was in flight, Redis may have granted the lock to
            # this holder, which never learns it: give it back by its token (a no-op when it
            # was not granted), or every other waiter would wait out the lease.
            await asyncio.shield(self._let_go(name, key, token, held=False))
            raise
        done = asyncio.Event()
        # Most holds end long before a third of the lease: a timer, not a task per hold,
        # starts the renewals only for a body that is still running then.
        renewal: asyncio.Task[None] | None = None

        def renew_from_now_on() -> None:
            nonlocal renewal
            renewal = asyncio.create_task(self._renew(name, key, token, lease_ms, done))

        timer = asyncio.get_running_loop().call_later(lease_ms / 3000, renew_from_now_on)
        try:
            yield
        finally:
            done.set()
            timer.cancel()
            if renewal is not None:
                renewal.cancel()
            await self._let_go(name, key, token)
            if renewal is not None:
                await asyncio.wait([renewal])

    async def close(self) -> None:
        """Stop the pub/sub listener and close its connection."""
        await self._feed.close()

    async def _try(self, key: str, token: str, lease_ms: int) -> int | None:
        """None when acquired, else the holder's remaining lease in ms (-1: no expiry)."""
        # Hazard: cancelled while this is in flight, Redis may grant the lock to a holder that
        # never learns it; ``hold`` then releases it by its token.
        with translated():
            result = await self._acquire_script(keys=[key], args=[token, lease_ms])
        return None if int(result[0]) == 1 else int(result[1])

    async def _acquire(self, name: str, key: str, token: str, wait: float, lease_ms: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        if await self._try(key, token, lease_ms) is None:
            return
        if loop.time() >= deadline:
            raise errors.DuplicateInFlight(f"lock {name!r}")
        channel = self._channel(name)
        state, signal = self._feed.join(channel)
        acquired = False
        try:
            # Retry only once subscribed: a release between our attempt and the subscription
            # would otherwise go unheard until the next poll.
            await wait_for_signal(state.subscribed, min(deadline - loop.time(), self._max_retry))

            async def attempt() -> float | None:
                remaining_lease_ms = await self._try(key, token, lease_ms)
                if remaining_lease_ms is None or remaining_lease_ms < 0:
                    return remaining_lease_ms
                return (remaining_lease_ms + 1) / 1000

            await retry_until_taken(
                name, attempt, signal, deadline=deadline, max_retry_interval=self._max_retry
            )
            acquired = True
        finally:
            self._feed.leave(channel, signal, pass_on=not acquired and signal.is_set())

    async def _renew(
        self, name: str, key: str, token: str, lease_ms: int, done: asyncio.Event
    ) -> None:
        # ``done`` ends the loop even when a cancellation was swallowed (see ``_listen``).
        # Started a third of the lease into the hold: renew now, then every third.
        while not done.is_set():
            try:
                held = int(await self._renew_script(keys=[key], args=[token, lease_ms]))
            except FAILURES as exc:
                # The lease may still hold; keep trying until the body ends.
                log.warning("lock.renew_failed", extra={"lock": name, "error": repr(exc)})
            else:
                if not held:
                    log.warning("lock.lost_before_renewal", extra={"lock": name})
                    return
            await wait_for_signal(done, lease_ms / 3000)

    async def _let_go(self, name: str, key: str, token: str, *, held: bool = True) -> None:
        """Release by token. ``held=False``: perhaps never granted (a cancelled attempt)."""
        # Failing here must not fail the body, whose work is done: the lease frees the lock.
        try:
            released = int(
                await self._release_script(keys=[key], args=[token, self._channel(name)])
            )
        except FAILURES as exc:
            log.warning("lock.release_failed", extra={"lock": name, "error": repr(exc)})
            return
        if not released and held:
            log.warning("lock.lost_before_release", extra={"lock": name})
