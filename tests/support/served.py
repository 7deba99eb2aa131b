"""``flashorder serve`` as a user runs it (embedded, default settings) on a free port: real
HTTP for what needs it, a client generated from its description or a browser."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flashorder.config import Settings
from flashorder.entrypoints.tokens import mint_token
from flashorder_bench.stack import EXE, free_port


@dataclass(frozen=True)
class Served:
    base: str
    settings: Settings

    def token(self, user: str, *, admin: bool = False) -> str:
        return mint_token(self.settings, user, admin=admin)


@contextmanager
def served(data: Path) -> Iterator[Served]:
    """The server process, its data under ``data``; what it describes is what
    docs/openapi.json holds (the defaults)."""
    port = free_port()
    # None of the test run's service URLs: the embedded default, as ``make run`` starts it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHORDER_")}
    env.update(FLASHORDER_DATA_DIR=str(data), FLASHORDER_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    with (data / "serve.log").open("wb") as log:
        proc = subprocess.Popen([EXE, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_live(base, proc, data / "serve.log")
            yield Served(base, Settings())
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_live(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"flashorder serve did not start: {log.read_text()}") from None
            time.sleep(0.2)
