"""What the service answered over a whole run, distilled for the checks: which orders it
accepted, how many units of each product, and which order each Idempotency-Key got."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from flashorder_bench.samples import ORDER, TRANSPORT_ERROR, Samples
from flashorder_bench.scenarios import Job


@dataclass
class Answers:
    accepted_orders: set[str] = field(default_factory=set)
    #: Units of each product in the distinct accepted orders.
    accepted_units: dict[str, int] = field(default_factory=dict)
    #: Idempotency-Key → the distinct order ids its answers named.
    key_orders: dict[str, set[str]] = field(default_factory=dict)
    #: Idempotency-Key → the statuses its calls got, in the order they finished.
    key_statuses: dict[str, list[int]] = field(default_factory=dict)
    server_errors: int = 0
    transport_errors: int = 0
    #: Open loop: 5xx answers other than the request deadline's 503.
    open_server_errors: int = 0
    #: Open loop: 503 answers at the request deadline (load shed past the capacity).
    deadline_answers: int = 0

    def add(
        self, jobs: Sequence[Job], samples: Samples, *, deadline_s: float | None = None
    ) -> None:
        """Fold in one phase. ``deadline_s`` marks an open-loop step, served with that
        request deadline: past the capacity, a 503 at the deadline or a client timeout is how
        the step fails (its table row shows them), not a broken promise; any other 5xx is. A
        503 answered sooner than the deadline after it was sent is not the deadline's."""
        for i in range(len(samples)):
            status = samples.status[i]
            if deadline_s is None:
                self.server_errors += status >= 500
                self.transport_errors += status == TRANSPORT_ERROR
            elif status == 503 and samples.end[i] - samples.start[i] >= deadline_s:
                self.deadline_answers += 1
            else:
                self.open_server_errors += status >= 500
            if samples.kind[i] != ORDER:
                continue
            call = jobs[samples.job[i]].calls[0]
            order_id = samples.order_ids.get(i)
            if call.idempotency_key is not None:
                self.key_statuses.setdefault(call.idempotency_key, []).append(status)
                named = self.key_orders.setdefault(call.idempotency_key, set())
                if order_id is not None:
                    named.add(order_id)
            if order_id is not None and order_id not in self.accepted_orders:
                self.accepted_orders.add(order_id)
                units = self.accepted_units.get(call.product_id, 0)
                self.accepted_units[call.product_id] = units + call.quantity

    def retry_outcomes(self) -> dict[str, int]:
        """How the pairs of one key were answered, e.g. ``{"201+200": 812, "409+409": 3}``."""
        outcomes: dict[str, int] = {}
        for statuses in self.key_statuses.values():
            name = "+".join(str(s) for s in sorted(statuses, reverse=True))
            outcomes[name] = outcomes.get(name, 0) + 1
        return dict(sorted(outcomes.items()))
