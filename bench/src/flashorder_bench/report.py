"""What a run prints: one PASS/FAIL/SKIP line per promise, and the summary tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["PASS", "FAIL", "SKIP"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    verdict: Verdict
    detail: str = ""

    @classmethod
    def of(cls, name: str, passed: bool, detail: str = "") -> Check:
        return cls(name, "PASS" if passed else "FAIL", detail)

    @classmethod
    def skipped(cls, name: str, why: str) -> Check:
        return cls(name, "SKIP", why)


def failed(checks: Sequence[Check]) -> list[Check]:
    return [c for c in checks if c.verdict == "FAIL"]


def format_checks(checks: Sequence[Check], *, title: str) -> str:
    """``title``, then one aligned line per check, then the count of each verdict."""
    width = max((len(c.name) for c in checks), default=0)
    lines = [title]
    for check in checks:
        detail = f"  {check.detail}" if check.detail else ""
        lines.append(f"  {check.verdict}  {check.name.ljust(width)}{detail}")
    counts = {v: sum(c.verdict == v for c in checks) for v in ("PASS", "FAIL", "SKIP")}
    lines.append("  " + ", ".join(f"{n} {v.lower()}" for v, n in counts.items() if n))
    return "\n".join(lines)


def number(value: float | None, digits: int = 0) -> str:
    """A figure for a table: thousands separated, ``-`` for none or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (it reads as plain text too), columns padded to their widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
