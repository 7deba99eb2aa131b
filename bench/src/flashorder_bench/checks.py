"""The service's promises (docs/design.md), checked in the stores once the events are
drained, and the checks that keep a run from passing by accident.

Every check is one ``Check``: PASS, FAIL, or SKIP when it does not apply to the run. A check
with nothing to look at fails (an empty set of products passes nothing), and so does one
that cannot run on a ``--target`` stack unless the run was told to skip it.

The stores are read through ``stores`` (every query limited to the run's products by their
id prefix, so the checks hold on a shared database too); the functions here only judge.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from flashorder_bench.answers import Answers
from flashorder_bench.drop import (
    ORDERED,
    REFUSED,
    SOLD_OUT,
    DropSide,
    TicketEnd,
    admission_bound,
)
from flashorder_bench.kafka_events import CreatedEvents
from flashorder_bench.report import Check
from flashorder_bench.stats import percentile
from flashorder_bench.stores import CANCELLED, OrderTimes, ReadModel, WriteModel

PAID, CREATED, EXPIRED = "PAID", "CREATED", "EXPIRED"

#: What ``--skip-check`` may name: the checks that need a store the settings may not give.
SKIPPABLE = ("database", "gate", "events")
#: The share of its order calls a phase with stock for all must accept at least.
AMPLE_FLOOR = 0.9


def unavailable(name: str, why: str, skipped: Sequence[str], key: str) -> Check:
    """A check that cannot run: SKIP if ``key`` is in ``skipped`` (``--skip-check``), else
    FAIL, so that a run missing a setting does not pass by leaving its checks out."""
    if key in skipped:
        return Check.skipped(name, f"{why} (--skip-check {key})")
    return Check.of(name, False, f"cannot run: {why}; --skip-check {key} to leave it out")


def _nothing(name: str, what: str) -> Check:
    return Check.of(name, False, f"nothing to check: {what}")


def drained_check(drained: bool, seconds: float, projectors: int, needed: bool) -> Check:
    name = "events drained (/readyz lag 0, a live projector)"
    if needed and projectors < 1:
        return Check.of(name, False, f"no projector reported in /readyz after {seconds:.1f}s")
    return Check.of(name, drained, f"after {seconds:.1f}s, {projectors} projector(s)")


def balance_problems(model: WriteModel) -> list[str]:
    """Each product whose ``available`` is negative or whose stock is not ``available`` plus
    the units of its live orders (which also catches units sold beyond the stock)."""
    sold = model.sales()
    return [
        f"{p}: {row.stock} != {row.available} + {sold.get(p, (0, 0))[0]}"
        for p, row in model.products.items()
        if row.available < 0 or row.stock != row.available + sold.get(p, (0, 0))[0]
    ]


def stock_checks(model: WriteModel, answers: Answers) -> list[Check]:
    names = (
        "accepted <= stock (no oversell)",
        "stock == available + sold (database)",
        "every accepted order is committed",
    )
    if not model.products:
        return [_nothing(n, "no product of the run in the database") for n in names]
    sold = model.sales()
    over = [
        f"{p}: {answers.accepted_units.get(p, 0)} accepted / {sold.get(p, (0, 0))[0]} sold "
        f"of {row.stock}"
        for p, row in model.products.items()
        if answers.accepted_units.get(p, 0) > row.stock or sold.get(p, (0, 0))[0] > row.stock
    ]
    unbalanced = balance_problems(model)
    units = sum(answers.accepted_units.values())
    total = sum(row.stock for row in model.products.values())
    missing = answers.accepted_orders - model.orders.keys()
    committed = (
        Check.of(
            names[2],
            not missing,
            f"{len(missing)} accepted but absent, e.g. {sorted(missing)[:2]}"
            if missing
            else f"{len(answers.accepted_orders):,} accepted, {len(model.orders):,} in database",
        )
        if answers.accepted_orders
        else _nothing(names[2], "no order was accepted")
    )
    return [
        Check.of(
            names[0],
            not over,
            "; ".join(over[:3])
            or f"{units:,} units accepted of {total:,} in stock over {len(model.products):,} "
            "products",
        ),
        Check.of(
            names[1],
            not unbalanced,
            "; ".join(unbalanced[:3]) or f"{len(model.products):,} products balance",
        ),
        committed,
    ]


def sold_out_check(model: WriteModel, answers: Answers, hot: Sequence[str]) -> Check:
    """A hot sale chases its stock with many more requests than units: each of its products
    must end with nothing available, and the accepted units must be its stock (no
    undersell: a run that refused what it could have sold fails)."""
    name = "hot sale sold out (available 0, accepted units == stock)"
    if not hot:
        return _nothing(name, "no hot product in the run")
    problems = []
    for product_id in hot:
        row = model.products.get(product_id)
        if row is None:
            problems.append(f"{product_id}: not in the database")
            continue
        accepted = answers.accepted_units.get(product_id, 0)
        if row.available != 0 or accepted != row.stock:
            problems.append(
                f"{product_id}: {row.available} of {row.stock} still available, "
                f"{accepted} units accepted"
            )
    return Check.of(
        name, not problems, "; ".join(problems[:3]) or f"{len(hot)} hot product(s) sold out"
    )


@dataclass(frozen=True, slots=True)
class Floor:
    """A phase's accepted orders (or calls answered 2xx) and the least it must have."""

    phase: str
    accepted: int
    least: int


def sale_floor(phase: str, accepted: int, stock: int, max_quantity: int = 2) -> Floor:
    """A sale that sells out accepts at least its stock over the largest quantity asked."""
    return Floor(phase, accepted, max(1, math.ceil(stock / max_quantity)))


def ample_floor(phase: str, accepted: int, order_calls: int) -> Floor:
    """A phase with stock for every order accepts nearly every order call."""
    return Floor(phase, accepted, max(1, math.ceil(AMPLE_FLOOR * order_calls)))


def floor_check(floors: Sequence[Floor]) -> Check:
    name = "accepted orders at or above the floor of each phase"
    if not floors:
        return _nothing(name, "no measured phase")
    low = [
        f"{f.phase}: {f.accepted:,} accepted < {f.least:,}" for f in floors if f.accepted < f.least
    ]
    return Check.of(
        name,
        not low,
        "; ".join(low[:3])
        or ", ".join(f"{f.phase} {f.accepted:,} >= {f.least:,}" for f in floors[:4]),
    )


def gate_check(model: WriteModel, counts: Mapping[str, int | None]) -> Check:
    name = "Redis gate count == database available"
    if not model.products:
        return _nothing(name, "no product of the run in the database")
    differ = [
        f"{p}: gate {counts.get(p)} != database {row.available}"
        for p, row in model.products.items()
        if counts.get(p) != row.available
    ]
    return Check.of(
        name, not differ, "; ".join(differ[:3]) or f"{len(model.products):,} products agree"
    )


def limit_check(model: WriteModel) -> Check:
    name = "at most maxPerUser per user"
    if not model.products:
        return _nothing(name, "no product of the run in the database")
    limited = {p: row.max_per_user for p, row in model.products.items() if row.max_per_user}
    if not limited:
        return Check.skipped(name, "no product of the run has a limit")
    held = model.held()
    over = [
        f"{user} holds {n} of {p} (max {limited[p]})"
        for (user, p), n in held.items()
        if p in limited and n > limited[p]
    ]
    most = max((n for (_, p), n in held.items() if p in limited), default=0)
    return Check.of(
        name, not over, "; ".join(over[:3]) or f"{len(held):,} holdings, the largest {most}"
    )


def idempotency_check(model: WriteModel, answers: Answers, recorded: Counter[str]) -> Check:
    """Each key named at most one order in its answers, and in the database each order of
    the run is the one order of exactly one recorded key (``recorded``: order → records)."""
    name = "one order per Idempotency-Key"
    if not answers.key_orders:
        return _nothing(name, "no call carried an Idempotency-Key")
    if not model.orders:
        return _nothing(name, "no order of the run in the database")
    split = {k: v for k, v in answers.key_orders.items() if len(v) > 1}
    unkeyed = [o for o in model.orders if recorded[o] != 1]
    outcomes = ", ".join(f"{k}: {n:,}" for k, n in answers.retry_outcomes().items())
    problems = [f"key {k} got orders {sorted(v)}" for k, v in list(split.items())[:2]]
    problems += [f"order {o} has {recorded[o]} key records" for o in unkeyed[:2]]
    return Check.of(
        name,
        not split and not unkeyed,
        "; ".join(problems) or f"{len(answers.key_orders):,} keys; answers {outcomes}",
    )


def events_check(model: WriteModel, created: CreatedEvents) -> Check:
    name = "exactly one order.created per committed order (Kafka)"
    if not model.orders:
        return _nothing(name, "no order of the run in the database")
    wrong = [o for o in model.orders if len(created.event_ids.get(o, ())) != 1]
    phantom = [o for o in created.event_ids if o not in model.orders]
    distinct = sum(len(ids) for ids in created.event_ids.values())
    problems = [f"order {o}: {len(created.event_ids.get(o, ()))} events" for o in wrong[:2]]
    problems += [f"event for unknown order {o}" for o in phantom[:2]]
    return Check.of(
        name,
        not wrong and not phantom,
        "; ".join(problems)
        or f"{distinct:,} events for {len(model.orders):,} orders "
        f"({created.messages - distinct:,} redelivered copies)",
    )


def read_model_differences(model: WriteModel, read: ReadModel) -> list[str]:
    """How the read model differs from the write model; [] if they agree. A product whose
    every order was cancelled may have a row of zeros, or none."""
    found: list[str] = []
    if missing := model.orders.keys() - read.views.keys():
        found.append(f"{len(missing)} orders have no view, e.g. {sorted(missing)[0]}")
    if extra := read.views.keys() - model.orders.keys():
        found.append(f"{len(extra)} views of orders that do not exist, e.g. {sorted(extra)[0]}")
    stale = sorted(
        o for o in model.orders.keys() & read.views.keys() if read.views[o] != model.orders[o]
    )
    if stale:
        found.append(
            f"{len(stale)} views differ, e.g. {stale[0]}: {read.views[stale[0]]} != "
            f"{model.orders[stale[0]]}"
        )
    sales = model.sales()
    for product_id in sorted(sales.keys() | read.sales.keys()):
        if read.sales.get(product_id, (0, 0)) != sales.get(product_id, (0, 0)):
            found.append(
                f"sales of {product_id}: read {read.sales.get(product_id)} != write "
                f"{sales.get(product_id)}"
            )
    return found


def read_model_check(model: WriteModel, read: ReadModel) -> Check:
    name = "read model == write model"
    if not model.orders:
        return _nothing(name, "no order of the run in the database")
    problems = read_model_differences(model, read)
    return Check.of(
        name,
        not problems,
        "; ".join(problems[:3])
        or f"{len(read.views):,} order views, {len(read.sales):,} product sales agree",
    )


def answer_checks(answers: Answers, *, open_loop: bool) -> list[Check]:
    found = [
        Check.of(
            "no 5xx answers (closed loop, ceiling)",
            answers.server_errors == 0,
            f"{answers.server_errors:,} 5xx",
        ),
        Check.of(
            "no transport errors (closed loop)",
            answers.transport_errors == 0,
            f"{answers.transport_errors:,} calls without an answer",
        ),
    ]
    if open_loop:
        found.append(
            Check.of(
                "open loop: no 5xx but the request deadline's 503",
                answers.open_server_errors == 0,
                f"{answers.open_server_errors:,} other 5xx; "
                f"{answers.deadline_answers:,} 503 at the deadline",
            )
        )
    return found


def _expired_units(orders: Sequence[OrderTimes]) -> tuple[int, datetime | None]:
    """The units of a product's expired orders, and when the first of them expired."""
    expired = [o for o in orders if o.status == EXPIRED]
    return sum(o.units for o in expired), min((o.updated_at for o in expired), default=None)


def _resold_units(orders: Sequence[OrderTimes], first_expiry: datetime | None) -> int:
    """The units of the orders placed once units had come back (whatever became of them)."""
    if first_expiry is None:
        return 0
    return sum(o.units for o in orders if o.status != CANCELLED and o.created_at >= first_expiry)


def noshow_balance_check(model: WriteModel) -> Check:
    """At the end of a sale with deadlines, each unit is paid for, held by an unpaid order
    within its deadline, or on the shelf: nothing is lost with the orders that expired."""
    name = "paid + unpaid holds + available == stock"
    if not model.products:
        return _nothing(name, "no product of the run in the database")
    units: dict[tuple[str, str], int] = Counter()
    for order_id, lines in model.items.items():
        for product_id, quantity in lines:
            units[(product_id, model.orders[order_id].status)] += quantity
    problems = []
    for p, row in model.products.items():
        paid, held = units[(p, PAID)], units[(p, CREATED)]
        if paid + held + row.available != row.stock:
            problems.append(f"{p}: {paid} paid + {held} held + {row.available} != {row.stock}")
    return Check.of(
        name,
        not problems,
        "; ".join(problems[:3])
        or ", ".join(
            f"{p}: {units[(p, PAID)]} paid + {units[(p, CREATED)]} held + {row.available} "
            f"== {row.stock}"
            for p, row in list(model.products.items())[:3]
        ),
    )


def resold_check(model: WriteModel, times: Mapping[str, Sequence[OrderTimes]]) -> Check:
    """Every unit that came back from an expired order was sold again or is on the shelf:
    the units of the orders placed after the first expiry, plus what is available, cover
    the expired units (an expiry that did not give its units back fails here)."""
    name = "every expired unit sold again or back on the shelf"
    if not model.products:
        return _nothing(name, "no product of the run in the database")
    problems, told = [], []
    for p, row in model.products.items():
        orders = times.get(p, ())
        expired, first = _expired_units(orders)
        resold = _resold_units(orders, first)
        told.append(f"{p}: {expired} expired, {resold} resold, {row.available} on the shelf")
        if expired > resold + row.available:
            problems.append(told[-1])
    return Check.of(name, not problems, "; ".join((problems or told)[:3]))


def expiry_seen_check(times: Mapping[str, Sequence[OrderTimes]]) -> Check:
    """A no-show run proves nothing unless an order expired and its units sold again: a run
    in which no deadline passed (or nobody bought afterwards) fails."""
    name = "at least one order expired and one unit resold"
    expired = resold = 0
    for orders in times.values():
        units, first = _expired_units(orders)
        expired += units
        resold += _resold_units(orders, first)
    detail = f"{expired} units expired, {resold} resold"
    if lateness := expiry_lateness(times):
        detail += f"; off the shelf after the deadline {_spread(lateness)}"
    if running := expiry_lateness(times, running=True):
        detail += f"; deadlines once the expirer ran {_spread(running)}"
    return Check.of(name, expired > 0 and resold > 0, detail)


def _spread(lateness: Sequence[float]) -> str:
    return (
        f"p50 {percentile(lateness, 50):.2f}s, p99 {percentile(lateness, 99):.2f}s "
        f"({len(lateness)} orders)"
    )


def expiry_lateness(
    times: Mapping[str, Sequence[OrderTimes]], *, running: bool = False
) -> list[float]:
    """Seconds from each expired order's deadline to its expiry (its units back on sale),
    sorted. ``running``: only the orders whose deadline came after the first expiry, when
    an expirer was surely at work (the bench's stack starts its expirer last, unwaited)."""
    expired = [o for orders in times.values() for o in orders if o.status == EXPIRED]
    first = min((o.updated_at for o in expired), default=None)
    seen: dict[str, float] = {}
    for o in expired:
        if not running or (first is not None and o.pay_by >= first):
            seen[o.order_id] = (o.updated_at - o.pay_by).total_seconds()
    return sorted(seen.values())


# The queued drop (``drop``): the queue's promises beside the service's.

#: Ticket statuses after the drop that fit an admitted buyer whose order found no unit left.
_ADMITTED_FOR_NOTHING = frozenset({SOLD_OUT, "EXPIRED", "ADMITTED"})
#: A buyer refused for want of stock after its admission.
SOLD_OUT_REFUSAL = f"{REFUSED}sold-out"
#: Fewer admitted pre-start buyers than this say nothing about the draw.
DRAW_MIN = 20


def one_order_per_buyer_check(model: WriteModel, product_ids: Sequence[str]) -> Check:
    """Each buyer of a drop sent one order call per product: in the database, each (user,
    product) has at most one order, whatever its status."""
    name = "nobody ordered twice (one order per buyer and product)"
    wanted = [p for p in product_ids if p in model.products]
    if not wanted:
        return _nothing(name, "no product of the drop in the database")
    orders: Counter[tuple[str, str]] = Counter()
    for order_id, lines in model.items.items():
        for product_id in {p for p, _ in lines if p in wanted}:
            orders[(model.orders[order_id].user_id, product_id)] += 1
    twice = [f"{u} has {n} orders of {p}" for (u, p), n in orders.items() if n > 1]
    return Check.of(
        name,
        not twice and bool(orders),
        "; ".join(twice[:3])
        or (f"{len(orders):,} buyers, one order each" if orders else "no order at all"),
    )


def admitted_orders_check(
    model: WriteModel, product_id: str, tickets: Sequence[TicketEnd]
) -> Check:
    """Every order of the queued product is a buyer's whose ticket was admitted, each ticket
    has at most one order, and no two buyers share a ticket."""
    name = "queued product: each order by an admitted ticket, at most one per ticket"
    if not tickets:
        return _nothing(name, "no ticket")
    buyers = [
        model.orders[o].user_id
        for o, lines in model.items.items()
        if any(p == product_id for p, _ in lines)
    ]
    if not buyers:
        return _nothing(name, f"no order of {product_id} in the database")
    admitted = {t.user for t in tickets if t.admitted_until is not None}
    shared = [i for i, n in Counter(t.ticket_id for t in tickets if t.ticket_id).items() if n > 1]
    unadmitted = sorted({u for u in buyers if u not in admitted})
    twice = sorted(u for u, n in Counter(buyers).items() if n > 1)
    problems = [f"ticket {i} given to several buyers" for i in shared[:2]]
    problems += [f"{u} ordered without an admission" for u in unadmitted[:2]]
    problems += [f"{u} ordered twice" for u in twice[:2]]
    return Check.of(
        name,
        not problems,
        "; ".join(problems) or f"{len(buyers):,} orders by {len(admitted):,} admitted tickets",
    )


def tickets_end_check(tickets: Sequence[TicketEnd]) -> Check:
    """Every buyer's turn ends with an order or a sold-out answer, and the ticket says so when
    read again after the drop; a drop in which nobody was told SOLD_OUT (a crowd no larger
    than the stock) fails: it never tested the telling."""
    name = "every waiting ticket ends ORDERED or SOLD_OUT (and reads so afterwards)"
    if not tickets:
        return _nothing(name, "no ticket")
    ends = Counter(t.ended for t in tickets)
    problems = [
        f"{n:,} ended {end}"
        for end, n in ends.items()
        if end not in (ORDERED, SOLD_OUT, SOLD_OUT_REFUSAL)
    ]
    misread = Counter(
        f"{t.ended} reads {t.final}"
        for t in tickets
        if (t.ended == ORDERED and t.final != ORDERED)
        or (t.ended == SOLD_OUT and t.final != SOLD_OUT)
        or (t.ended == SOLD_OUT_REFUSAL and t.final not in _ADMITTED_FOR_NOTHING)
    )
    problems += [f"{n:,} {what}" for what, n in misread.items()]
    if not ends[SOLD_OUT]:
        problems.append("no ticket was told SOLD_OUT: the crowd did not outnumber the stock")
    if not ends[ORDERED]:
        problems.append("nobody ordered through the queue")
    told = ", ".join(f"{n:,} {end}" for end, n in ends.most_common())
    return Check.of(name, not problems, "; ".join(problems[:4]) or told)


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def rank_correlation(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rho (Pearson's correlation of the ranks); 0 when either side is constant."""
    rx, ry = _ranks(xs), _ranks(ys)
    n = len(rx)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx and vy else 0.0


def fair_draw_check(tickets: Sequence[TicketEnd], *, sigmas: float = 4.0) -> Check:
    """Among the buyers who joined before the start, the place each got (its admission's
    time; never admitted: behind every admitted one) is independent of when it joined:
    Spearman's |rho| within ``sigmas`` standard deviations of 0 (at most 1/sqrt(n-1) under
    independence, ties included; first come first served gives rho near 1, a shuffle that
    favours the early a clearly positive one). And no buyer who joined after the start was
    admitted while one who was there before it was passed over, or ahead of one."""
    name = "fair draw (admission order independent of join order; late joiners behind)"
    early = [t for t in tickets if t.before_start]
    admitted = [t.admitted_until for t in early if t.admitted_until is not None]
    if len(admitted) < DRAW_MIN:
        return _nothing(name, f"{len(admitted)} admitted pre-start buyers (fewer than {DRAW_MIN})")
    never = math.inf
    rho = rank_correlation(
        [float(t.join_rank) for t in early],
        [t.admitted_until.timestamp() if t.admitted_until else never for t in early],
    )
    bound = sigmas / math.sqrt(len(early) - 1)
    problems = []
    if abs(rho) > bound:
        problems.append(f"rho {rho:+.3f} beyond ±{bound:.3f}")
    late = [t.admitted_until for t in tickets if t.after_start and t.admitted_until is not None]
    passed_over = len(early) - len(admitted)
    if late and passed_over:
        problems.append(f"{len(late)} late joiners admitted, {passed_over} early ones not")
    if late and min(late) < max(admitted):
        problems.append("a late joiner was admitted before an early one")
    return Check.of(
        name,
        not problems,
        "; ".join(problems)
        or f"rho {rho:+.3f} within ±{bound:.3f} over {len(early):,} pre-start buyers "
        f"({len(admitted):,} admitted); {len(late):,} late joiners admitted",
    )


def admission_pace_check(
    tickets: Sequence[TicketEnd], rate: float | None, *, tick_s: float
) -> Check:
    """No second (on the service's clock, from ``admittedUntil``) saw more admissions than
    the configured rate allows (``drop.admission_bound``): a queue that let the crowd in at
    once fails. A drop with no more admissions than one second may hold cannot tell: SKIP."""
    name = "admissions within the configured rate in every second"
    if rate is None:
        return Check.skipped(name, "admission as fast as the service sustains")
    times = sorted(t.admitted_until.timestamp() for t in tickets if t.admitted_until)
    bound = admission_bound(rate, tick_s)
    if len(times) < 2:
        return _nothing(name, f"{len(times)} admission(s)")
    if len(times) <= bound:
        return Check.skipped(
            name, f"{len(times):,} admissions in all: no more than one second may hold ({bound:,})"
        )
    most = first = 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return Check.of(
        name,
        most <= bound,
        f"at most {most:,} admissions in 1 s (bound {bound:,} at {rate:,.0f}/s); "
        f"{len(times):,} in all",
    )


def drop_pace_checks(without: DropSide, queued: DropSide, p99_limit_ms: float) -> list[Check]:
    """With the queue the order calls stay within the limit, with no failed call of any
    kind; without it the same crowd drives them past it (else the drop showed nothing: the
    crowd was too small or too slow for the service)."""
    failed_with = queued.server_errors + queued.transport_errors + queued.deadline_503
    p99_with, p99_without = queued.order_latency.p99, without.order_latency.p99
    failed_without = without.server_errors + without.transport_errors + without.deadline_503
    within = queued.accepted > 0 and failed_with == 0 and p99_with <= p99_limit_ms
    beyond = p99_without > p99_limit_ms or failed_without > 0
    return [
        Check.of(
            f"with the queue: order p99 <= {p99_limit_ms:g} ms, no 5xx, no timeout",
            within,
            f"p99 {p99_with:,.1f} ms, {failed_with:,} failed calls, "
            f"at most {queued.peak_in_flight:,} order calls in flight, "
            f"{queued.accepted:,} accepted",
        ),
        Check.of(
            f"without the queue: the crowd drives the order p99 past {p99_limit_ms:g} ms",
            beyond,
            f"p99 {p99_without:,.1f} ms, {failed_without:,} failed calls, "
            f"at most {without.peak_in_flight:,} in flight"
            + ("" if beyond else "; a larger --requests or a shorter --burst"),
        ),
    ]
