"""An OTLP/HTTP trace collector that accepts and discards: where a traced stack's spans go
during the bench (``python -m flashorder_bench.otlp_sink --port N``).

The service's exporter then runs exactly the code a deployment runs (the batch processor,
protobuf encoding, one HTTP POST per batch), so the traced stack pays what a real export
costs; the collector's own work, which a deployment runs elsewhere, is this process's, and
the bench counts its CPU apart from the stack's. It decodes each request to count the spans
(the proof that tracing was on) and answers as a collector does: 200 with an empty
``ExportTraceServiceResponse``. ``GET /stats`` returns the counts as JSON.
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import orjson
from aiohttp import web
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

TRACES_PATH = "/v1/traces"
_EMPTY = ExportTraceServiceResponse().SerializeToString()


@dataclass(frozen=True, slots=True)
class SinkStats:
    exports: int = 0
    spans: int = 0
    bytes: int = 0
    #: Requests that did not decode as an ``ExportTraceServiceRequest``.
    rejected: int = 0

    def minus(self, before: SinkStats) -> SinkStats:
        return SinkStats(
            self.exports - before.exports,
            self.spans - before.spans,
            self.bytes - before.bytes,
            self.rejected - before.rejected,
        )


def count_spans(body: bytes) -> int:
    request = ExportTraceServiceRequest.FromString(body)
    return sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)


def app() -> web.Application:
    counts = {"exports": 0, "spans": 0, "bytes": 0, "rejected": 0}

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        counts["bytes"] += len(body)
        try:
            if request.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            spans = count_spans(body)
        except (DecodeError, OSError, EOFError):
            counts["rejected"] += 1
            return web.Response(status=400, text="not an ExportTraceServiceRequest")
        counts["exports"] += 1
        counts["spans"] += spans
        return web.Response(body=_EMPTY, content_type="application/x-protobuf")

    async def stats(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(counts), content_type="application/json")

    application = web.Application(client_max_size=64 * 1024 * 1024)
    application.router.add_post(TRACES_PATH, traces)
    application.router.add_get("/stats", stats)
    return application


class Sink:
    """The collector as a process of its own on ``port``; ``endpoint`` is what
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` names. Everything here blocks."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.endpoint = self.base + TRACES_PATH
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        command = [sys.executable, "-m", "flashorder_bench.otlp_sink", "--port", str(self.port)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the OTLP sink exited with {self.proc.returncode}")
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"the OTLP sink did not answer on {self.base} in {timeout}s")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def stats(self) -> SinkStats:
        with urllib.request.urlopen(self.base + "/stats", timeout=5) as answer:
            return SinkStats(**orjson.loads(answer.read()))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
