"""A torch module derived from a model (pruned, distilled) exported back to ONNX the way its
source was, with a manifest of what changed: parameters, MACs, file, versions."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hasten.compress.manifest import sha256
from hasten.models import Model
from hasten.models.onnx_file import read_specs

COST_SEQ_LEN = 128  # MACs of text models are counted at this many tokens (the benchmarks' length)
MAC_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "MultiHeadAttention", "Einsum")


def param_counts(module: Any) -> dict[str, int]:
    """Parameters in total and those that are non-zero (unstructured pruning zeroes, never removes)."""
    total = nonzero = 0
    for p in module.parameters():
        total += p.numel()
        nonzero += int((p.detach() != 0).sum())
    return {"total": total, "nonzero": nonzero}


def cost_shapes(model: Model) -> dict[str, tuple[int, ...]]:
    """Batch 1; other dynamic axes COST_SEQ_LEN (tokens)."""
    return {s.name: tuple(1 if i == 0 and d == -1 else (COST_SEQ_LEN if d == -1 else d) for i, d in enumerate(s.shape))
            for s in model.inputs}


def macs(path: Path, shapes: dict[str, tuple[int, ...]]) -> int:
    """Multiply-accumulates of the graph's matrix ops at ``shapes`` (dense: zeros count too)."""
    from hasten.measure.flops import graph_costs

    return sum(c.flops for c in graph_costs(path, shapes).values() if c.op_type in MAC_OPS) // 2


def use_eager_attention(module: Any) -> None:
    """transformers' plain attention exports to the graph ONNX Runtime fuses and runs fastest
    (see models/sentence.py); switch every Hugging Face sub-model of ``module`` to it."""
    for sub in module.modules():
        setter = getattr(sub, "set_attn_implementation", None)
        config = getattr(sub, "config", None)
        if callable(setter) and config is not None and getattr(config, "_attn_implementation", "eager") != "eager":
            try:
                setter("eager")
            except (ValueError, AttributeError, TypeError):
                pass


def export_derived(source: Model, module: Any, out: Path, method: str, config: dict[str, Any],
                   facts: dict[str, Any], started: float, name_suffix: str,
                   info_extra: dict[str, Any] | None = None) -> Model:
    """Export ``module`` (derived from ``source``) to ``out`` with the source's names, exporter and
    opset; write ``<out>.manifest.json``; return the new `Model` (its torch module kept)."""
    from hasten.measure.machine import versions
    from hasten.models.text import encoder_record
    from hasten.models.torch_export import ExportConfig, export_module

    example = source.example_input()
    module = module.eval()
    use_eager_attention(module)
    export = export_module(module, example, out, ExportConfig(
        exporter=source.info.extra.get("exporter", "legacy"), opset=int(source.info.extra.get("opset", 18)),
        input_names=tuple(s.name for s in source.inputs), output_names=tuple(s.name for s in source.outputs)))
    shapes = cost_shapes(source)
    before = param_counts(source.torch_module())
    after = param_counts(module)
    manifest = {
        "method": method,
        "config": config,
        "source": {"name": source.name, "path": str(source.path), "sha256": sha256(source.path)},
        "parameters": {"before": before, "after": after},
        "macs": {"shape": {k: list(v) for k, v in shapes.items()}, "before": macs(source.path, shapes),
                 "after": macs(out, shapes)},
        "size_before_bytes": source.path.stat().st_size,
        "output": {"path": str(out), "sha256": sha256(out), "bytes": out.stat().st_size},
        "export": export,
        "versions": versions(("hasten", "onnx", "onnxruntime", "torch", "torch-pruning", "transformers")),
        "seconds": round(time.perf_counter() - started, 2),
        **facts,
    }
    if (record := encoder_record(source.text_encoder)) is not None:
        manifest["text_encoder"] = record
    out.with_suffix(".manifest.json").write_text(json.dumps(manifest, indent=2, default=_plain))
    inputs, outputs, file_facts = read_specs(out)
    info = replace(source.info, name=f"{source.name}-{name_suffix}", source=f"{method}:{source.info.source}",
                   path=str(out), inputs=inputs, outputs=outputs,
                   extra={**file_facts, **export, "manifest": manifest,
                          **_kept(source.info.extra, ("pooling", "folder", "hidden_size")), **(info_extra or {})})
    return Model(info, text_encoder=source.text_encoder, torch_factory=lambda: (module, example))


def _kept(extra: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: extra[k] for k in keys if k in extra}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
