"""Lua script calls of concurrent requests, sent to Redis together.

Under a flash sale every API process has dozens of requests at some step of the pipeline at
once (taking a rate-limit token, reserving, confirming), and each of those steps is one script
call. Sent one by one, each call pays redis-py's whole path: a pooled connection checked out
and back, a retry wrapper, a read timeout, a write and a wake-up of its own. That path, not
Redis, was the largest cost of a round trip here (about 0.2 ms of CPU).

``ScriptBatcher`` collects the calls made during one turn of the event loop and sends them
as one pipeline (``EVALSHA`` each, no transaction): one connection, one write, one read for
the lot. On a single Redis the batcher writes the pipeline itself: the calls packed into one
buffer, sent on a pooled connection under the client's own retry policy, each reply read in
turn. redis-py's ``Pipeline`` object did the same with a command stack, per-command options
and callbacks, and cost more CPU (docs/benchmarks.md, third round). A Redis Cluster's
pipeline (one per node) stays redis-py's.

Each call is still its own atomic script, executed in the order the calls were made; a call
alone in its turn goes out by itself (the same lean path on a single Redis, redis-py's
script call on a cluster). Scripts are loaded
only when Redis answers ``NOSCRIPT`` (a fresh or flushed Redis): those calls are sent again,
each on its own.

Failure: a connection error is retried as the client's retry policy says, then fails every
call of that pipeline (each caller gets an exception of its own); an error of one script (a
Lua error) fails that call alone. A caller cancelled while its call waits in a batch does
not withdraw the call: as with a call already written, Redis may still run it, which every
script here tolerates (they are idempotent or guarded by a token).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hiredis import pack_command
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import DataError, NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: A client of one Redis or of a Redis Cluster: every adapter here takes either.
Client = Redis | RedisCluster
Key = str | bytes
Arg = str | bytes | int | float


@dataclass(slots=True)
class _Call:
    script: AsyncScript
    keys: Sequence[Key]
    args: Sequence[Arg]
    answer: asyncio.Future[Any]


class ScriptBatcher:
    """One per Redis client and event loop, shared by the adapters on that client."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._waiting: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()
        self.pipelines = 0

    def register(self, source: str) -> BatchedScript:
        return BatchedScript(self, self._client.register_script(source))

    async def call(self, script: AsyncScript, keys: Sequence[Key], args: Sequence[Arg]) -> Any:
        return await self._queue(script, keys, args)

    async def call_each(
        self, script: AsyncScript, calls: Sequence[tuple[Sequence[Key], Sequence[Arg]]]
    ) -> list[Any]:
        """Several calls of one script (keys, args), in one batch; their answers in order."""
        answers = [self._queue(script, keys, args) for keys, args in calls]
        results: list[Any] = []
        failed: BaseException | None = None
        for answer in answers:
            try:
                results.append(await answer)
            except Exception as exc:
                failed = failed or exc
        if failed is not None:
            raise failed
        return results

    def _queue(
        self, script: AsyncScript, keys: Sequence[Key], args: Sequence[Arg]
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        call = _Call(script, keys, args, loop.create_future())
        self._waiting.append(call)
        if len(self._waiting) == 1:
            # After the callbacks already due in this turn: their calls join this batch.
            loop.call_soon(self._flush)
        return call.answer

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        task = asyncio.create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        if len(batch) == 1 and not isinstance(self._client, Redis):
            call = batch[0]
            try:
                result = await call.script(keys=call.keys, args=call.args)
            except Exception as exc:
                _settle(call, exc)
            else:
                _settle(call, result)
            return
        try:
            if len(batch) > 1:
                self.pipelines += 1
            if isinstance(self._client, Redis):
                results = await self._exchange(batch)
            else:
                results = await self._cluster_pipeline(batch)
        except Exception as exc:
            for call in batch:
                _settle(call, _fresh(exc))
            return
        for call, result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):
                try:
                    # AsyncScript loads itself after a NOSCRIPT.
                    result = await call.script(keys=call.keys, args=call.args)
                except Exception as exc:
                    result = exc
            _settle(call, result)

    async def _exchange(self, batch: list[_Call]) -> list[Any]:
        """One write of every call and their replies in order, on one pooled connection."""
        assert isinstance(self._client, Redis)
        packed = _pack(batch)
        pool = self._client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            # As redis-py's pipelines: a lost connection is dropped and the batch sent again
            # on a fresh one, as often as the client's retry policy allows.
            results: list[Any] = await conn.retry.call_with_retry(
                lambda: _write_and_read(conn, packed, len(batch)),
                lambda _error: conn.disconnect(),
            )
            return results
        finally:
            await pool.release(conn)

    async def _cluster_pipeline(self, batch: list[_Call]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for call in batch:
                # Not ``pipe.evalsha``: a cluster pipeline refuses that method, since a script
                # whose keys span slots cannot be routed. Every script here declares keys of
                # one slot, so the pipeline routes each call to its node: one write and one
                # read per node for the lot.
                pipe.execute_command(
                    "EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args
                )
            return await pipe.execute(raise_on_error=False)


async def _write_and_read(conn: AbstractConnection, packed: bytes, replies: int) -> list[Any]:
    await conn.send_packed_command(packed)
    results: list[Any] = []
    try:
        # One read timeout (the client's socket timeout) for the batch's replies together,
        # not one per reply: they come in one or two reads.
        async with asyncio.timeout(conn.socket_timeout):
            for _ in range(replies):
                try:
                    results.append(await conn.read_response(timeout=math.inf))
                except ResponseError as exc:
                    # A script's error is its call's answer; the other replies are still
                    # read, so that the connection goes back to the pool in step.
                    results.append(exc)
    except TimeoutError:
        # Replies may still come: the connection is out of step, and closed.
        await conn.disconnect(nowait=True)
        raise RedisTimeoutError(f"no reply from Redis within {conn.socket_timeout}s") from None
    return results


def _pack(batch: Sequence[_Call]) -> bytes:
    """The calls as Redis commands, in one buffer (hiredis's packer: a third of the CPU of
    one written in Python, a sixth of redis-py's)."""
    try:
        commands: list[Any] = [
            ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args) for call in batch
        ]
        return b"".join([pack_command(command) for command in commands])
    except TypeError as exc:
        # As redis-py refuses them: anything but text, bytes and numbers (booleans too).
        raise DataError(f"script keys and arguments are text, bytes or numbers: {exc}") from None


class BatchedScript:
    """A registered script whose calls go through a ``ScriptBatcher``: call it as redis-py's
    ``AsyncScript`` (``await script(keys=[...], args=[...])``)."""

    def __init__(self, batcher: ScriptBatcher, script: AsyncScript) -> None:
        self._batcher = batcher
        self._script = script

    async def __call__(self, keys: Sequence[Key] = (), args: Sequence[Arg] = ()) -> Any:
        return await self._batcher.call(self._script, keys, args)

    async def each(self, calls: Sequence[tuple[Sequence[Key], Sequence[Arg]]]) -> list[Any]:
        """Several calls in one batch; their answers in order."""
        return await self._batcher.call_each(self._script, calls)


def _settle(call: _Call, result: object) -> None:
    if call.answer.done():  # its caller was cancelled
        return
    if isinstance(result, BaseException):
        call.answer.set_exception(result)
    else:
        call.answer.set_result(result)


def _fresh(exc: Exception) -> Exception:
    """An exception of the same kind for each caller: one instance raised in many tasks would
    chain their tracebacks into one another."""
    try:
        return type(exc)(*exc.args)
    except Exception:
        return RedisError(f"{type(exc).__name__}: {exc}")
