"""Run a load test: read the model's inputs from the server, build the requests, start the
worker processes on a common start time, gather what they measured, summarise."""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hasten.core import HastenError, TensorSpec
from hasten.loadgen.report import LoadReport, summarise
from hasten.loadgen.schedule import poisson_arrivals, split_round_robin, trace_arrivals
from hasten.loadgen.worker import Plan, Target, worker_main
from hasten.serve.tensors import DATATYPES


@dataclass
class LoadSpec:
    model: str
    url: str = "127.0.0.1:8000"
    protocol: str = "http"
    concurrency: int | None = None        # closed loop
    rate: float | None = None             # open loop, Poisson
    trace: Path | None = None             # open loop, replayed timestamps
    duration_s: float | None = 10.0
    requests: int | None = None
    processes: int = 1
    batch_size: int = 1
    data: Path | None = None
    seed: int = 0
    max_in_flight: int = 256
    timeout_s: float = 30.0
    version: str = ""

    def check(self) -> None:
        modes = [x is not None for x in (self.concurrency, self.rate, self.trace)]
        if sum(modes) != 1:
            raise HastenError("choose one load: --concurrency C (closed loop), --rate R (Poisson) or --trace FILE")
        if self.protocol not in ("http", "grpc"):
            raise HastenError(f"unknown protocol '{self.protocol}'", hint="http or grpc")
        if self.concurrency is not None and self.concurrency < 1:
            raise HastenError("--concurrency must be >= 1")
        if self.duration_s is None and self.requests is None and self.trace is None:
            raise HastenError("bound the run: --duration S and/or --requests N")
        if self.processes < 1 or self.batch_size < 1:
            raise HastenError("--processes and --batch-size must be >= 1")
        host, _, port = self.url.rpartition(":")
        if not host or not port.isdigit():
            raise HastenError(f"--url must be HOST:PORT, got '{self.url}'", hint="e.g. 127.0.0.1:8000 (gRPC: :8001)")

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of ``url`` (IPv6 brackets removed); ``check()`` first."""
        host, _, port = self.url.rpartition(":")
        return host.strip("[]"), int(port)


def _target(spec: LoadSpec, outputs: tuple[str, ...]) -> Target:
    return Target(*spec.address, spec.protocol, spec.model, spec.version, outputs)


def fetch_inputs(spec: LoadSpec) -> tuple[tuple[TensorSpec, ...], tuple[str, ...]]:
    """The model's input specs and output names, from the server's model metadata."""
    host, port = spec.address
    try:
        if spec.protocol == "http":
            import http.client

            conn = http.client.HTTPConnection(host, port, timeout=10)
            path = f"/v2/models/{spec.model}" + (f"/versions/{spec.version}" if spec.version else "")
            conn.request("GET", path)
            resp = conn.getresponse()
            doc = json.loads(resp.read() or b"{}")
            conn.close()
            if resp.status != 200:
                raise HastenError(f"the server answered {resp.status} for model '{spec.model}': {doc.get('error', doc)}")
        else:
            import grpc
            from google.protobuf import json_format
            from tritonclient.grpc import service_pb2, service_pb2_grpc

            with grpc.insecure_channel(spec.url) as channel:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                try:
                    meta = stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=spec.model, version=spec.version),
                                              timeout=10)
                except grpc.RpcError as exc:
                    raise HastenError(f"the server refused model '{spec.model}': {exc.details()}") from None
                doc = json_format.MessageToDict(meta, preserving_proto_field_name=True)
    except OSError as exc:
        raise HastenError(f"cannot reach {spec.url}: {exc}", hint="is the server running? (hasten serve …)") from None
    specs = []
    for item in doc.get("inputs", []):
        if item["datatype"] not in DATATYPES or item["datatype"] == "BYTES":
            raise HastenError(f"input '{item['name']}' is {item['datatype']}; the load generator sends numeric tensors",
                              hint="drive a model with text inputs with tritonclient or perf_analyzer")
        specs.append(TensorSpec(item["name"], DATATYPES[item["datatype"]], tuple(int(d) for d in item["shape"])))
    return tuple(specs), tuple(o["name"] for o in doc.get("outputs", []))


def _payloads(spec: LoadSpec, inputs: tuple[TensorSpec, ...]) -> list[dict[str, np.ndarray]]:
    from hasten.models import load_dataset, synthetic_dataset

    if spec.data is not None:
        data = load_dataset(spec.data)
        missing = [s.name for s in inputs if s.name not in data.inputs]
        if missing:
            raise HastenError(f"{spec.data} lacks the model's inputs {missing}")
        data.inputs = {s.name: data.inputs[s.name] for s in inputs}
    else:
        specs = tuple(TensorSpec(s.name, s.dtype, (-1, *s.shape[1:])) for s in inputs)
        data = synthetic_dataset(specs, size=spec.batch_size * 16, dynamic_dim=16, seed=spec.seed)
    n = max(1, len(data) // spec.batch_size)
    payloads = []
    for i in range(min(n, 64)):
        batch = data.batch(i * spec.batch_size, spec.batch_size)
        payloads.append({s.name: np.ascontiguousarray(batch[s.name].astype(s.dtype, copy=False)) for s in inputs})
    return payloads


def run_load(spec: LoadSpec, progress: bool = True) -> LoadReport:
    spec.check()
    inputs, outputs = fetch_inputs(spec)
    payloads = _payloads(spec, inputs)
    target = _target(spec, outputs)
    workers = spec.processes
    start_at = time.time() + 0.5 + 0.3 * workers  # time for the processes to start
    plans: list[Plan] = []
    offered, span = None, None
    if spec.concurrency is not None:
        mode = "closed"
        workers = min(workers, spec.concurrency)
        for i in range(workers):
            share = spec.concurrency // workers + (1 if i < spec.concurrency % workers else 0)
            requests = None if spec.requests is None else spec.requests // workers + (1 if i < spec.requests % workers else 0)
            plans.append(Plan("closed", payloads, start_at, concurrency=share, duration_s=spec.duration_s,
                              requests=requests, timeout_s=spec.timeout_s))
    else:
        if spec.trace is not None:
            mode, times = "trace", trace_arrivals(spec.trace)
            if spec.duration_s is not None:
                times = times[times < spec.duration_s]
            if spec.requests is not None:
                times = times[:spec.requests]
        else:
            mode, times = "open", poisson_arrivals(spec.rate, spec.duration_s, spec.requests, spec.seed)
        if len(times) == 0:
            raise HastenError("the schedule holds no requests", hint="raise the duration or the rate")
        span = float(times[-1])
        offered = len(times) / max(span, 1e-9) if len(times) > 1 else None  # as drawn (Poisson varies)
        for share in split_round_robin(times, workers):
            plans.append(Plan("open", payloads, start_at, arrivals=share, max_in_flight=spec.max_in_flight,
                              timeout_s=spec.timeout_s))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = [ctx.Process(target=worker_main, args=(target, plan, queue), daemon=True) for plan in plans]
    for p in procs:
        p.start()
    parts = _collect(queue, len(procs), spec, start_at, progress)
    for p in procs:
        p.join(30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    failed = [p["error"] for p in parts if "error" in p]
    if failed:
        raise HastenError(f"a load generator process failed: {failed[0]}")
    rows = np.concatenate([p["rows"] for p in parts])
    ok = np.concatenate([p["ok"] for p in parts])
    errors = [e for p in parts for e in p["errors"]]
    return summarise(mode, spec.protocol, rows, ok, errors, offered, cpu, spec.concurrency, span)


def _collect(queue: Any, n: int, spec: LoadSpec, start_at: float, progress: bool) -> list[dict[str, Any]]:
    """Wait for every worker's result, with a progress bar over the run's expected length."""
    import queue as queue_mod

    parts: list[dict[str, Any]] = []
    expected = spec.duration_s or 0.0
    if progress and expected:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from hasten.core.console import stderr_console

        with Progress(TextColumn("load test"), BarColumn(), TimeRemainingColumn(), console=stderr_console(),
                      transient=True) as bar:
            task = bar.add_task("", total=expected)
            while len(parts) < n:
                try:
                    parts.append(queue.get(timeout=0.2))
                except queue_mod.Empty:
                    pass
                bar.update(task, completed=min(expected, max(0.0, time.time() - start_at)))
    while len(parts) < n:
        parts.append(queue.get(timeout=spec.timeout_s + (spec.duration_s or 0) + 120))
    return parts
