"""The "not faster" guard: a quantized model must beat its baseline, measured interleaved."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hasten.measure import BenchConfig, compare
from hasten.measure.machine import int8_dot_product

INT8_METHODS = ("dynamic", "static", "nncf", "qat")


@dataclass(frozen=True)
class SpeedRow:
    batch_size: int
    baseline_p50_ms: float
    baseline_p99_ms: float
    variant_p50_ms: float
    variant_p99_ms: float
    speedup: float                # baseline p50 / variant p50
    faster_beyond_noise: bool     # the variant's median CI lies wholly below the baseline's
    slower_beyond_noise: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GuardVerdict:
    faster: bool
    rows: tuple[SpeedRow, ...]
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"faster": self.faster, "rows": [r.to_dict() for r in self.rows], "reasons": list(self.reasons)}


def speed_check(baseline: Any, variant: Any, data: Any, batch_sizes: tuple[int, ...], seq_len: int | None,
                time_budget_s: float, progress: Any = None) -> GuardVerdict:
    """Benchmark both runners interleaved; faster = beyond noise at one batch size at least and
    slower beyond noise at none."""
    config = BenchConfig(batch_sizes=batch_sizes, seq_len=seq_len, time_budget_s=time_budget_s, min_runs=10)
    res = compare({"baseline": baseline, "variant": variant}, data, config, progress=progress, machine={})
    rows = []
    for b, v in zip(res["baseline"].results, res["variant"].results):
        rows.append(SpeedRow(b.batch_size, b.stats.p50_ms, b.stats.p99_ms, v.stats.p50_ms, v.stats.p99_ms,
                             b.stats.p50_ms / v.stats.p50_ms, v.median_ci_ms[1] < b.median_ci_ms[0],
                             v.median_ci_ms[0] > b.median_ci_ms[1]))
    faster = any(r.faster_beyond_noise for r in rows) and not any(r.slower_beyond_noise for r in rows)
    return GuardVerdict(faster, tuple(rows))


def why_not_faster(manifest: dict[str, Any], backend: str, rows: tuple[SpeedRow, ...], variant_path: Path,
                   threads: int) -> list[str]:
    """Reasons derived from what was seen, most likely first."""
    reasons = []
    method = manifest.get("method", "")
    if method in INT8_METHODS and int8_dot_product() is None:
        reasons.append("this CPU has no INT8 dot-product instruction (VNNI/AMX): INT8 GEMMs are not faster than FP32 here")
    recommended = manifest.get("backend")
    if recommended and recommended != backend:
        reasons.append(f"this result is made for the {recommended} backend but was measured on {backend}: "
                       f"re-run with --backend {recommended}")
    q, f = len(manifest.get("quantized_nodes", [])), len(manifest.get("float_nodes", []))
    if method in INT8_METHODS and q + f and q / (q + f) < 0.5:
        reasons.append(f"too few ops quantized: {q} of {q + f} quantizable nodes ({f} kept in float)")
    islands = float_islands(variant_path, backend, threads) if backend.startswith("ort-") else 0
    if islands:
        reasons.append(f"float islands: {islands} DequantizeLinear nodes survive ONNX Runtime's fusions, so their "
                       "ops run in FP32 between conversions (QDQ pairs ORT could not fold into integer kernels)")
    if method == "fp16" and backend in ("ort-cpu", "openvino"):
        reasons.append("FP16 on this CPU backend runs through casts; FP16 pays off on GPUs")
    failing = [r for r in rows if not r.faster_beyond_noise]
    tiny = [r for r in failing if r.baseline_p50_ms < 0.2]
    if tiny:
        reasons.append(f"at batch {', '.join(str(r.batch_size) for r in tiny)} the model is tiny (baseline p50 "
                       f"{min(r.baseline_p50_ms for r in tiny) * 1e3:.0f} µs): per-call overhead and memory traffic, "
                       "not arithmetic, set its speed")
    big = [r for r in failing if r.baseline_p50_ms >= 0.2]
    if big:
        shown = ", ".join(f"batch {r.batch_size}: {r.speedup:.2f}×" for r in big)
        reasons.append(f"the quantized kernels are not faster than the FP32 ones here ({shown}, {threads} thread(s)); "
                       "try another method or backend, or other batch sizes / thread counts")
    return reasons


def float_islands(path: Path, backend: str, threads: int) -> int:
    """DequantizeLinear nodes left in the graph ONNX Runtime actually runs."""
    from hasten.runtime.onnxruntime import optimized_graph

    graph = optimized_graph(path, threads=threads).graph
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def feeds_quantize(node: Any) -> bool:
        return any(c.op_type == "QuantizeLinear" for o in node.output for c in consumers.get(o, []))

    # an island: DequantizeLinear -> a float op -> QuantizeLinear, i.e. int8 data leaving and re-entering
    return sum(1 for n in graph.node if n.op_type == "DequantizeLinear"
               and any(c.op_type != "QuantizeLinear" and feeds_quantize(c) for o in n.output for c in consumers.get(o, [])))
