"""ONNX Runtime quantization handlers: dynamic INT8, static INT8 (QDQ), FP16.

Pre-processing follows ONNX Runtime's recommendation (`quant_pre_process`: symbolic shape
inference plus its basic graph optimisations) before quantizing.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hasten.compress.config import DynamicInt8, Fp16, StaticInt8
from hasten.core import HastenError
from hasten.measure.machine import int8_dot_product

log = logging.getLogger(__name__)


_PRE = ("import json, sys\n"
        "from onnxruntime.quantization.shape_inference import quant_pre_process\n"
        "quant_pre_process(sys.argv[1], sys.argv[2], **json.loads(sys.argv[3]))\n")


def preprocess(src: Path, dst: Path) -> dict[str, Any]:
    """ONNX Runtime's recommended pre-processing; falls back step by step where a model resists.

    Runs in a child process inside a temporary folder: when its symbolic shape inference gives up
    it leaves a copy of the model (plus a weights file) in the working directory.
    """
    import json
    import subprocess
    import tempfile

    attempts = ({}, {"skip_symbolic_shape": True}, {"skip_symbolic_shape": True, "skip_optimization": True})
    errors = []
    for kwargs in attempts:
        with tempfile.TemporaryDirectory(prefix="hasten-pre-") as tmp:
            proc = subprocess.run([sys.executable, "-c", _PRE, str(Path(src).resolve()), str(Path(dst).resolve()),
                                   json.dumps(kwargs)], cwd=tmp, capture_output=True, text=True)
        if proc.returncode == 0 and Path(dst).exists():
            return {"preprocess": "quant_pre_process", **{k: True for k in kwargs}}
        errors.append(proc.stderr.strip().splitlines()[-1:] or ["?"])
        log.info("quant_pre_process(%s) failed: %s", kwargs, errors[-1])
    raise HastenError(f"ONNX Runtime's quantization pre-processing failed on {src}: {errors[-1][0]}",
                      hint="check the model with onnx.checker, or quantize with --method nncf")


PREPARED = "ort_prepared"  # Model.info.extra key: what prepare_for_ort did (its presence: done)
ORT_METHODS = ("dynamic", "static")


def prepare_for_ort(model: Any, method: str, path: Path) -> tuple[Any, dict[str, Any]]:
    """The graph ONNX Runtime's quantizer should see, written to ``path``: transformer-fused where
    it applies, then pre-processed. Returns (model, facts); a model that is already prepared, or a
    method that is not ONNX Runtime's, comes back as it is. Node names in manifests refer to it."""
    if method not in ORT_METHODS:
        return model, {}
    if PREPARED in model.info.extra:  # known without re-reading a file that may be 90 MB
        return model, model.info.extra[PREPARED]
    if _has_preprocess_metadata(model.path):
        return model, {"preprocess": "quant_pre_process (done before)"}
    from dataclasses import replace

    from hasten.models import Model

    facts = prepare_file(model.path, path, model.info.extra)
    info = replace(model.info, path=str(path), extra={**model.info.extra, PREPARED: facts,
                                                       "prepared_from": str(model.path)})
    return Model(info, text_encoder=model.text_encoder, torch_factory=model.torch_factory), facts


def _has_preprocess_metadata(path: Path) -> bool:
    import onnx

    meta = onnx.load(str(path), load_external_data=False).metadata_props
    return any(p.key == "onnx.quant.pre_process" for p in meta)


def prepare_file(src: Path, dst: Path, facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Transformer fusion (when the graph has attention ONNX Runtime recognises; ``facts`` may
    give ``num_heads`` and ``hidden_size``), then ``quant_pre_process``; returns what was done."""
    from hasten.models.onnx_file import without_initializer_inputs

    facts = facts or {}
    if without_initializer_inputs(src, dst):  # IR < 4: initializers listed as inputs would become required
        src = dst
    fused = fuse_transformer(src, dst, int(facts.get("num_heads", 0)), int(facts.get("hidden_size", 0)))
    done = preprocess(dst if fused else src, dst)
    return {**done, **({"transformer_fusion": fused} if fused else {})}


def _excluded(config: Any) -> list[str]:
    """ORT rewrites a Gemm into ``<name>_MatMul`` + Add before quantizing it: exclude both names."""
    return [n for name in config.nodes_to_exclude for n in (name, f"{name}_MatMul")]


def _reduce_range(config: Any) -> bool:
    """7-bit weights avoid U8S8 overflow on CPUs without an INT8 dot-product instruction."""
    return config.reduce_range if config.reduce_range is not None else int8_dot_product() is None


def dynamic(model: Any, config: DynamicInt8, data: Any, out: Path) -> dict[str, Any]:
    """``model`` is already prepared (`prepare_for_ort`), as `quantize()` makes sure."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(model.path), str(out), op_types_to_quantize=list(config.op_types),
                     per_channel=config.per_channel, reduce_range=_reduce_range(config), weight_type=QuantType.QInt8,
                     nodes_to_exclude=_excluded(config))
    return {"weight_type": "int8", "activations": "uint8, quantized at run time",
            "reduce_range": _reduce_range(config), "int8_dot_product": int8_dot_product()}


def static(model: Any, config: StaticInt8, data: Any, out: Path) -> dict[str, Any]:
    """``model`` is already prepared (`prepare_for_ort`), as `quantize()` makes sure."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if data is None:
        raise HastenError("static quantization needs calibration data", hint="pass --data file.npz (a few hundred examples)")
    calib = data.take(config.calibration_size)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibration]
    extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if config.calibration == "percentile":
        extra["CalibPercentile"] = config.percentile
    reader, cache = _Reader(calib, model), None
    try:
        with contextlib.redirect_stdout(sys.stderr):  # ORT's calibrators print progress: keep stdout for results
            if config.calibration == "entropy":
                reader, cache = None, _entropy_ranges(model.path, config, _Reader(calib, model))
            quantize_static(str(model.path), str(out), reader, calibration_cache_path=cache, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(config.op_types), per_channel=config.per_channel,
                            reduce_range=_reduce_range(config), activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=_excluded(config),
                            calibrate_method=method, extra_options=extra)
    finally:
        if cache is not None:  # the entropy calibrator's folder: its augmented model and the ranges
            shutil.rmtree(cache.parent, ignore_errors=True)
    return {"format": "QDQ", "activation_type": "uint8 (asymmetric)", "weight_type": "int8 (symmetric)",
            "calibration_examples": len(calib), "reduce_range": _reduce_range(config),
            "int8_dot_product": int8_dot_product()}


def _entropy_ranges(pre: Path, config: StaticInt8, reader: Any) -> Path:
    """Entropy (KL) calibration with a 2048-bin histogram. quantize_static() cannot pass the bin
    count, and its default of 128 histogram bins for 128 quantized bins leaves the KL search a
    single candidate — the full range — so "entropy" would silently equal MinMax."""
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, create_calibrator, save_tensors_data

    tmp = Path(tempfile.mkdtemp(prefix="hasten-calib-"))
    calibrator = create_calibrator(pre, list(config.op_types), augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": 2048, "num_quantized_bins": 128, "symmetric": False})
    calibrator.collect_data(reader)
    cache = tmp / "ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def fp16(model: Any, config: Fp16, data: Any, out: Path) -> dict[str, Any]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.load(str(model.path))
    half = convert_float_to_float16(proto, keep_io_types=config.keep_io_types,
                                    node_block_list=list(config.nodes_to_exclude) or None)
    onnx.save(half, str(out))
    return {"keep_io_types": config.keep_io_types}


class _Reader:
    """Feeds calibration batches to ONNX Runtime's calibrator (batches of 8, no wrap-around)."""

    def __init__(self, data: Any, model: Any, batch: int = 8) -> None:
        self._batches: Iterator[dict[str, Any]] = iter(
            [data.batch(i, min(batch, len(data) - i)) for i in range(0, len(data), batch)])
        self._names = {s.name for s in model.inputs}

    def get_next(self) -> dict[str, Any] | None:
        feed = next(self._batches, None)
        return None if feed is None else {k: v for k, v in feed.items() if k in self._names}

    def rewind(self) -> None:  # part of ORT's reader protocol; one pass is all we give
        pass


def fuse_transformer(src: Path, dst: Path, num_heads: int = 0, hidden_size: int = 0) -> dict[str, Any] | None:
    """ONNX Runtime's transformer optimizer (attention, skip-LayerNorm, bias-GELU fusion), which
    ONNX Runtime recommends before quantizing a transformer: a fused Attention quantizes as a
    whole (QAttention). Returns the fusion counts, or None when nothing fused (not a transformer)."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    with contextlib.redirect_stdout(sys.stderr):
        opt = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
    stats = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    if not stats.get("Attention"):
        return None
    onnx.save(opt.model, str(dst))
    return stats
