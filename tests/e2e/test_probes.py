"""``/readyz`` and ``/metrics`` answer anyone: a flood of them costs one reading of the
dependencies per period, not one per request."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from flashorder.bootstrap import Service
from tests.support.api import embedded


def counting(
    calls: Counter[str], name: str, method: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    async def counted(self: Service) -> Any:
        calls[name] += 1
        return await method(self)

    return counted


async def test_a_flood_of_probes_reads_the_dependencies_once_per_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: Counter[str] = Counter()
    monkeypatch.setattr(Service, "readiness", counting(calls, "readiness", Service.readiness))
    monkeypatch.setattr(Service, "lag", counting(calls, "lag", Service.lag))
    async with embedded(tmp_path, probe_cache_seconds=30) as api:
        replies = await asyncio.gather(
            *(api.call("GET", path) for path in ["/readyz", "/metrics"] * 100)
        )

        assert {reply.status for reply in replies} == {200}
        assert all(reply.body["status"] == "ready" for reply in replies[::2])
        assert "flashorder_read_model_lag_events" in replies[1].body
        # 200 probes, one reading of each kind (the period is far longer than the flood).
        assert calls == {"readiness": 1, "lag": 1}, calls


async def test_with_no_period_every_probe_reads_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: Counter[str] = Counter()
    monkeypatch.setattr(Service, "lag", counting(calls, "lag", Service.lag))
    async with embedded(tmp_path, probe_cache_seconds=0) as api:
        for _ in range(3):
            assert (await api.call("GET", "/metrics")).status == 200

        assert calls["lag"] == 3
