"""Edge vs cloud: the bundle on a constrained profile (1 intra-op thread, in this process) against
the same model served by `hasten serve` over real local HTTP, plus a stated network round trip
and the payload's transfer time at a stated bandwidth. Which wins at p50 and p99, and by how much."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class Side:
    p50_ms: float
    p99_ms: float
    runs: int


@dataclass
class Comparison:
    edge: Side
    cloud_local: Side           # measured: local HTTP + the server, no network
    rtt_ms: float
    bandwidth_mbps: float
    request_bytes: int
    response_bytes: int

    @property
    def transfer_ms(self) -> float:
        return (self.request_bytes + self.response_bytes) * 8 / (self.bandwidth_mbps * 1e6) * 1e3

    def cloud(self, which: str) -> float:
        return getattr(self.cloud_local, which) + self.rtt_ms + self.transfer_ms

    def verdict(self, which: str) -> str:
        edge, cloud = getattr(self.edge, which), self.cloud(which)
        if edge <= cloud:
            return f"edge wins by {cloud - edge:.2f} ms ({cloud / edge:.1f}× faster)"
        return f"cloud wins by {edge - cloud:.2f} ms ({edge / cloud:.1f}× faster)"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(transfer_ms=self.transfer_ms, cloud_p50_ms=self.cloud("p50_ms"), cloud_p99_ms=self.cloud("p99_ms"),
                 verdict_p50=self.verdict("p50_ms"), verdict_p99=self.verdict("p99_ms"))
        return d


def time_calls(fn: Any, seconds: float = float("inf"), max_runs: int = 2000) -> Side:
    """p50/p99 of ``fn()`` after 5 warm-up calls: for ``seconds`` (at least 20 calls) or
    ``max_runs`` calls, whichever ends first."""
    for _ in range(5):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < max_runs and (time.perf_counter() < deadline or len(times) < 20):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    a = np.array(times) * 1e3
    return Side(float(np.percentile(a, 50)), float(np.percentile(a, 99)), len(times))


def measure_edge(bundle: str, feed: dict[str, np.ndarray], seconds: float = 3.0, max_runs: int = 2000) -> Side:
    from hasten.edge.bundle import load_bundle

    runner = load_bundle(bundle, threads=1)
    return time_calls(lambda: runner.run(feed), seconds, max_runs)


def measure_cloud(model: str, feed: dict[str, np.ndarray], outputs: list[str], seconds: float = 3.0,
                  max_runs: int = 2000) -> tuple[Side, int, int]:
    """`hasten serve MODEL` (window 0, 1 thread) in its own process; a keep-alive HTTP client with
    binary tensors. Returns (latency, request bytes, response bytes)."""
    from hasten.loadgen.sync import SyncHttp
    from hasten.loadgen.worker import HttpClient, Target
    from hasten.plan.tune import LiveServer

    server = LiveServer(model, extra=("--max-queue-delay-ms", "0", "--threads", "1", "--max-batch-size", "8"))
    try:
        name = _served_name(server.port)
        request = HttpClient(Target("127.0.0.1", server.port, "http", name, "", tuple(outputs))).encode(feed)
        conn = SyncHttp("127.0.0.1", server.port)
        size = [0]

        def call() -> None:
            head, body = conn.call(request)
            size[0] = len(head) + 4 + len(body)

        side = time_calls(call, seconds, max_runs)
        conn.close()
        return side, len(request), size[0]
    finally:
        server.close()


def _served_name(port: int) -> str:
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/v2/models/stats")
    names = [m["name"] for m in json.loads(conn.getresponse().read())["model_stats"]]
    conn.close()
    return names[0]


def compare(bundle: str, model: str, feed: dict[str, np.ndarray], outputs: list[str], rtt_ms: float,
            bandwidth_mbps: float = 50.0, seconds: float = 3.0) -> Comparison:
    edge = measure_edge(bundle, feed, seconds)
    cloud, req, resp = measure_cloud(model, feed, outputs, seconds)
    return Comparison(edge, cloud, rtt_ms, bandwidth_mbps, req, resp)
