"""Plain-words advice derived from a profile's measurements (no fixed text per model)."""

from __future__ import annotations

from typing import Any

from hasten.measure.roofline import Roofs

# Thresholds on shares of wall time that make a finding worth saying.
MEMORY_SHARE = 0.25
OVERHEAD_SHARE = 0.25
LOW_PEAK = 0.30
INT8_GAIN = 1.5
INT8_OPS = frozenset({"DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat", "QLinearMatMul", "QLinearConv",
                      "ConvInteger", "QAttention", "QGemm"})
SLOW_FUSED = 0.25   # a fused ONNX Runtime op below this share of the bandwidth roof ...
FUSED_SHARE = 0.05  # ... and with at least this share of the time is worth measuring unfused


def advise(result: Any, roofs: Roofs) -> list[str]:
    """Where the time goes, and the lever each finding points to."""
    lines = [_where(result)]
    if result.op_types:
        lines.extend(_dominant(result.op_types[0], roofs))
    memory = result.shares["memory"]
    if memory >= MEMORY_SHARE:
        heavy = [o for o in result.op_types if o.bound == "memory"][:3]
        named = ", ".join(f"{o.op_type} {o.share:.0%} (at {o.peak_fraction:.0%} of bandwidth)" for o in heavy)
        lines.append(f"{memory:.0%} of the time is in memory-bound ops ({named}): lower-precision weights and "
                     "activations (INT8/FP16/BF16) or operator fusion cut the bytes they move; ops far below the "
                     "bandwidth roof are slow kernels that fusion removes.")
    lines.extend(_slow_fusions(result))
    overhead = result.shares["framework"] + result.shares["overhead_nodes"]
    if overhead >= OVERHEAD_SHARE:
        lines.append(f"{overhead:.0%} of the time is overhead (framework {result.overhead_us:.0f} µs per call, "
                     f"plus tiny ops): overhead-bound — batch requests (dynamic batching) so it is paid once "
                     "per batch, or fuse small ops.")
    unknown = result.shares.get("unknown", 0.0)
    if unknown >= 0.05:
        ops = sorted({o.op_type for o in result.op_types if o.bound == "unknown"})
        lines.append(f"{unknown:.0%} of the time is in ops whose cost hasten cannot count ({', '.join(ops)}): "
                     "their roofline position is unknown.")
    if result.fallback_nodes:
        lines.append(f"{len(result.fallback_nodes)} nodes ran on a fallback provider (listed in the report).")
    return lines


def _where(result: Any) -> str:
    s = result.shares
    return (f"Of {result.wall_us / 1000:.3g} ms per call: {s['compute']:.0%} in compute-bound ops, "
            f"{s['memory']:.0%} in memory-bound ops, {s['overhead_nodes'] + s['framework']:.0%} overhead "
            f"({s['framework']:.0%} framework, {s['overhead_nodes']:.0%} tiny ops).")


def _dominant(op: Any, roofs: Roofs) -> list[str]:
    head = f"{op.share:.0%} of the time is in {op.op_type} ({op.nodes} node{'' if op.nodes == 1 else 's'}), {op.bound}-bound"
    if op.bound == "compute":
        peak_name = "compute peak"
        lines = [f"{head} at {op.peak_fraction:.0%} of the {peak_name}."]
        int8_ratio = (roofs.int8_gops or 0.0) / roofs.fp32_gflops
        if op.op_type in INT8_OPS:
            lines.append("It is INT8 already: fewer FLOPs (pruning, distillation) or the time outside it are what is left.")
        elif int8_ratio >= INT8_GAIN:
            lines.append(f"The INT8 peak is {int8_ratio:.1f}× the FP32 peak on this machine: INT8 quantization is "
                         "the lever (hasten quantize).")
        elif op.peak_fraction < LOW_PEAK:
            lines.append("Its kernels reach a small part of the peak: try other backends (hasten backends --pick) "
                         "or larger batches.")
        else:
            lines.append("Close to the peak already: only fewer FLOPs help (structured pruning, distillation).")
        return lines
    if op.bound == "memory":
        return [f"{head} at {op.peak_fraction:.0%} of the memory bandwidth: lower-precision weights or fusion."]
    if op.bound == "unknown":
        return [f"{op.share:.0%} of the time is in {op.op_type} ({op.nodes} node{'' if op.nodes == 1 else 's'}), whose "
                "FLOPs hasten cannot count here (a fused or quantized ONNX Runtime op): compare backends by time instead."]
    return [f"{head}: batch requests or fuse small ops."]


def _slow_fusions(result: Any) -> list[str]:
    """Ops that ONNX Runtime's optimizer fused at load time (absent from the model file) and that
    run far below the bandwidth roof: the fused kernel may be slower than what it replaced (its
    SkipLayerNormalization took 2.5 ms where Add + Add + LayerNormalization took 0.7 ms here)."""
    from hasten.runtime.base import ORT_FUSIONS

    source = set(getattr(result, "extra", {}).get("source_op_types", ()))
    lines = []
    for op in result.op_types:
        fusion = ORT_FUSIONS.get(op.op_type)
        if (fusion and source and op.op_type not in source and op.bound == "memory"
                and op.peak_fraction < SLOW_FUSED and op.share >= FUSED_SHARE):
            lines.append(f"{op.op_type} ({op.share:.0%} of the time) was fused by ONNX Runtime at load time and runs at "
                         f"{op.peak_fraction:.0%} of the memory bandwidth: its fused kernel may be slower than the ops it "
                         f"replaced; measure both, interleaved: hasten bench MODEL --ort-disable {fusion}")
    return lines
