"""What the service answered over a whole run, distilled for the checks: which orders it
accepted, how many units of each product, and which order each Idempotency-Key got."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from flashorder.bench.samples import ORDER, TRANSPORT_ERROR, Samples
from flashorder.bench.scenarios import Job


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

    def add(self, jobs: Sequence[Job], samples: Samples, *, count_errors: bool = True) -> None:
        """Fold in one phase. ``count_errors`` is off for open-loop steps: past the capacity,
        a 503 at the request deadline or a client timeout is how the step fails (its table
        row shows them), not a broken promise."""
        for i in range(len(samples)):
            status = samples.status[i]
            if status >= 500 and count_errors:
                self.server_errors += 1
            if status == TRANSPORT_ERROR and count_errors:
                self.transport_errors += 1
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
