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


def is_api(label: str) -> bool:
    """Whether ``label`` (as ``labelled`` names them) is the API's supervisor or a worker."""
    return label == "api" or label.startswith("api-worker-")


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


# --- CPU time -------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_cpu_seconds(stat: str) -> float:
    """User and system CPU of a ``/proc/<pid>/stat`` text, its reaped children's included
    (fields 14 to 17: utime, stime, cutime, cstime), in seconds."""
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds ``pid`` has used so far (every thread), or None once it is gone."""
    try:
        return parse_cpu_seconds((PROC / str(pid) / "stat").read_text())
    except (OSError, IndexError, ValueError):
        return None


# --- sockets --------------------------------------------------------------------------------

LISTEN, ESTABLISHED = "0A", "01"


def parse_tcp(text: str) -> list[tuple[int, str, int]]:
    """(local port, state, inode) of each socket of a ``/proc/net/tcp`` or ``tcp6`` text."""
    found = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 10:
            found.append((int(parts[1].rsplit(":", 1)[1], 16), parts[3], int(parts[9])))
    return found


def _sockets() -> list[tuple[int, str, int]]:
    found: list[tuple[int, str, int]] = []
    for name in ("tcp", "tcp6"):
        try:
            found += parse_tcp((PROC / "net" / name).read_text())
        except OSError:
            continue
    return found


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets ``pid`` holds open (empty if it is gone or not ours)."""
    inodes: set[int] = set()
    try:
        for fd in (PROC / str(pid) / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def connections(pids: Mapping[str, int], port: int) -> dict[str, int]:
    """How many established connections to local ``port`` each labelled process holds: the
    split of the clients over an API's workers (each connection belongs to the worker that
    accepted it, whether the workers listen on one socket or on one each)."""
    established = {inode for p, state, inode in _sockets() if p == port and state == ESTABLISHED}
    return {label: len(socket_inodes(pid) & established) for label, pid in pids.items()}


def listener(port: int) -> int | None:
    """The process listening on local TCP ``port``, if this user may see it."""
    inodes = {inode for p, state, inode in _sockets() if p == port and state == LISTEN}
    if not inodes:
        return None
    for entry in PROC.iterdir():
        if entry.name.isdigit() and socket_inodes(int(entry.name)) & inodes:
            return int(entry.name)
    return None


def pid_file(services_dir: Path, service: str) -> int | None:
    """The pid that ``scripts/services.sh`` recorded for ``service`` (``mariadb``, ``redis``,
    ``kafka``) under its services folder, if that process is alive."""
    try:
        pid = int((services_dir / service / f"{service}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if (PROC / str(pid)).exists() else None


def service_pids(ports: Mapping[str, int | None], services_dir: Path) -> dict[str, int]:
    """The processes of the stores, by name: whoever listens on each store's port (the
    stores the stack really uses), else the pid file of ``scripts/services.sh``."""
    found: dict[str, int] = {}
    for service, port in ports.items():
        pid = listener(port) if port is not None else None
        if pid is None:
            pid = pid_file(services_dir, service)
        if pid is not None:
            found[service] = pid
    return found
