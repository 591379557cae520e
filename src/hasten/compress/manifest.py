"""What a transform did, written next to the model it produced."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

QUANTIZABLE = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Attention")
INT_OPS = ("MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul",
           "QLinearConv", "QGemm", "QAttention", "DynamicQuantizeLSTM")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def node_split(before: Path, after: Path) -> tuple[list[str], list[str]]:
    """(quantized, kept in float): the source graph's quantizable nodes, by what became of them.

    A node counts as quantized when the result holds an integer op named after it (ORT names
    them ``<name>_quant`` or ``<name>_MatMul_quant``), or the node itself with an input produced
    by a DequantizeLinear (QDQ format).
    """
    return _split(_graph(before), _graph(after))


def output_facts(before: Path, after: Path) -> dict[str, Any]:
    """The manifest entries that describe the output: node split, op counts, file hash and size
    (each graph read once)."""
    dst = _graph(after)
    quantized, kept = _split(_graph(before), dst)
    counts: dict[str, int] = {}
    for n in dst.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return {"quantized_nodes": quantized, "float_nodes": kept, "op_counts": dict(sorted(counts.items())),
            "output": {"path": str(after), "sha256": sha256(after), "bytes": after.stat().st_size}}


def _graph(path: Path) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph


def _split(src: Any, dst: Any) -> tuple[list[str], list[str]]:
    dq_outputs = {o for n in dst.node if n.op_type == "DequantizeLinear" for o in n.output}
    by_name = {n.name: n for n in dst.node}
    int_names = [n.name for n in dst.node if n.op_type in INT_OPS]
    quantized, kept = [], []
    for node in src.node:
        if node.op_type not in QUANTIZABLE:
            continue
        twin = by_name.get(node.name)
        is_q = (any(name.startswith(node.name + "_") for name in int_names)
                or (twin is not None and (twin.op_type in INT_OPS or any(i in dq_outputs for i in twin.input[:2]))))
        (quantized if is_q else kept).append(node.name)
    return quantized, kept


def manifest_for(model: Any, out: Path, config: Any, facts: dict[str, Any], seconds: float,
                 source: Any = None) -> dict[str, Any]:
    """``model`` is the graph that was quantized (node names refer to it); ``source`` the user's."""
    from hasten.measure.machine import versions

    source = source or model
    backend = facts.pop("backend", None)
    return {
        "method": config.method,
        "config": config.to_dict(),
        "source": {"name": source.name, "path": str(source.path), "sha256": sha256(source.path)},
        **({"quantized_graph": str(model.path)} if model.path != source.path else {}),
        "size_before_bytes": source.path.stat().st_size,
        **output_facts(model.path, out),
        "versions": versions(("hasten", "onnx", "onnxruntime", "torch", "openvino", "nncf")),
        "seconds": round(seconds, 2),
        "facts": facts,
        **({"backend": backend} if backend else {}),
    }
