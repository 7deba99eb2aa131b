"""The result file (``bench-results/<timestamp>.json``) and the machine it was measured on."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, is_dataclass
from datetime import datetime
from pathlib import Path

import orjson


def machine() -> dict[str, object]:
    """What the figures depend on: cores, CPU model, memory, kernel, Python."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
    }


def _default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"cannot write {type(value).__name__}")


def dumps(payload: object) -> bytes:
    # NaN (a percentile of no samples) is written as null.
    return orjson.dumps(payload, default=_default, option=orjson.OPT_INDENT_2)


def write(out: Path, payload: dict[str, object], *, at: datetime) -> Path:
    """Write ``payload`` to ``out/<timestamp>.json``; returns the path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{at.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_bytes(dumps(payload))
    return path
