"""Prometheus metrics (prometheus-client) with Triton's metric names, so existing dashboards work,
plus hasten's histograms of batch size, queue wait and server-side request latency.

Counters are read from the batchers at scrape time (no per-request cost); the two latency
histograms are observed per request. Sample names are exactly Triton's (``nv_inference_count``
…); prometheus-client writes a counter family's HELP/TYPE lines with a ``_total`` suffix, which
Prometheus accepts (queries use the sample names)."""

from __future__ import annotations

from typing import Any

from hasten.core import MissingDependencyError

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")
_COUNTERS = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes", "success"),
    ("nv_inference_count", "Number of inferences performed (batch elements)", "inferences"),
    ("nv_inference_exec_count", "Number of model executions performed (batches)", "executions"),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds", "request_us"),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds", "queue_us"),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds", "zero"),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds", "compute_us"),
    ("nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in microseconds", "zero"),
)


class ServerMetrics:
    """The registry of one `ModelServer`; ``observe()`` per request, ``text()`` per scrape."""

    def __init__(self, server: Any) -> None:
        try:
            from prometheus_client import CollectorRegistry, Gauge, Histogram
        except ImportError as exc:
            raise MissingDependencyError("prometheus-client", "serve", "the /metrics endpoint") from exc
        self.server = server
        self.registry = CollectorRegistry(auto_describe=False)
        self.queue = Histogram("hasten_queue_wait_seconds", "Time requests waited in the batcher's queue",
                               ["model", "version"], buckets=SECONDS_BUCKETS, registry=self.registry)
        self.latency = Histogram("hasten_request_latency_seconds",
                                 "Server-side request time: parse, queue, compute, encode",
                                 ["model", "version"], buckets=SECONDS_BUCKETS, registry=self.registry)
        self.window = Gauge("hasten_batch_window_seconds", "Batching window set by the SLO controller",
                            ["model", "version"], registry=self.registry)
        self.cap = Gauge("hasten_batch_cap", "Batch size cap set by the SLO controller", ["model", "version"],
                         registry=self.registry)
        self.registry.register(_Collector(server))

    def controller_gauges(self, model: str, version: str) -> Any:
        """A callback for the SLO controller: its window and batch cap as gauges."""

        def update(knobs: Any) -> None:
            self.window.labels(model, version).set(knobs.window_s)
            self.cap.labels(model, version).set(knobs.cap)

        return update

    def observe(self, model: str, version: str, queue_s: float, total_s: float) -> None:
        self.queue.labels(model, version).observe(queue_s)
        self.latency.labels(model, version).observe(total_s)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _Collector:
    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

        models = list(self.server.models.values())
        for name, doc, key in _COUNTERS:
            family = Metric(name, doc, "counter")
            for m in models:
                family.add_sample(name, {"model": m.name, "version": str(m.version)}, _value(m, key))
            yield family
        failure = Metric("nv_inference_request_failure", "Number of failed inference requests, all batch sizes", "counter")
        for m in models:
            for reason in REASONS:
                failure.add_sample("nv_inference_request_failure",
                                   {"model": m.name, "version": str(m.version), "reason": reason},
                                   m.batcher.stats.failure.get(reason, 0))
        yield failure
        pending = GaugeMetricFamily("nv_inference_pending_request_count",
                                    "Instantaneous number of pending requests awaiting execution", labels=["model", "version"])
        load = GaugeMetricFamily("nv_model_load_duration_secs", "Model load time in seconds", labels=["model", "version"])
        batch = HistogramMetricFamily("hasten_batch_size", "Examples per executed batch", labels=["model", "version"])
        for m in models:
            labels = [m.name, str(m.version)]
            pending.add_metric(labels, m.batcher.queued)
            load.add_metric(labels, m.cold_start_s)
            sizes = m.batcher.stats.batch_sizes
            buckets = [(str(b), sum(n for s, n in sizes.items() if s <= b)) for b in BATCH_BUCKETS]
            buckets.append(("+Inf", sum(sizes.values())))
            batch.add_metric(labels, buckets, sum(s * n for s, n in sizes.items()))
        yield pending
        yield load
        yield batch


def _value(m: Any, key: str) -> float:
    s = m.batcher.stats
    return {"success": s.success, "inferences": s.inferences, "executions": s.executions,
            "request_us": (m.counts["queue_ns"] + m.counts["compute_ns"]) / 1e3, "queue_us": m.counts["queue_ns"] / 1e3,
            "compute_us": m.counts["compute_ns"] / 1e3, "zero": 0.0}[key]


def start_metrics_server(metrics: ServerMetrics, host: str, port: int) -> Any:
    """prometheus-client's own HTTP server (a daemon thread) serving ``GET /metrics``."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=host, registry=metrics.registry)
