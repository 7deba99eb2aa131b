"""What a bench run is asked to do (the ``flashorder-bench`` options), and the scenario
defaults the options scale."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from flashorder_bench.drop import Wait
from flashorder_bench.scenarios import HOT, SCENARIOS, ScenarioName, ScenarioSpec
from flashorder_bench.settings import Strategy

STRATEGIES: tuple[Strategy, ...] = ("reserve", "lock")

#: The issue's hot sale: 50,000 order requests from 20,000 users for 5,000 units.
DEFAULTS: dict[ScenarioName, dict[str, int]] = {
    "hot": {"requests": 50_000, "stock": 5_000, "users": 20_000, "max_per_user": 4},
    "retry": {"requests": 20_000, "stock": 5_000, "users": 20_000, "max_per_user": 4},
    "many": {"requests": 30_000, "stock": 0, "users": 20_000, "products": 1_000},
    "mixed": {"requests": 30_000, "stock": 0, "users": 20_000, "products": 10},
    "noshow": {"requests": 3_000, "stock": 300, "users": 3_000, "max_per_user": 4},
    # A crowd of 3,000 distinct buyers (``requests``) for 300 units, on each side, one unit
    # per buyer (--max-per-user 2: 1 or 2 each; a turn in the queue counts maxPerUser units).
    "queue": {"requests": 3_000, "stock": 300, "users": 3_000, "max_per_user": 1},
}


@dataclass(frozen=True)
class BenchOptions:
    scenario: ScenarioName = "hot"
    strategies: tuple[Strategy, ...] = STRATEGIES
    requests: int | None = None
    stock: int | None = None
    users: int | None = None
    max_per_user: int | None = None
    products: int | None = None
    workers: int = 2
    #: Closed loop: virtual users over all generator processes.
    concurrency: int = 64
    generators: int = 1
    pin: bool = False
    repeat: int = 1
    #: Requests of the warm-up before the measured runs (at most a tenth of a run's).
    warmup: int = 2_000
    open_loop: bool = True
    #: Open-loop rates to try; empty: fractions of the closed-loop peak.
    rates: tuple[float, ...] = ()
    step_seconds: float = 5.0
    p99_limit_ms: float = 100.0
    ceiling: bool = True
    wrk: bool = False
    target: str | None = None
    out: Path = Path("bench-results")
    redis_db: int = 9
    keep: bool = False
    seed: int = 1
    timeout_s: float = 30.0
    #: Checks a ``--target`` run may leave out (``checks.SKIPPABLE``): without them, a check
    #: that cannot run there fails.
    skip_checks: tuple[str, ...] = ()
    #: Where ``scripts/services.sh`` keeps its pid files: a fallback to find the stores'
    #: processes, whose CPU counts per order (they are found by their ports first).
    services_dir: Path = Path(".services")
    #: ``noshow``: the product's payment deadline, and the share of winners who never pay.
    pay_within: int = 3
    unpaid_share: float = 0.3
    #: ``queue``: the queued product's admissionPerSecond (None: as fast as the service
    #: sustains), how the buyers wait (the ticket's stream, or polling), the pre-queue before
    #: the start, the crowd's spread at the start without the
    #: queue, and the share of the crowd that joins the queue after the start.
    admission_rate: float | None = 100.0
    queue_wait: Wait = "stream"
    prequeue_s: float = 5.0
    burst_s: float = 1.0
    late_share: float = 0.1
    #: Open sale pages (``/sales/{productId}`` streams) during the hot sale's rounds with
    #: viewers; 0: no such rounds.
    viewers: int = 0
    #: Also run rounds on a second stack started with tracing on (``watching``).
    tracing: bool = False

    def spec(self, tag: str, *, requests: int | None = None, echo: bool = False) -> ScenarioSpec:
        """The scenario of one phase. ``requests`` (an open-loop step) scales the stock of a
        hot product with it, so that every step sells the same share of its requests."""
        d = DEFAULTS[self.scenario]
        base_requests = self.requests or d["requests"]
        n = requests if requests is not None else base_requests
        # Without --stock, the stock keeps the default's share of the requests (a tenth in a
        # hot sale): a smaller run is still a sale that sells out.
        stock = self.stock or max(1, round(d["stock"] * base_requests / d["requests"]))
        if requests is not None and self.scenario in HOT:
            stock = max(1, round(stock * requests / base_requests))
        return ScenarioSpec(
            name=self.scenario,
            tag=tag,
            requests=n,
            stock=stock,
            users=self.users or d["users"],
            max_per_user=self.max_per_user or d.get("max_per_user"),
            # Small runs keep about ten orders per product.
            products=min(self.products or d.get("products", 1), max(1, n // 10)),
            seed=self.seed,
            echo=echo,
            pay_within=self.pay_within if self.scenario == "noshow" else None,
        )

    def warmup_spec(self, tag: str) -> ScenarioSpec | None:
        """The warm-up: a short sale of its own products and buyers, with stock for every
        request, so that it runs the selling path (group commit, relay, projector) and leaves
        the measured buyers' tokens and products untouched. None when there is none."""
        base = self.spec(tag)
        requests = min(self.warmup, base.requests // 10)
        if requests <= 0:
            return None
        return replace(self.spec(tag, requests=requests), stock=2 * requests)


def parse_scenario(name: str) -> ScenarioName:
    for known in SCENARIOS:
        if name == known:
            return known
    raise ValueError(f"unknown scenario {name!r}: one of {', '.join(SCENARIOS)}")


def parse_strategies(text: str) -> tuple[Strategy, ...]:
    """``"reserve,lock"`` → ``("reserve", "lock")``; at least one, each known, no repeats."""
    chosen: list[Strategy] = []
    for name in (n.strip() for n in text.split(",")):
        known = next((s for s in STRATEGIES if s == name), None)
        if known is None:
            raise ValueError(f"unknown strategy {name!r}: one of {', '.join(STRATEGIES)}")
        if known not in chosen:
            chosen.append(known)
    return tuple(chosen)


def parse_wait(name: str) -> Wait:
    if name == "stream":
        return "stream"
    if name == "poll":
        return "poll"
    raise ValueError(f"unknown way to wait {name!r}: stream or poll")
