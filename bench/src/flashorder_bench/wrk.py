"""A second opinion on the generator: ``wrk`` (a C load generator) against the echo route.

If wrk drives the echo route about as fast as our generator does, the ceiling we measured is
the service's, not the generator's. Optional: skipped where wrk is not installed.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path

from flashorder_bench.scenarios import ECHO_PATH

_RATE = re.compile(r"Requests/sec:\s*([0-9.]+)")


def lua_script(body: bytes, headers: dict[str, str]) -> str:
    """A wrk script that sends ``body`` as a POST with ``headers``."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body.decode())}"]
    for name, value in {"Content-Type": "application/json", **headers}.items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    return "\n".join(lines) + "\n"


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_rate(output: str) -> float | None:
    found = _RATE.search(output)
    return float(found.group(1)) if found else None


async def echo_rate(
    base_url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    connections: int,
    seconds: float = 5.0,
    cpu: int | None = None,
) -> float | None:
    """wrk's requests per second on the echo route, or None without wrk."""
    exe = shutil.which("wrk")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "echo.lua"
        script.write_text(lua_script(body, headers))
        command = [
            exe,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "-s",
            str(script),
            base_url + ECHO_PATH,
        ]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
    return parse_rate(out.decode(errors="replace"))
