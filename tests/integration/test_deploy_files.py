"""The operators' files under deploy/: the alert rules pass promtool (checked and
unit-tested), and the dashboard and the rules only use metrics the service exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from flashorder.application.projector import ProjectorStats, register_metrics
from flashorder.application.relay import RelayMetrics
from tests.support.api import embedded
from tests.support.calls import new_product, place

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "flashorder-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "flashorder-sale.json"


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    assert found is not None, "promtool is missing: run scripts/promtool.sh"
    return found


def test_alert_rules_pass_promtool_check_and_their_unit_tests(promtool: str) -> None:
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "flashorder-alerts.test.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def _names(exposition: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", exposition, re.M))


async def test_the_dashboard_and_the_rules_use_only_exported_metrics(tmp_path: Path) -> None:
    async with embedded(tmp_path) as api:
        pid = await new_product(api, stock=1)
        await place(api, "d1", (pid, 1, 10050))
        exported = _names((await api.call("GET", "/metrics")).body)
    registry = CollectorRegistry()
    RelayMetrics(registry)
    register_metrics(ProjectorStats(name="p"), registry)
    exported |= _names(generate_latest(registry).decode())
    # A counter's samples end in _total, a histogram's in _bucket, _sum and _count.
    known = exported | {f"{n}_total" for n in exported}
    known |= {f"{n}_{part}" for n in exported for part in ("bucket", "sum", "count")}
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(expressions) >= 14
    used = set(re.findall(r"flashorder_\w+", " ".join(expressions) + RULES.read_text()))
    assert used - known == set()
