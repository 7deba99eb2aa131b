"""A second opinion on the generator, and the floor of the HTTP front: ``wrk`` (a C load
generator) against the echo route, and against a bare ASGI app (``bare``).

If wrk drives the echo route about as fast as our generator does, the ceiling we measured is
the service's, not the generator's. The CPU the API spends per echo call under wrk, beside
what the bare app spends per call, tells how much of the front is uvicorn's and the
machine's (the bare app) and how much is the framework's and ours (the rest). Optional:
skipped where wrk is not installed.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flashorder_bench import procs
from flashorder_bench.cpu import read as read_cpu
from flashorder_bench.stack import free_port

_CALLS = re.compile(r"(\d+) requests in ([0-9.]+)(us|ms|s|m)\b")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
#: Seconds of wrk before the measured run: connections opened, caches warm.
WARMUP_S = 1


@dataclass(frozen=True, slots=True)
class WrkRun:
    """One wrk run: the calls answered, over how many seconds, how many were not 2xx, and
    the CPU seconds the server's processes spent meanwhile (None: not read)."""

    calls: int
    seconds: float
    non_2xx: int
    server_cpu_s: float | None = None

    @property
    def per_s(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    def ms_per_call(self) -> float | None:
        if self.server_cpu_s is None or not self.calls:
            return None
        return 1000 * self.server_cpu_s / self.calls


def lua_script(body: bytes, headers: dict[str, str]) -> str:
    """A wrk script that sends ``body`` as a POST with ``headers``."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body.decode())}"]
    for name, value in {"Content-Type": "application/json", **headers}.items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    return "\n".join(lines) + "\n"


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse(output: str) -> WrkRun | None:
    """wrk's summary: "N requests in 10.00s, ..." and, if any, "Non-2xx or 3xx responses: M"."""
    found = _CALLS.search(output)
    if found is None:
        return None
    bad = _NON_2XX.search(output)
    return WrkRun(
        calls=int(found.group(1)),
        seconds=float(found.group(2)) * _UNIT_S[found.group(3)],
        non_2xx=int(bad.group(1)) if bad else 0,
    )


def _cpu(pids: Mapping[str, int]) -> float:
    return sum(read_cpu(pids).cpu_s.values())


async def run(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    server: Mapping[str, int],
    connections: int,
    seconds: float = 5.0,
    cpu: int | None = None,
) -> WrkRun | None:
    """wrk's run against ``url`` (after a warm-up), with the CPU that the ``server``'s
    processes spent during it; None without wrk, or if wrk reported nothing."""
    exe = shutil.which("wrk")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "post.lua"
        script.write_text(lua_script(body, headers))
        command = [exe, "-t1", f"-c{connections}", "-s", str(script), url]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        await _wrk(command, WARMUP_S)
        before = _cpu(server)
        output = await _wrk(command, max(1, round(seconds)))
        used = _cpu(server) - before
    found = parse(output)
    return None if found is None else WrkRun(found.calls, found.seconds, found.non_2xx, used)


async def _wrk(command: list[str], seconds: int) -> str:
    with_time = [*command[:-1], f"-d{seconds}s", command[-1]]
    proc = await asyncio.create_subprocess_exec(
        *with_time, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return out.decode(errors="replace")


async def bare_front(
    body: bytes,
    *,
    workers: int,
    connections: int,
    seconds: float = 5.0,
    cpu: int | None = None,
) -> WrkRun | None:
    """wrk against ``bare.app`` under uvicorn with ``workers`` workers, as the API is served;
    the CPU is the uvicorn supervisor's and its workers'. None without wrk."""
    if shutil.which("wrk") is None:
        return None
    port = free_port()
    command = [
        *(sys.executable, "-m", "uvicorn", "flashorder_bench.bare:app"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        *("--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"),
    ]
    server = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await _listening(port, workers, server.pid)
        return await run(
            f"http://127.0.0.1:{port}/",
            body,
            {},
            server=procs.labelled({"bare": server.pid}),
            connections=connections,
            seconds=seconds,
            cpu=cpu,
        )
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(server.wait(), 15)
            except TimeoutError:
                server.kill()
                await server.wait()


async def _listening(port: int, workers: int, pid: int, timeout: float = 30.0) -> None:
    """Until the port takes connections and the supervisor has all its workers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            pass
        else:
            writer.close()
            # With one worker uvicorn serves in its own process, with no children.
            if workers == 1 or len(procs.children(pid)) >= workers:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the bare ASGI app did not listen on port {port} in {timeout:.0f} s")
