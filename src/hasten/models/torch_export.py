"""Exporting a PyTorch module to ONNX (the only module of `hasten.models` that imports torch)."""

from __future__ import annotations

import inspect
import os
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hasten.core import HastenError, MissingDependencyError

log = logging.getLogger(__name__)

EXPORTERS = ("legacy", "dynamo")


def import_torch() -> Any:
    """Import torch with passive OpenMP waiting: spinning idle threads steal the cores that
    ONNX Runtime and server threads need (MEASURED.md). Has no effect if torch is already loaded."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch", "loading a PyTorch model") from exc
    return torch


@dataclass(frozen=True)
class ExportConfig:
    """How to export: exporter ('legacy' TorchScript tracing, measured faster on ONNX Runtime
    here, or 'dynamo'), opset, names, and which axes are dynamic."""

    exporter: str = "legacy"
    opset: int = 18
    input_names: tuple[str, ...] | None = None
    output_names: tuple[str, ...] | None = None
    seq_axis_for_int_inputs: bool = True

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise HastenError(
                f"unknown exporter '{self.exporter}'", hint="use one of: " + ", ".join(EXPORTERS)
            )


def normalize_example(module: Any, example_input: Any, names: Sequence[str] | None) -> tuple[tuple, tuple[str, ...]]:
    """Example input as a tuple of tensors plus one name per tensor."""
    torch = import_torch()
    if example_input is None:
        raise HastenError(
            "a torch.nn.Module needs an example input to be exported",
            hint="load_model(module, example_input=torch.randn(1, 3, 224, 224))",
        )
    if isinstance(example_input, dict):
        names = names or tuple(example_input)
        example = tuple(example_input.values())
    elif isinstance(example_input, (tuple, list)):
        example = tuple(example_input)
    else:
        example = (example_input,)
    example = tuple(torch.as_tensor(t).contiguous() if not isinstance(t, torch.Tensor) else t.contiguous() for t in example)
    if names is None:
        params = [
            p.name for p in inspect.signature(module.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        names = params[: len(example)] if len(params) >= len(example) else [f"input_{i}" for i in range(len(example))]
    if len(names) != len(example):
        raise HastenError(f"{len(names)} input names given for {len(example)} example tensors")
    return example, tuple(names)


def export_module(module: Any, example_input: Any, path: Path, config: ExportConfig = ExportConfig()) -> dict[str, Any]:
    """Export ``module`` to ONNX at ``path`` with a dynamic batch axis (and a dynamic sequence
    axis for integer token inputs), then check ONNX Runtime reproduces the module's outputs."""
    torch = import_torch()
    module = module.eval()
    example, in_names = normalize_example(module, example_input, config.input_names)
    with torch.inference_mode():
        ref = _as_tuple(module(*example))
    out_names = config.output_names or (("output",) if len(ref) == 1 else tuple(f"output_{i}" for i in range(len(ref))))
    if len(out_names) != len(ref):
        raise HastenError(f"{len(out_names)} output names given, but the module returns {len(ref)} tensors")
    in_axes = {n: _dynamic_axes(t, config) for n, t in zip(in_names, example)}
    seq_lens = {t.shape[1] for t in example if 1 in _dynamic_axes(t, config)}
    out_axes = {n: {0: "batch", **({1: "seq"} if t.ndim >= 3 and t.shape[1] in seq_lens else {})} for n, t in zip(out_names, ref)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's deprecation and trace warnings are ours to check
        if config.exporter == "legacy":
            torch.onnx.export(
                module, example, str(path), input_names=list(in_names), output_names=list(out_names),
                dynamic_axes={**in_axes, **out_axes}, opset_version=config.opset, dynamo=False,
            )
        else:
            dims: dict[str, Any] = {}
            shapes = {n: {a: dims.setdefault(label, torch.export.Dim(label)) for a, label in axes.items()} for n, axes in in_axes.items()}
            torch.onnx.export(
                module, example, str(path), input_names=list(in_names), output_names=list(out_names),
                dynamic_shapes=shapes, opset_version=config.opset, dynamo=True, external_data=False,
                verbose=False,
            )
    _pin_static_output_dims(path, out_axes, {n: tuple(t.shape) for n, t in zip(out_names, ref)})
    diff = _check_export(path, in_names, out_names, example, ref)
    return {"exporter": config.exporter, "opset": config.opset, "export_max_abs_diff": diff}


def _pin_static_output_dims(path: Path, out_axes: dict[str, dict[int, str]], shapes: dict[str, tuple]) -> None:
    """The tracer leaves output dims like the embedding width symbolic; write the known ones."""
    import onnx

    proto = onnx.load(str(path))
    changed = False
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        if out.name not in shapes or len(dims) != len(shapes[out.name]):
            continue
        for axis, dim in enumerate(dims):
            if axis not in out_axes.get(out.name, {}) and not dim.HasField("dim_value"):
                dim.dim_value = int(shapes[out.name][axis])
                changed = True
    if changed:
        onnx.save(proto, str(path))


def _as_tuple(out: Any) -> tuple:
    if isinstance(out, (tuple, list)):
        return tuple(out)
    if isinstance(out, dict):
        return tuple(out.values())
    return (out,)


def _dynamic_axes(t: Any, config: ExportConfig) -> dict[int, str]:
    axes = {0: "batch"} if t.ndim >= 1 else {}
    is_int = not t.dtype.is_floating_point and not t.dtype.is_complex
    if config.seq_axis_for_int_inputs and is_int and t.ndim >= 2:
        axes[1] = "seq"
    return axes


def _check_export(path: Path, in_names, out_names, example, ref) -> float:  # noqa: ANN001
    """Run the exported file on the example input; refuse an export that computes something else."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {n: t.detach().cpu().numpy() for n, t in zip(in_names, example)}
    got = sess.run(list(out_names), feed)
    worst = 0.0
    for name, g, r in zip(out_names, got, ref):
        r = r.detach().cpu().numpy()
        if g.shape != r.shape:
            raise HastenError(f"exported output '{name}' has shape {g.shape}, the module gave {r.shape}")
        if np.issubdtype(r.dtype, np.floating):
            diff = float(np.max(np.abs(g.astype(np.float64) - r))) if r.size else 0.0
            if diff > 1e-3 * max(1.0, float(np.max(np.abs(r))) if r.size else 1.0):
                raise HastenError(
                    f"the ONNX export of output '{name}' differs from the module by {diff:.3g}",
                    hint="the tracer may have baked a data-dependent branch; try exporter='dynamo'",
                )
            worst = max(worst, diff)
    log.info("exported %s (max abs diff vs torch %.2e)", path, worst)
    return worst
