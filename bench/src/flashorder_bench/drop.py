"""The queued drop (``queue``): one crowd, two drops of the same stock on one stack, one
bought head-on and one through the waiting room.

- **Without the queue** (``P<tag>_0000``, a plain product): every buyer sends its order at
  the start, the crowd spread over ``burst_s`` (an open-loop burst: a call's latency counts
  from when it was due). The fastest connections win, and the service takes the whole crowd
  at once.
- **With the queue** (``P<tag>_0001``, ``queued``, its pre-queue open at once, its start
  ``prequeue_s`` later): the same buyers join during the pre-queue (``late_share`` of them
  after the start), wait on their ticket, and order with their ``Admission-Token`` once
  admitted. They wait on the ticket's stream (``wait="stream"``: ``GET
  …/queue/{ticketId}/events``, one connection each, reopened if it ends early) or poll it
  (``wait="poll"``: ``GET …/queue/{ticketId}``, first within ``DRAW_SPREAD_S`` after the
  start, then at half the ticket's estimated wait, between ``POLL_MIN_S`` and
  ``poll_max_s``). A buyer stops at its order's answer, at a SOLD_OUT ticket, or after
  ``MAX_WAIT_S``.

Each buyer orders once on each side: 1 unit, or 1 or 2 when the product allows 2 or more.
Every call is recorded as the load generator records it (``Samples``), so that both sides
are measured alike and the promises are checked with the other scenarios' checks; the
tickets' ends (``TicketEnd``), read again from the service after the drop, feed the queue's
own checks (``checks``).

The crowd runs in the bench's own process, on the generator's lean client (``wire``, and
``sse`` for the streams): a polling buyer is a timer, a streaming one a socket.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

import httptools
import orjson

from flashorder_bench import scenarios
from flashorder_bench.auth import Mint, user_headers
from flashorder_bench.client import BenchClient
from flashorder_bench.samples import ORDER, QUEUE_JOIN, QUEUE_POLL, TRANSPORT_ERROR, Samples
from flashorder_bench.scenarios import Call, Job, ProductSeed, ScenarioSpec
from flashorder_bench.sse import EventStream
from flashorder_bench.stats import Latency, phase_stats
from flashorder_bench.wire import WireClient

#: A buyer who is still waiting this long after the start gives up (its ticket ends STUCK).
MAX_WAIT_S = 120.0
#: The shortest pause between two reads of one ticket.
POLL_MIN_S = 0.5
#: Polling buyers read their ticket first within this long after the start (the draw):
#: spread, as pages that reload on their own clocks would.
DRAW_SPREAD_S = 2.0
#: A stream that ends while its ticket waits is opened again at most this many times.
REOPENS = 3
#: Joins end this long before the start, so that a join sent "before the start" arrives
#: before it too.
JOIN_MARGIN_S = 0.5
#: How long the late buyers take to arrive, after the start.
LATE_WINDOW_S = 1.0
#: Tickets read again after the drop, at a time.
REREAD_PARALLEL = 32

#: Ticket statuses (the contract of issue 17, docs/queue.md).
WAITING, ADMITTED, SOLD_OUT, ORDERED = "WAITING", "ADMITTED", "SOLD_OUT", "ORDERED"
#: How a buyer's turn ended besides a ticket status: an order placed (``ORDERED``), an order
#: refused (``REFUSED:<problem type>``), a call that failed (``ERROR``), or still waiting at
#: ``MAX_WAIT_S`` (``STUCK``).
ERROR, STUCK, REFUSED = "ERROR", "STUCK", "REFUSED:"

#: How the buyers wait on their tickets.
Wait = Literal["stream", "poll"]


@dataclass(frozen=True, slots=True)
class DropPlan:
    """What a drop is asked to be (``BenchOptions``: ``--admission-rate``, ``--prequeue``,
    ``--burst``, ``--late-share``)."""

    admission_per_second: float | None
    wait: Wait = "stream"
    prequeue_s: float = 5.0
    burst_s: float = 1.0
    late_share: float = 0.1
    poll_max_s: float = 2.0
    timeout_s: float = 30.0
    #: The request deadline of the stack (a 503 that took this long is the deadline's).
    deadline_s: float = 15.0


@dataclass(frozen=True, slots=True)
class Buyer:
    index: int
    user: str
    quantity: int
    #: Joins after the start (the back of the line, in arrival order).
    late: bool


def crowd(spec: ScenarioSpec, late_share: float) -> list[Buyer]:
    """The crowd, the same for both sides: ``spec.requests`` distinct buyers, each taking 1
    or 2 units (only 1 when the product allows one per buyer); the last ``late_share`` of them
    join the queue after the start."""
    rng = random.Random(f"{spec.seed}:drop:{spec.tag}")
    late = round(spec.requests * late_share)
    most = min(2, spec.max_per_user or 2)
    return [
        Buyer(i, scenarios.user_id(spec, i), rng.randint(1, most), late=i >= spec.requests - late)
        for i in range(spec.requests)
    ]


class TicketEnd(NamedTuple):
    """One buyer's way through the queue, as the checks read it."""

    user: str
    ticket_id: str | None
    #: The join was answered before the start (surely in the draw), or sent after it.
    before_start: bool
    after_start: bool
    #: The order in which the joins were sent.
    join_rank: int
    #: The admission's ``admittedUntil`` (the service's clock; None: never admitted).
    admitted_until: datetime | None
    ended: str
    #: The ticket's status read again after the drop (None: not read).
    final: str | None
    order_id: str | None


@dataclass(frozen=True, slots=True)
class DropSide:
    """One side's figures. Latencies are in ms; ``wait`` (join → admitted, as the buyers saw
    it) and ``sold_out_notice`` (the last accepted order → a waiting ticket read SOLD_OUT)
    too."""

    name: str
    product_id: str
    buyers: int
    order_calls: int
    accepted: int
    units: int
    order_latency: Latency
    accepted_per_s: float
    #: From the first order call due to the last order answered.
    seconds: float
    server_errors: int
    deadline_503: int
    transport_errors: int
    #: The most order calls in flight at once (sent, not yet answered).
    peak_in_flight: int
    queue_calls: int = 0
    queue_latency: Latency | None = None
    wait: Latency | None = None
    admitted: int = 0
    #: Admissions over their span on the service's clock (``admittedUntil``).
    admitted_per_s: float | None = None
    sold_out_notice: Latency | None = None
    endings: dict[str, int] = field(default_factory=dict)


@dataclass
class DropOutcome:
    without: DropSide
    queued: DropSide
    admission_per_second: float | None
    tickets: list[TicketEnd]


@dataclass
class DropRun:
    """What the run folds into its answers and checks: each side's jobs (one order call per
    buyer, indexed by buyer) and samples."""

    outcome: DropOutcome
    jobs: list[Job]
    without: Samples
    queued: Samples


def queue_path(product_id: str, ticket_id: str | None = None) -> str:
    base = f"/api/v1/sales/{product_id}/queue"
    return base if ticket_id is None else f"{base}/{ticket_id}"


def problem_type(payload: Mapping[str, Any] | None) -> str:
    """The last segment of a problem's ``type`` (``urn:flashorder:problem:sold-out`` or
    ``…/sold-out`` → ``sold-out``)."""
    kind = str((payload or {}).get("type") or "unknown").rstrip("/")
    return kind.rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def peak_in_flight(samples: Samples, kind: int = ORDER) -> int:
    """The most calls of ``kind`` sent and not yet answered at one moment."""
    edges = sorted(
        edge
        for i in range(len(samples))
        if samples.kind[i] == kind
        for edge in ((samples.start[i], 1), (samples.end[i], -1))
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def admissions_per_second(admitted: Sequence[datetime]) -> float | None:
    """Admissions over the span from the first to the last (None: fewer than two, or all
    at one instant)."""
    if len(admitted) < 2:
        return None
    span = (max(admitted) - min(admitted)).total_seconds()
    return (len(admitted) - 1) / span if span > 0 else None


class _Caller:
    """The crowd's calls, recorded into a side's ``Samples``."""

    def __init__(self, base_url: str, timeout_s: float, headers: Mapping[str, Mapping[str, str]]):
        self.client = WireClient(base_url, timeout=timeout_s)
        self.headers = headers
        self.timeout_s = timeout_s
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    async def stream(
        self, samples: Samples, *, job: int, path: str, user: str
    ) -> EventStream | None:
        """Open a stream (recorded as a read of the ticket, answered at its first event's
        head); None if it could not be opened."""
        headers = {"Accept": "text/event-stream", **self.headers[user]}
        raw = self.client.encode("GET", path, headers, None)
        started = time.monotonic()
        stream, status, error = None, TRANSPORT_ERROR, None
        try:
            stream = await EventStream.open(self.host, self.port, raw, timeout=self.timeout_s)
            status = stream.status
        except (OSError, TimeoutError) as exc:
            error = type(exc).__name__
        samples.add(
            job=job,
            intended=started,
            start=started,
            end=time.monotonic(),
            status=status,
            kind=QUEUE_POLL,
            error=error,
        )
        if stream is not None and status != 200:
            stream.close()
            return None
        return stream

    async def read_ticket(
        self, samples: Samples, product: str, way: _Way
    ) -> tuple[int, dict[str, Any] | None]:
        """Read a buyer's ticket once (``GET …/queue/{ticketId}``), recorded as a queue read."""
        return await self.call(
            samples,
            job=way.buyer.index,
            kind=QUEUE_POLL,
            method="GET",
            path=queue_path(product, way.ticket_id),
            user=way.buyer.user,
        )

    async def call(
        self,
        samples: Samples,
        *,
        job: int,
        kind: int,
        method: str,
        path: str,
        user: str,
        body: bytes | None = None,
        extra: Mapping[str, str] | None = None,
        due: float | None = None,
    ) -> tuple[int, dict[str, Any] | None]:
        headers = {"Content-Type": "application/json", **self.headers[user], **(extra or {})}
        raw = self.client.encode(method, path, headers, body)
        status, payload, error = TRANSPORT_ERROR, None, None
        started = time.monotonic()
        try:
            status, answer = await self.client.call(raw)
            payload = orjson.loads(answer) if answer else None
        except (OSError, TimeoutError, httptools.HttpParserError, orjson.JSONDecodeError) as exc:
            error = type(exc).__name__
        found = payload if isinstance(payload, dict) else None
        order_id = None
        if kind == ORDER and 200 <= status < 300 and found is not None:
            order_id = str(found.get("orderId"))
        samples.add(
            job=job,
            intended=started if due is None else due,
            start=started,
            end=time.monotonic(),
            status=status,
            kind=kind,
            order_id=order_id,
            error=error,
        )
        return status, found


def _order_call(spec: ScenarioSpec, buyer: Buyer, product_id: str) -> Call:
    return Call(
        kind=ORDER,
        method="POST",
        path=scenarios.ORDERS_PATH,
        body=scenarios.order_body(buyer.user, product_id, buyer.quantity, spec.price),
        user_id=buyer.user,
        product_id=product_id,
        quantity=buyer.quantity,
    )


async def _until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def _head_on(
    caller: _Caller, spec: ScenarioSpec, plan: DropPlan, buyers: Sequence[Buyer], product: str
) -> tuple[Samples, list[Job]]:
    """Every buyer orders at the start, the crowd spread over ``burst_s``."""
    samples = Samples()
    jobs = [Job((_order_call(spec, b, product),)) for b in buyers]
    start = time.monotonic() + 0.2

    async def buy(buyer: Buyer) -> None:
        due = start + buyer.index * plan.burst_s / max(1, len(buyers))
        await _until(due)
        call = jobs[buyer.index].calls[0]
        await caller.call(
            samples,
            job=buyer.index,
            kind=ORDER,
            method="POST",
            path=call.path,
            user=buyer.user,
            body=call.body,
            due=due,
        )

    async with asyncio.TaskGroup() as group:
        for buyer in buyers:
            group.create_task(buy(buyer))
    return samples, jobs


@dataclass
class _Way:
    """One buyer's way through the queue while it runs."""

    buyer: Buyer
    join_rank: int = 0
    join_sent: float = 0.0
    joined: float | None = None
    ticket_id: str | None = None
    admitted_seen: float | None = None
    admitted_until: datetime | None = None
    ended: str = STUCK
    ended_at: float | None = None
    order_id: str | None = None
    final: str | None = None


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _pause(ticket: Mapping[str, Any], start: float, plan: DropPlan, rng: random.Random) -> float:
    """How long a waiting buyer waits before reading its ticket again: until some time in the
    ``DRAW_SPREAD_S`` after the draw, then half its estimated wait, within ``POLL_MIN_S`` and
    ``poll_max_s``."""
    now = time.monotonic()
    if now < start:
        return start - now + rng.uniform(0.0, DRAW_SPREAD_S)
    estimate = ticket.get("estimatedWaitSeconds")
    half = float(estimate) / 2 if isinstance(estimate, int | float) else plan.poll_max_s
    return min(max(half, POLL_MIN_S), plan.poll_max_s) * rng.uniform(0.9, 1.1)


async def _through_queue(
    caller: _Caller,
    client: BenchClient,
    spec: ScenarioSpec,
    plan: DropPlan,
    buyers: Sequence[Buyer],
    product: str,
) -> tuple[Samples, list[Job], list[_Way], float]:
    """Seed the queued product, run the pre-queue, the draw and the admissions to the end;
    returns the samples, the jobs, each buyer's way, and the start (monotonic)."""
    samples = Samples()
    jobs = [Job((_order_call(spec, b, product),)) for b in buyers]
    wall, now = time.time(), time.monotonic()
    start = now + plan.prequeue_s
    seed = ProductSeed(
        product,
        spec.stock,
        spec.price,
        spec.max_per_user,
        sale_starts_at=datetime.fromtimestamp(wall + plan.prequeue_s, UTC),
        queued=True,
        admission_per_second=plan.admission_per_second,
    )
    await client.seed([seed])
    early = [b for b in buyers if not b.late]
    late = [b for b in buyers if b.late]
    opened = time.monotonic()
    join_window = max(0.0, start - JOIN_MARGIN_S - opened)
    due = {b.index: opened + n * join_window / max(1, len(early)) for n, b in enumerate(early)}
    due |= {b.index: start + n * LATE_WINDOW_S / max(1, len(late)) for n, b in enumerate(late)}
    ranks = {index: rank for rank, index in enumerate(sorted(due, key=lambda i: (due[i], i)))}
    ways = [_Way(b, join_rank=ranks[b.index]) for b in buyers]
    give_up = start + MAX_WAIT_S
    rng = random.Random(f"{spec.seed}:drop-poll:{spec.tag}")

    async def wait_and_buy(way: _Way) -> None:
        buyer = way.buyer
        await _until(due[buyer.index])
        way.join_sent = time.monotonic()
        status, ticket = await caller.call(
            samples,
            job=buyer.index,
            kind=QUEUE_JOIN,
            method="POST",
            path=queue_path(product),
            user=buyer.user,
        )
        way.joined = time.monotonic()
        if ticket is None or status not in (200, 201):
            way.ended, way.ended_at = ERROR, time.monotonic()
            return
        way.ticket_id = str(ticket.get("ticketId"))
        waited = await (follow(way, ticket) if plan.wait == "stream" else poll(way, ticket))
        if waited is None:
            return
        state = str(waited.get("status"))
        if state == ADMITTED:
            await order(way, waited)
        else:
            way.ended, way.ended_at = state, time.monotonic()

    async def poll(way: _Way, ticket: dict[str, Any]) -> dict[str, Any] | None:
        """Read the ticket until it no longer waits; None (and the way's end) if that fails."""
        while ticket.get("status") == WAITING:
            if time.monotonic() > give_up:
                way.ended = STUCK
                return None
            await asyncio.sleep(_pause(ticket, start, plan, rng))
            status, read = await caller.read_ticket(samples, product, way)
            if read is None or status != 200:
                way.ended, way.ended_at = ERROR, time.monotonic()
                return None
            ticket = read
        return ticket

    async def follow(way: _Way, ticket: dict[str, Any]) -> dict[str, Any] | None:
        """Follow the ticket's stream until it no longer waits; None (and the way's end) if
        the stream cannot be had or the wait outlasts ``MAX_WAIT_S``."""
        path = f"{queue_path(product, way.ticket_id)}/events"
        opened = 0
        stream: EventStream | None = None
        try:
            while ticket.get("status") == WAITING:
                if stream is None:
                    if opened > REOPENS:
                        way.ended, way.ended_at = ERROR, time.monotonic()
                        return None
                    opened += 1
                    stream = await caller.stream(
                        samples, job=way.buyer.index, path=path, user=way.buyer.user
                    )
                    if stream is None:
                        continue
                left = give_up - time.monotonic()
                try:
                    if left <= 0:
                        raise TimeoutError
                    event = await stream.next(left)
                except TimeoutError:
                    way.ended = STUCK
                    return None
                if event is None:
                    stream.close()
                    stream = None
                    continue
                name, data = event
                if name != "ticket":
                    continue
                try:
                    ticket = orjson.loads(data)
                except orjson.JSONDecodeError:
                    way.ended, way.ended_at = ERROR, time.monotonic()
                    return None
        finally:
            if stream is not None:
                stream.close()
        return ticket

    async def order(way: _Way, ticket: Mapping[str, Any]) -> None:
        way.admitted_seen = time.monotonic()
        way.admitted_until = _instant(ticket.get("admittedUntil"))
        call = jobs[way.buyer.index].calls[0]
        status, answer = await caller.call(
            samples,
            job=way.buyer.index,
            kind=ORDER,
            method="POST",
            path=call.path,
            user=way.buyer.user,
            body=call.body,
            extra={"Admission-Token": str(ticket.get("admissionToken"))},
        )
        way.ended_at = time.monotonic()
        if 200 <= status < 300 and answer is not None:
            way.ended, way.order_id = ORDERED, str(answer.get("orderId"))
        elif 400 <= status < 500:
            way.ended = REFUSED + problem_type(answer)
        else:
            way.ended = ERROR

    async with asyncio.TaskGroup() as group:
        for way in ways:
            group.create_task(wait_and_buy(way))
    await _reread(caller, samples, product, ways)
    return samples, jobs, ways, start


async def _reread(caller: _Caller, samples: Samples, product: str, ways: Sequence[_Way]) -> None:
    """Read every ticket once more after the drop: how it ended on the service's side."""
    gate = asyncio.Semaphore(REREAD_PARALLEL)

    async def read(way: _Way) -> None:
        if way.ticket_id is None:
            return
        async with gate:
            status, ticket = await caller.read_ticket(samples, product, way)
        if status == 200 and ticket is not None:
            way.final = str(ticket.get("status"))

    async with asyncio.TaskGroup() as group:
        for way in ways:
            group.create_task(read(way))


def _side(
    name: str, product: str, buyers: int, samples: Samples, jobs: Sequence[Job], deadline_s: float
) -> DropSide:
    orders = Samples()
    for i in range(len(samples)):
        if samples.kind[i] == ORDER:
            orders.add(
                job=samples.job[i],
                intended=samples.intended[i],
                start=samples.start[i],
                end=samples.end[i],
                status=samples.status[i],
                kind=ORDER,
                order_id=samples.order_ids.get(i),
            )
    st = phase_stats(orders)
    late_503 = sum(
        1
        for i in range(len(samples))
        if samples.status[i] == 503 and samples.end[i] - samples.start[i] >= deadline_s
    )
    every = phase_stats(samples)
    units = sum(jobs[orders.job[i]].calls[0].quantity for i in orders.order_ids)
    return DropSide(
        name=name,
        product_id=product,
        buyers=buyers,
        order_calls=st.order_calls,
        accepted=st.accepted,
        units=units,
        order_latency=st.order_latency,
        accepted_per_s=st.accepted_per_s,
        seconds=st.busy_s,
        server_errors=every.server_errors - late_503,
        deadline_503=late_503,
        transport_errors=every.transport_errors,
        peak_in_flight=peak_in_flight(orders),
    )


def _queue_figures(side: DropSide, samples: Samples, ways: Sequence[_Way]) -> DropSide:
    queue_calls = [
        (samples.end[i] - samples.start[i])
        for i in range(len(samples))
        if samples.kind[i] in (QUEUE_JOIN, QUEUE_POLL)
    ]
    waits = [
        w.admitted_seen - w.join_sent
        for w in ways
        if w.admitted_seen is not None and w.joined is not None
    ]
    accepted_ends = [w.ended_at for w in ways if w.ended == ORDERED and w.ended_at is not None]
    sold_out_at = max(accepted_ends, default=None)
    notices = [
        max(0.0, w.ended_at - sold_out_at)
        for w in ways
        if w.ended == SOLD_OUT and w.ended_at is not None and sold_out_at is not None
    ]
    admitted = [w.admitted_until for w in ways if w.admitted_until is not None]
    return replace(
        side,
        queue_calls=len(queue_calls),
        queue_latency=Latency.of(queue_calls),
        wait=Latency.of(waits),
        admitted=sum(w.admitted_seen is not None for w in ways),
        admitted_per_s=admissions_per_second(admitted),
        sold_out_notice=Latency.of(notices),
        endings=dict(Counter(w.ended for w in ways).most_common()),
    )


def _ends(ways: Sequence[_Way], start: float) -> list[TicketEnd]:
    return [
        TicketEnd(
            user=w.buyer.user,
            ticket_id=w.ticket_id,
            before_start=w.joined is not None and w.joined < start,
            after_start=w.join_sent >= start,
            join_rank=w.join_rank,
            admitted_until=w.admitted_until,
            ended=w.ended,
            final=w.final,
            order_id=w.order_id,
        )
        for w in ways
    ]


async def drive(client: BenchClient, spec: ScenarioSpec, plan: DropPlan, mint: Mint) -> DropRun:
    """Both drops, one after the other, on the stack behind ``client``."""
    buyers = crowd(spec, plan.late_share)
    headers = user_headers(mint, (b.user for b in buyers))
    plain, queued = scenarios.product_id(spec, 0), scenarios.product_id(spec, 1)
    await client.seed([ProductSeed(plain, spec.stock, spec.price, spec.max_per_user)])
    caller = _Caller(client.base_url, plan.timeout_s, headers)
    try:
        head_on, jobs_a = await _head_on(caller, spec, plan, buyers, plain)
        through, jobs_b, ways, start = await _through_queue(
            caller, client, spec, plan, buyers, queued
        )
    finally:
        caller.client.close()
    without = _side("without the queue", plain, len(buyers), head_on, jobs_a, plan.deadline_s)
    side = _side("with the queue", queued, len(buyers), through, jobs_b, plan.deadline_s)
    outcome = DropOutcome(
        without=without,
        queued=_queue_figures(side, through, ways),
        admission_per_second=plan.admission_per_second,
        tickets=_ends(ways, start),
    )
    # One job list for both sides: the queued side's jobs follow the plain side's.
    shifted = Samples()
    for i in range(len(through)):
        shifted.add(
            job=through.job[i] + len(jobs_a),
            intended=through.intended[i],
            start=through.start[i],
            end=through.end[i],
            status=through.status[i],
            kind=through.kind[i],
            order_id=through.order_ids.get(i),
        )
    return DropRun(outcome, [*jobs_a, *jobs_b], head_on, shifted)


def admission_bound(rate: float, tick_s: float, window_s: float = 1.0) -> int:
    """The most admissions a queue pacing at ``rate`` may make in ``window_s``: the rate's
    share, plus the burst it may carry over (two ticks' worth: a late step catches up on at
    most that much, docs/waiting-room.md), plus one."""
    return math.ceil(rate * (window_s + 2 * tick_s)) + 1
