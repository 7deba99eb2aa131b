"""Memory of the stack's processes, from ``/proc``: current (``VmRSS``) and peak (``VmHWM``).

``flashorder serve --workers N`` is a supervisor whose N worker processes are its children;
each is reported on its own, under a stable label.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PROC = Path("/proc")


def parse_status(text: str) -> dict[str, int]:
    """The ``kB`` fields of a ``/proc/<pid>/status`` text, by name (``VmRSS`` → 51234)."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            fields[name] = int(parts[0])
    return fields


def memory_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in kB; empty once the process is gone."""
    try:
        fields = parse_status((PROC / str(pid) / "status").read_text())
    except OSError:
        return {}
    return {k: v for k, v in fields.items() if k in ("VmRSS", "VmHWM")}


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, oldest first."""
    found: list[int] = []
    try:
        for task in (PROC / str(pid) / "task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
        return sorted(found)
    except OSError:
        pass
    # Kernels without CONFIG_PROC_CHILDREN: scan every process's parent.
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def _cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def labelled(roots: Mapping[str, int]) -> dict[str, int]:
    """Each root process by its label, plus the worker processes under an API supervisor as
    ``<label>-worker-<n>`` (multiprocessing helpers such as the resource tracker are left
    out: they hold no request)."""
    found: dict[str, int] = {}
    for label, pid in roots.items():
        found[label] = pid
        workers = [c for c in children(pid) if "resource_tracker" not in _cmdline(c)]
        for n, child in enumerate(workers, 1):
            found[f"{label}-worker-{n}"] = child
    return found


def snapshot(pids: Mapping[str, int], field: str = "VmRSS") -> dict[str, int]:
    """``field`` in kB for every labelled process still alive."""
    taken = {label: memory_kb(pid).get(field) for label, pid in pids.items()}
    return {label: kb for label, kb in taken.items() if kb is not None}


def own_peak_kb() -> int:
    return memory_kb(os.getpid()).get("VmHWM", 0)


def leak_report(
    after_runs: list[dict[str, int]], tolerance: float = 0.10
) -> tuple[bool, list[str]]:
    """Whether every process's RSS after each run stayed within ``tolerance`` of its RSS after
    the first run, and one line per process that did not."""
    if len(after_runs) < 2:
        return True, []
    first = after_runs[0]
    grown: list[str] = []
    for label, base in sorted(first.items()):
        for n, later in enumerate(after_runs[1:], 2):
            now = later.get(label)
            if now is not None and base > 0 and now > base * (1 + tolerance):
                grown.append(f"{label}: {base} kB after run 1, {now} kB after run {n}")
    return not grown, grown
