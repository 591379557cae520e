"""Quantization-aware training for models that came from torch, exported as a QDQ ONNX model.

Each ``nn.Linear`` / ``nn.Conv2d`` of a copy of the module is fake-quantized: its weight int8
symmetric per output channel (scale = max|w| / 127, or /63 without VNNI, recomputed every step),
its input activation uint8 asymmetric per tensor, starting from a MinMax observer over a
calibration pass and then *learned* with the weights (LSQ,
``torch._fake_quantize_learnable_per_tensor_affine``). The fake-quant ops export as
QuantizeLinear / DequantizeLinear pairs that ONNX Runtime runs. torch is imported lazily.
"""

from __future__ import annotations

import copy
import math
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hasten.compress.config import Qat
from hasten.compress.training import as_tuple, fidelity_targets, fit, shuffled_batches
from hasten.core import HastenError

if TYPE_CHECKING:
    from hasten.models import Dataset, Model

CALIBRATION_EXAMPLES = 256
EXPORT_RTOL = 0.05  # fake-quant rounding (x*(1/s) vs x/s) may flip a few buckets; a wrong graph is far off


def qat(model: Model, config: Qat, data: Dataset | None, out: Path) -> dict[str, Any]:
    """Fine-tune a fake-quantized copy of ``model``'s torch module on ``data``; export QDQ ONNX to ``out``."""
    if not model.has_torch:
        raise HastenError(f"qat needs the PyTorch module of '{model.name}', which was loaded from {model.info.source}",
                          hint="load it with load_model(module, example_input=...), or use --method static, dynamic or nncf")
    if data is None:
        raise HastenError("qat needs training data", hint="pass --data file.npz (with labels for classifiers)")
    from hasten.models.torch_export import import_torch

    torch = import_torch()
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # deterministic, and one core left to whatever shares the machine
    try:
        student, facts = _train(model, config, data, torch)
    finally:
        torch.set_num_threads(threads)
    facts.update(_export(model, student, data, out, torch))
    return facts


def _train(model: Model, config: Qat, data: Dataset, torch: Any) -> tuple[Any, dict[str, Any]]:
    from hasten.measure.machine import int8_dot_product

    weight_qmax = 127 if int8_dot_product() is not None else 63  # 7-bit weights avoid U8S8 overflow without VNNI
    student = copy.deepcopy(model.torch_module()).eval()  # eval: dropout off, batch-norm statistics kept
    layers = _fake_quantize(student, torch, weight_qmax)
    if not layers:
        raise HastenError(f"'{model.name}' has no nn.Linear or nn.Conv2d layer to quantize",
                          hint="use --method static or nncf, which quantize the ONNX graph")
    batches = shuffled_batches([s.name for s in model.inputs], data, config.batch_size, config.steps, torch)
    calib = batches[: max(1, math.ceil(min(len(data), CALIBRATION_EXAMPLES) / config.batch_size))]
    _set_mode(student, "observe")
    with torch.no_grad():
        for feed, _ in calib:
            student(*feed)
    _set_mode(student, "train")
    targets, loss_name, loss_fn = fidelity_targets(model.torch_module(), batches, torch)
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=config.lr)

    def step_loss(step: int) -> Any:
        feed, _ = batches[step % len(batches)]
        return loss_fn(as_tuple(student(*feed)), targets[step % len(batches)])

    fitted = fit(student, step_loss, config.steps, optimizer, torch, label="qat", train_mode=False)
    loss = fitted.final_loss
    _set_mode(student, "export")
    acts = {name: student.get_submodule(name).act for name in layers}
    observers = {"weights": f"int8 symmetric per output channel, scale=max|w|/{weight_qmax}, per step",
                 "activations": f"uint8 asymmetric per tensor; MinMax over {sum(len(f[0]) for f, _ in calib)} "
                 "examples, then learned (LSQ)",
                 "activation_scale_calibrated_to_learned": {n: [float(f"{a.calibrated_scale:.4g}"),
                                                                float(f"{float(a.export_scale):.4g}")]
                                                            for n, a in acts.items()}}
    return student, {"steps": config.steps, "final_loss": round(loss, 6), "loss": loss_name, "optimizer": "Adam",
                     "lr": config.lr, "batch_size": config.batch_size, "layers_fake_quantized": layers,
                     "observers": observers}


def _export(model: Model, student: Any, data: Dataset, out: Path, torch: Any) -> dict[str, Any]:
    """Legacy (TorchScript) export, opset 18, with the source model's names and dynamic axes;
    then check ONNX Runtime computes what the fake-quantized module computes."""
    import warnings

    in_names = [s.name for s in model.inputs]
    out_names = [s.name for s in model.outputs]
    axes = {s.name: {a: {0: "batch", 1: "seq"}.get(a, f"dim{a}") for a, d in enumerate(s.shape) if d == -1}
            for s in model.inputs + model.outputs}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's deprecation and trace warnings
        torch.onnx.export(student, tuple(model.example_input()), str(out), input_names=in_names,
                          output_names=out_names, dynamic_axes=axes, opset_version=18, dynamo=False)
    folded = _store_int8_weights(out)
    return {"format": "QDQ", "exporter": "legacy", "opset": 18, "int8_weight_tensors": folded,
            "export_relative_rms_diff": _check_export(out, student, data.batch(0, min(8, len(data))), in_names,
                                                      out_names, torch)}


def _check_export(path: Path, student: Any, feed: dict[str, np.ndarray], in_names: list[str], out_names: list[str],
                  torch: Any) -> float:
    """Worst relative RMS difference between ONNX Runtime on the export and the fake-quantized
    module; refuses an export that computes something else."""
    import onnxruntime as ort

    with torch.no_grad():
        ref = [t.numpy() for t in as_tuple(student(*(torch.from_numpy(feed[n]) for n in in_names)))]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    got = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(
        out_names, {n: feed[n] for n in in_names})
    worst = 0.0
    for name, g, r in zip(out_names, got, ref):
        if np.issubdtype(r.dtype, np.floating) and r.size:
            rel = float(np.sqrt(np.mean((g - r) ** 2)) / max(np.sqrt(np.mean(r.astype(np.float64) ** 2)), 1e-6))
            if rel > EXPORT_RTOL:
                raise HastenError(f"the QAT export of output '{name}' differs from the fake-quantized module "
                                  f"by {rel:.1%} (relative RMS)", hint="report this model; use --method static meanwhile")
            worst = max(worst, rel)
    return round(worst, 6)


def _store_int8_weights(path: Path) -> int:
    """Fold each QuantizeLinear of a constant (a weight) into an int8 initializer read by its
    DequantizeLinear: the file shrinks ~4x and has the layout ONNX Runtime and NNCF write."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    kept, folded = [], 0
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) != 3 or not all(i in consts for i in node.input):
            kept.append(node)
            continue
        x, scale, zp = (consts[i] for i in node.input)
        if scale.ndim == 1 and x.ndim > 1:  # per-axis: line the scales up with their axis
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        info = np.iinfo(zp.dtype)
        q = np.clip(np.rint(x / scale) + zp.astype(np.int32), info.min, info.max).astype(zp.dtype)
        graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        folded += 1
    used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    live = [i for i in graph.initializer if i.name in used]  # the float weights go
    del graph.node[:], graph.initializer[:]
    graph.node.extend(kept)
    graph.initializer.extend(live)
    onnx.save(proto, str(path))
    return folded


def _set_mode(module: Any, mode: str) -> None:
    for m in module.modules():
        if hasattr(m, "qat_mode"):
            m.set_mode(mode)


def _fake_quantize(module: Any, torch: Any, weight_qmax: int) -> list[str]:
    """Swap each plain nn.Linear / nn.Conv2d for a fake-quantized twin (same parameters, same
    place in the module tree, so exported node names match the source); returns their names."""
    linear, conv = _fake_quant_classes()
    swaps = {torch.nn.Linear: linear, torch.nn.Conv2d: conv}
    names = []
    for name, child in list(module.named_modules()):
        cls = swaps.get(type(child))
        if cls is None or not name:
            continue
        twin = cls.__new__(cls)
        twin.__dict__.update({k: (dict(v) if isinstance(v, dict) else v) for k, v in child.__dict__.items()})
        twin.setup(weight_qmax)
        parent_name, _, attr = name.rpartition(".")
        setattr(module.get_submodule(parent_name), attr, twin)
        names.append(name)
    return names


@cache
def _fake_quant_classes() -> tuple[type, type]:
    """The fake-quant modules, defined on first use so that importing this file needs no torch."""
    import torch
    from torch import nn

    class ActQuant(nn.Module):
        """uint8 asymmetric per-tensor fake quant: MinMax observer, then a learned range (LSQ)."""

        qat_mode = "observe"

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("min_val", torch.tensor(float("inf")))
            self.register_buffer("max_val", torch.tensor(float("-inf")))
            self.scale = nn.Parameter(torch.ones(1))
            self.zero_point = nn.Parameter(torch.zeros(1))

        def set_mode(self, mode: str) -> None:
            if mode == "train" and self.qat_mode == "observe":
                seen = bool(self.min_val <= self.max_val)  # a layer the calibration never reached gets [0, 1]
                lo, hi = (min(float(self.min_val), 0.0), max(float(self.max_val), 0.0)) if seen else (0.0, 1.0)
                scale = max((hi - lo) / 255.0, 1e-8)
                self.scale.data.fill_(scale)
                self.calibrated_scale = scale
                self.zero_point.data.fill_(float(np.clip(round(-lo / scale), 0, 255)))
            if mode == "export":  # buffers export as constants, not as ops on the parameters
                self.register_buffer("export_scale", self.scale.detach().clamp(min=1e-8).reshape(()).clone())
                zp = self.zero_point.detach().round().clamp(0, 255).to(torch.int32).reshape(())
                self.register_buffer("export_zero_point", zp)
            self.qat_mode = mode

        def forward(self, x: Any) -> Any:
            if self.qat_mode == "observe":
                self.min_val.copy_(torch.minimum(self.min_val, x.detach().min()))
                self.max_val.copy_(torch.maximum(self.max_val, x.detach().max()))
                return x
            if self.qat_mode == "export":  # the plain op, which exports as QuantizeLinear/DequantizeLinear
                return torch.fake_quantize_per_tensor_affine(x, self.export_scale, self.export_zero_point, 0, 255)
            grad_factor = 1.0 / math.sqrt(x.numel() * 255)  # LSQ's step-size gradient scale
            return torch._fake_quantize_learnable_per_tensor_affine(
                x, self.scale.clamp(min=1e-8), self.zero_point, 0, 255, grad_factor)

    class _WeightQuant:
        qat_mode = "observe"

        def setup(self, weight_qmax: int) -> None:
            self.weight_qmax = weight_qmax
            self.act = ActQuant()

        def set_mode(self, mode: str) -> None:  # ActQuant is reached by module.modules() itself
            self.qat_mode = mode
            if mode == "export":  # a buffer exports as a constant, not as ops on the weight
                self.register_buffer("weight_scale", self._weight_scale(), persistent=False)

        def _weight_scale(self) -> Any:
            w = self.weight.detach()
            return (w.abs().amax(dim=tuple(range(1, w.ndim))) / self.weight_qmax).clamp(min=1e-8)

        def quantized_weight(self, transposed: bool = False) -> Any:
            scale = self.weight_scale if self.qat_mode == "export" else self._weight_scale()
            zp = torch.zeros(self.weight.shape[0], dtype=torch.int32)
            w, axis = (self.weight.t(), 1) if transposed else (self.weight, 0)
            return torch.fake_quantize_per_channel_affine(w, scale, zp, axis, -128, 127)

    class QatLinear(_WeightQuant, nn.Linear):
        def forward(self, x: Any) -> Any:
            if x.dim() == 2:  # exports as Gemm(transB=1) reading the DequantizeLinear
                return nn.functional.linear(self.act(x), self.quantized_weight(), self.bias)
            # x @ W^T with the transpose ahead of the quantizer, so DequantizeLinear feeds the MatMul
            y = torch.matmul(self.act(x), self.quantized_weight(transposed=True))
            return y if self.bias is None else y + self.bias

    class QatConv2d(_WeightQuant, nn.Conv2d):
        def forward(self, x: Any) -> Any:
            return self._conv_forward(self.act(x), self.quantized_weight(), self.bias)

    return QatLinear, QatConv2d
