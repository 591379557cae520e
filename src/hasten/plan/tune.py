"""Offline batching tuning: which (max batch, window, instances) serves the most under a p99 SLO.

The search is a grid, coarse then fine, every point measured under the stated load (no model of
the server is trusted to pick the answer; measurements are). Why a grid and not a fitted
latency(batch) model: the fitted model misses what dominates on a small CPU — the front end's
own CPU use competing with compute, thread wake-ups, the window's interaction with arrivals —
and a wrong model picks a wrong point silently, while a grid's mistakes show in its table.

- coarse: max batch {1, 4, 16, max}, window {0, 2, 8} ms, instances {1 … max_instances};
- fine: along the SLO boundary of the best coarse point — bisect the max batch between it and
  the next coarse size (throughput and p99 both grow with the batch), then try the window
  halfway to its neighbours.

Chosen: the highest throughput whose p99 ≤ SLO (within 3 % of it, the lower p99).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

COARSE_BATCHES = (1, 4, 16)
COARSE_WINDOWS_MS = (0.0, 2.0, 8.0)


@dataclass(frozen=True)
class ServeConfig:
    max_batch: int
    window_ms: float
    instances: int = 1


@dataclass
class TunePoint:
    config: ServeConfig
    throughput_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    stage: str = "coarse"
    feasible: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("config"))
        return d


@dataclass
class TuneResult:
    slo_p99_ms: float
    points: list[TunePoint] = field(default_factory=list)
    chosen: TunePoint | None = None
    reason: str = ""


Measure = Callable[[ServeConfig], TunePoint]


def _better(a: TunePoint, b: TunePoint | None) -> bool:
    if b is None:
        return True
    if a.throughput_per_s > 1.03 * b.throughput_per_s:
        return True
    return a.throughput_per_s >= b.throughput_per_s / 1.03 and a.p99_ms < b.p99_ms


def search(measure: Measure, slo_p99_ms: float, max_batch: int, max_instances: int = 1,
           on_point: Callable[[TunePoint], None] | None = None) -> TuneResult:
    result = TuneResult(slo_p99_ms)
    seen: dict[ServeConfig, TunePoint] = {}

    def run(config: ServeConfig, stage: str) -> TunePoint:
        if config not in seen:
            point = measure(config)
            point.stage = stage
            point.feasible = point.errors == 0 and point.p99_ms <= slo_p99_ms
            seen[config] = point
            result.points.append(point)
            if on_point is not None:
                on_point(point)
        return seen[config]

    batches = sorted({b for b in COARSE_BATCHES if b < max_batch} | {max_batch})
    for n in range(1, max_instances + 1):
        for b in batches:
            for w in (COARSE_WINDOWS_MS if b > 1 else (0.0,)):  # a window cannot grow a batch of 1
                run(ServeConfig(b, w, n), "coarse")
    best = _best(result)
    if best is None:
        result.reason = (f"no configuration kept p99 ≤ {slo_p99_ms:g} ms at this load (lowest p99: "
                         f"{min(p.p99_ms for p in result.points):.2f} ms); lower the load, add instances or relax the SLO")
        return result
    # fine: bisect the batch towards the next coarse size, at the best window and instances
    cfg = best.config
    bigger = [b for b in batches if b > cfg.max_batch]
    lo, hi = cfg.max_batch, bigger[0] if bigger else cfg.max_batch
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run(ServeConfig(mid, cfg.window_ms, cfg.instances), "fine").feasible:
            lo = mid
        else:
            hi = mid
    best = _best(result)
    cfg = best.config
    windows = sorted(set(COARSE_WINDOWS_MS) | {cfg.window_ms})
    i = windows.index(cfg.window_ms)
    for w in ([(windows[i - 1] + cfg.window_ms) / 2] if i > 0 else []) + (
            [(windows[i + 1] + cfg.window_ms) / 2] if i + 1 < len(windows) else []):
        if cfg.max_batch > 1:
            run(ServeConfig(cfg.max_batch, round(w, 3), cfg.instances), "fine")
    result.chosen = _best(result)
    c = result.chosen.config
    result.reason = (f"highest throughput with p99 ≤ {slo_p99_ms:g} ms: {result.chosen.throughput_per_s:.0f} req/s at "
                     f"p99 {result.chosen.p99_ms:.2f} ms (max batch {c.max_batch}, window {c.window_ms:g} ms, "
                     f"{c.instances} instance(s))")
    return result


def _best(result: TuneResult) -> TunePoint | None:
    best = None
    for p in result.points:
        if p.feasible and _better(p, best):
            best = p
    return best


# ---------------------------------------------------------------------- measuring a live server

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """`hasten serve FOLDER --instances N` in its own process on free ports; knobs set live
    through the batching endpoint."""

    def __init__(self, folder: str, instances: int | None = None, extra: tuple[str, ...] = (), grpc: bool = False) -> None:
        import subprocess
        import sys
        import threading

        from hasten.core import HastenError

        self.port = _free_port()
        self.grpc_port = _free_port() if grpc else 0
        self.proc = subprocess.Popen([sys.executable, "-m", "hasten.cli", "serve", folder, "--http-port", str(self.port),
                                      "--grpc-port", str(self.grpc_port), "--metrics-port", "0",
                                      *(("--instances", str(instances)) if instances else ()), *extra],
                                     stderr=subprocess.PIPE, text=True)
        lines = []
        for line in self.proc.stderr:
            lines.append(line)
            if "ready" in line:
                break
        else:
            self.proc.wait(30)
            raise HastenError(f"hasten serve {folder} did not start: " + "".join(lines[-5:]).strip())
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep draining its log

    def set(self, model: str, max_batch: int, window_ms: float) -> None:
        import http.client
        import json

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("POST", f"/v2/models/{model}/batching",
                     json.dumps({"batch_cap": max_batch, "max_queue_delay_ms": window_ms}))
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        if resp.status != 200:
            from hasten.core import HastenError

            raise HastenError(f"could not set the batching knobs: {body.decode(errors='replace')}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except Exception:  # noqa: BLE001 - stop it whatever happens
            self.proc.kill()


def tune_live(folder: str, model: str, slo_p99_ms: float, max_batch: int, rate: float | None = None,
              concurrency: int | None = None, seconds: float = 3.0, max_instances: int = 1, batch_size: int = 1,
              processes: int = 1, on_point: Callable[[TunePoint], None] | None = None) -> TuneResult:
    from hasten.loadgen import LoadSpec, run_load

    live: dict[int, LiveServer] = {}

    def measure(config: ServeConfig) -> TunePoint:
        if config.instances not in live:
            for other in live.values():
                other.close()
            live.clear()
            live[config.instances] = LiveServer(folder, config.instances)
        server = live[config.instances]
        server.set(model, config.max_batch, config.window_ms)
        report = run_load(LoadSpec(model, f"127.0.0.1:{server.port}", concurrency=concurrency, rate=rate,
                                   duration_s=seconds, processes=processes, batch_size=batch_size), progress=False)
        errors = sum(report.errors.values()) + (1 if report.falling_behind else 0)
        return TunePoint(config, report.throughput_per_s, report.latency_ms.get("p50", float("inf")),
                         report.latency_ms.get("p99", float("inf")), errors)

    try:
        return search(measure, slo_p99_ms, max_batch, max_instances, on_point)
    finally:
        for server in live.values():
            server.close()


def write_config(entry: Any, chosen: ServeConfig) -> str:
    """Write the chosen knobs into the model's config (config.yaml or Triton's config.pbtxt);
    returns what changed."""
    from hasten.core import HastenError

    path = entry.config_path
    if path is None:
        raise HastenError("this model has no config file to write", hint="tune a repository model folder")
    if path.suffix == ".yaml":
        import yaml

        doc = yaml.safe_load(path.read_text()) or {}
        doc["max_batch_size"] = chosen.max_batch
        doc["instances"] = chosen.instances
        batching = doc.get("dynamic_batching") or {}
        batching["max_queue_delay_ms"] = chosen.window_ms
        if batching.get("preferred_batch_sizes"):
            batching["preferred_batch_sizes"] = [b for b in batching["preferred_batch_sizes"] if b <= chosen.max_batch]
        doc["dynamic_batching"] = batching
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    else:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2

        cfg = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        cfg.max_batch_size = chosen.max_batch
        cfg.dynamic_batching.max_queue_delay_microseconds = int(chosen.window_ms * 1000)
        keep = [b for b in cfg.dynamic_batching.preferred_batch_size if b <= chosen.max_batch]
        del cfg.dynamic_batching.preferred_batch_size[:]
        cfg.dynamic_batching.preferred_batch_size.extend(keep)
        if not cfg.instance_group:
            cfg.instance_group.add()
        for group in cfg.instance_group:
            group.count = chosen.instances
        path.write_text(text_format.MessageToString(cfg))
    return (f"{path}: max_batch_size {chosen.max_batch}, dynamic_batching.max_queue_delay_ms {chosen.window_ms:g}, "
            f"instances {chosen.instances}")
