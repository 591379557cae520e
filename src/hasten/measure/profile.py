"""`profile()`: where a model's time goes, per node and per op type, against the roofline."""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hasten.core import HastenError
from hasten.measure.advice import advise
from hasten.measure.roofline import NodeVerdict, Roofs, classify
from hasten.measure.trace import TraceSummary, load_trace, parse_trace
from hasten.runtime.base import BackendConfig, check_disabled_optimizers


VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
# Ops that only move or re-index data: zero FLOPs is their true count, not a gap in the counter.
MOVEMENT_OPS = VIEW_OPS | frozenset({"Transpose", "Gather", "GatherElements", "GatherND", "Concat", "Slice", "Split",
                                      "Shape", "Size", "Expand", "Pad", "Constant", "ConstantOfShape", "Range", "Tile",
                                      "ReorderInput", "ReorderOutput", "Resize", "ScatterND", "NonZero", "Trilu"})


GPU_BACKENDS = ("ort-cuda", "ort-tensorrt")


@dataclass(frozen=True)
class ProfileConfig:
    backend: str = "ort-cpu"
    batch_size: int = 1
    seq_len: int | None = None
    runs: int = 30
    warmup_runs: int = 5
    threads: int | None = None
    graph_optimization: str = "all"
    allow_fallback: bool = False
    top_n: int = 10
    disabled_optimizers: tuple[str, ...] = ()  # ONNX Runtime fusions to turn off

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.runs < 1 or self.warmup_runs < 0 or self.top_n < 1:
            raise HastenError("batch_size, runs and top_n must be >= 1 and warmup_runs >= 0")
        check_disabled_optimizers(self.disabled_optimizers)  # before any loading
        if not self.backend.startswith("ort-"):
            raise HastenError(f"profile works on ONNX Runtime backends; got '{self.backend}'",
                              hint="use --backend ort-cpu (or ort-cuda / ort-tensorrt / ort-openvino)")


@dataclass(frozen=True)
class OpTypeShare:
    op_type: str
    nodes: int
    time_us: float
    share: float
    flops: int
    bound: str            # the bound that holds most of this op type's time
    peak_fraction: float  # time-weighted

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProfileResult:
    model: str
    backend: str
    threads: int
    input_shapes: dict[str, list[int]]
    wall_us: float             # median of unprofiled runs, measured from Python
    ort_run_us: float          # median ORT model_run (profiled)
    node_sum_us: float         # Σ node kernel time per run (per-node medians)
    overhead_us: float         # framework: ORT's own (run − Σ nodes) + the Python→ORT call floor
    call_floor_us: float
    nodes: tuple[NodeVerdict, ...]
    op_types: tuple[OpTypeShare, ...]
    shares: dict[str, float]   # of Σ node medians + overhead: compute, memory, overhead-bound nodes, framework
    roofs: dict[str, Any]
    fallback_nodes: tuple[str, ...]
    advice: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        """(Σ node time + overhead) / unprofiled wall time: 1.0 means the profile explains it all."""
        return (self.node_sum_us + self.overhead_us) / self.wall_us

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["nodes"] = [n.to_dict() for n in self.nodes]
        d["op_types"] = [o.to_dict() for o in self.op_types]
        d["coverage"] = self.coverage
        return d


def profile(model: Any, dataset: Any, config: ProfileConfig = ProfileConfig()) -> ProfileResult:
    """Profile ``model`` on one batch shape with ONNX Runtime's profiler; attribute time per node,
    classify each node on the roofline, and say which optimisation the numbers point to."""
    from hasten.measure.flops import graph_costs
    from hasten.measure.peaks import machine_peaks

    bcfg = BackendConfig(threads=config.threads, graph_optimization=config.graph_optimization,
                         allow_fallback=config.allow_fallback, disabled_optimizers=config.disabled_optimizers)
    feed = dataset.batch(0, config.batch_size, config.seq_len)
    with tempfile.TemporaryDirectory(prefix="hasten-profile-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        summary, wall_us, floor_us = _run_profiled(model, config, bcfg, feed, Path(tmp), optimized)
        costs = graph_costs(optimized, {k: tuple(v.shape) for k, v in feed.items()}) if optimized.exists() else {}
    device = f"cuda:{bcfg.device_id}" if config.backend in GPU_BACKENDS else "cpu"  # the roofs of where it runs
    peaks = machine_peaks(bcfg.resolved_threads(), device=device)
    roofs = _roofs(peaks, device)
    verdicts = tuple(_verdict(n, costs, roofs) for n in summary.nodes)
    fallback = _audit(verdicts, config)
    overhead = summary.overhead_us + floor_us
    attributed = sum(v.time_us for v in verdicts) + overhead  # the shares add up to 100 % of this
    shares = _shares(verdicts, overhead, attributed)
    op_types = _by_op_type(verdicts, attributed)
    result = ProfileResult(
        model=model.name, backend=config.backend, threads=bcfg.resolved_threads(),
        input_shapes={k: list(v.shape) for k, v in feed.items()}, wall_us=wall_us, ort_run_us=summary.median_run_us,
        node_sum_us=summary.node_sum_us, overhead_us=overhead, call_floor_us=floor_us,
        nodes=tuple(sorted(verdicts, key=lambda v: -v.time_us)), op_types=op_types, shares=shares,
        roofs=asdict(roofs), fallback_nodes=fallback, advice=(),
        extra={"runs": summary.runs, "top_n": config.top_n, "peaks": peaks.to_dict(), "device": device,
               "source_op_types": _source_op_types(model.path),
               **({"disabled_optimizers": list(config.disabled_optimizers)} if config.disabled_optimizers else {})},
    )
    return _with_advice(result, roofs)


def _source_op_types(path: Any) -> list[str]:
    """Op types in the model file itself (what ONNX Runtime fused at load time is not among them)."""
    import onnx

    return sorted({n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node})


def _with_advice(result: ProfileResult, roofs: Roofs) -> ProfileResult:
    return replace(result, advice=tuple(advise(result, roofs)))


def _run_profiled(model: Any, config: ProfileConfig, bcfg: BackendConfig, feed: dict[str, np.ndarray],
                  tmp: Path, optimized: Path) -> tuple[TraceSummary, float, float]:
    """Profiled and unprofiled sessions, run interleaved; returns the trace summary, the median
    unprofiled wall time (µs) and the Python→ORT per-call floor (µs)."""
    from hasten.runtime.onnxruntime import open_session, run_session, session_options

    opts = session_options(bcfg)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / "trace")
    opts.optimized_model_filepath = str(optimized)
    plain = open_session(model.path, config.backend, bcfg)
    # fallback is caught per node by the audit (which lists the nodes), not per session here
    profiled = open_session(model.path, config.backend, replace(bcfg, allow_fallback=True), opts)
    out_names = [o.name for o in model.outputs]
    run_session(plain, out_names, feed)  # a clear error for bad input values, before any timing
    for _ in range(config.warmup_runs):
        profiled.run(out_names, feed)
        plain.run(out_names, feed)
    walls = []
    for _ in range(config.runs):
        profiled.run(out_names, feed)
        t0 = time.perf_counter()
        plain.run(out_names, feed)
        walls.append(time.perf_counter() - t0)
    trace = profiled.end_profiling()
    summary = parse_trace(load_trace(trace), skip_runs=config.warmup_runs)
    return summary, float(np.median(walls)) * 1e6, _call_floor_us()


def _call_floor_us(runs: int = 300) -> float:
    """The cost of one ``session.run`` that does (almost) nothing: an Identity on 1 float."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "floor",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = {"x": np.zeros(1, np.float32)}
    for _ in range(20):
        sess.run(["y"], x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(["y"], x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def _roofs(peaks: Any, device: str = "cpu") -> Roofs:
    fp32, int8, bw = peaks.get("fp32_gemm"), peaks.get("int8_gemm"), peaks.get("mem_bw")
    if fp32 is None or bw is None:
        if device != "cpu":
            raise HastenError(f"the peaks of {device} could not be measured: "
                              + "; ".join(f"{k}: {v}" for k, v in getattr(peaks, "unavailable", {}).items()),
                              hint="hasten measures GPU peaks with a CUDA build of torch (pip install 'hasten[torch]')")
        raise HastenError("machine peaks lack fp32_gemm or mem_bw; re-measure with refresh=True")
    return Roofs(fp32.value, int8.value if int8 else None, bw.value)


def _verdict(node: Any, costs: dict[str, Any], roofs: Roofs) -> NodeVerdict:
    cost = costs.get(node.name)
    if cost is not None and cost.flops == 0 and node.op_type not in MOVEMENT_OPS:
        # an op that computes, whose shapes shape inference could not find (ORT's fused and
        # quantized contrib ops): its place on the roofline is unknown, not "memory-bound"
        return classify(node.name, node.op_type, node.provider, node.median_us, 0, 0, cost.int_ops, roofs)
    flops = cost.flops if cost else 0
    # ONNX Runtime runs view ops in place (same buffer): they move no bytes, whatever their shapes
    moved = cost.bytes_moved if cost and node.op_type not in VIEW_OPS else 0
    int_ops = cost.int_ops if cost else False
    return classify(node.name, node.op_type, node.provider, node.median_us, flops, moved, int_ops, roofs)


def _audit(verdicts: tuple[NodeVerdict, ...], config: ProfileConfig) -> tuple[str, ...]:
    """Nodes that ran on another provider than the one asked for; an error unless allowed."""
    from hasten.runtime.onnxruntime import PROVIDERS

    wanted = PROVIDERS[config.backend][0]
    fallen = tuple(f"{v.name} ({v.op_type}) on {v.provider}" for v in verdicts if v.provider != wanted)
    if fallen and not config.allow_fallback:
        listing = "\n    ".join(fallen[:20]) + (f"\n    … and {len(fallen) - 20} more" if len(fallen) > 20 else "")
        raise HastenError(
            f"{config.backend}: {len(fallen)} of {len(verdicts)} nodes did not run on {wanted}:\n    {listing}",
            hint="allow it with --allow-fallback (they are then listed in the report), or use a model/EP that covers them",
        )
    return fallen


def _shares(verdicts: tuple[NodeVerdict, ...], overhead_us: float, attributed_us: float) -> dict[str, float]:
    by: dict[str, float] = defaultdict(float)
    for v in verdicts:
        by[v.bound] += v.time_us
    total = max(attributed_us, 1e-9)
    return {"compute": by["compute"] / total, "memory": by["memory"] / total,
            "overhead_nodes": by["overhead"] / total, "framework": overhead_us / total, "unknown": by["unknown"] / total}


def _by_op_type(verdicts: tuple[NodeVerdict, ...], attributed_us: float) -> tuple[OpTypeShare, ...]:
    groups: dict[str, list[NodeVerdict]] = defaultdict(list)
    for v in verdicts:
        groups[v.op_type].append(v)
    out = []
    for op, vs in groups.items():
        t = sum(v.time_us for v in vs)
        bound_time: dict[str, float] = defaultdict(float)
        for v in vs:
            bound_time[v.bound] += v.time_us
        frac = sum(v.peak_fraction * v.time_us for v in vs) / t if t else 0.0
        out.append(OpTypeShare(op, len(vs), t, t / max(attributed_us, 1e-9), sum(v.flops for v in vs),
                               max(bound_time, key=bound_time.get), frac))
    return tuple(sorted(out, key=lambda o: -o.time_us))
