"""OpenVINO-side precision handlers: NNCF post-training INT8 (QDQ ONNX) and BF16.

Both produce a model meant for the OpenVINO backend: the same NNCF QDQ model ran 3.7–5.4× faster
than FP32 on OpenVINO but only 1.0–1.8× on ONNX Runtime here (MEASURED.md), so the result
recommends ``openvino``. This is the only module that imports nncf.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hasten.compress.config import Bf16, NncfInt8
from hasten.core import HastenError, MissingDependencyError

if TYPE_CHECKING:
    from hasten.models import Dataset, Model

log = logging.getLogger(__name__)

# Ops that may sit between the attention scores MatMul and its Softmax (scaling, mask, casts).
_ATTENTION_PATH_OPS = ("Div", "Mul", "Add", "Sub", "Where", "Cast", "Reshape")


def _nncf() -> Any:
    try:
        import nncf
    except ImportError as exc:
        raise MissingDependencyError("nncf", "openvino", "NNCF quantization") from exc
    return nncf


def has_attention(proto: Any, max_hops: int = 4) -> bool:
    """True when some Softmax is fed by a MatMul (directly or through a few scaling/mask ops)."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    for node in proto.graph.node:
        if node.op_type != "Softmax":
            continue
        frontier = [node.input[0]]
        for _ in range(max_hops + 1):
            parents = [producer[t] for t in frontier if t in producer]
            if any(p.op_type == "MatMul" for p in parents):
                return True
            frontier = [i for p in parents if p.op_type in _ATTENTION_PATH_OPS for i in p.input]
            if not frontier:
                break
    return False


def calibration_items(model: Model, data: Dataset, size: int) -> list[dict[str, Any]]:
    """``size`` single-example feeds (name -> array) for the model's inputs; token inputs keep
    each example's own length, so calibration sees the real spread of sequence lengths."""
    names = [s.name for s in model.inputs]
    items = []
    for i in range(min(size, len(data))):
        feed = data.batch(i, 1)
        missing = [n for n in names if n not in feed]
        if missing:
            raise HastenError(f"calibration data has no array for input(s) {missing}",
                              hint="the data set needs one array per model input: " + ", ".join(names))
        items.append({n: feed[n] for n in names})
    return items


def float_matmuls(ir: Any) -> list[str]:
    """Names of the MatMuls of an OpenVINO model whose weight is a float constant (not quantized)."""
    names = []
    for op in ir.get_ops():
        if op.get_type_name() != "MatMul":
            continue
        for i in range(op.get_input_size()):
            src = op.input_value(i).get_node()
            if src.get_type_name() == "Constant" and src.get_element_type().is_real():
                names.append(op.get_friendly_name())
                break
    return names


def compress_float_matmuls(ir: Any) -> tuple[Any, list[str]]:
    """The OpenVINO model with the weights of its float MatMuls compressed to INT8 (symmetric, per
    output channel; NNCF's weight compression), and their names. Embedding tables and MatMuls
    quantized already are left alone. With OpenVINO's ``DYNAMIC_QUANTIZATION_GROUP_SIZE`` the CPU
    plugin then runs those MatMuls on INT8 kernels, quantizing activations at run time."""
    names = float_matmuls(ir)
    if not names:
        return ir, []
    nncf = _nncf()
    # on every model load: its warnings to stderr, its INFO bit-width table and its progress bar nowhere
    with _nncf_output_to_stderr(), contextlib.redirect_stdout(io.StringIO()):
        level = logging.getLogger("nncf").level
        logging.getLogger("nncf").setLevel(logging.WARNING)
        try:
            ir = nncf.compress_weights(ir, mode=nncf.CompressWeightsMode.INT8_SYM,
                                       ignored_scope=nncf.IgnoredScope(types=["Gather"], validate=False))
        finally:
            logging.getLogger("nncf").setLevel(level)
    return ir, names


@contextlib.contextmanager
def _nncf_output_to_stderr() -> Iterator[None]:
    """NNCF logs and draws progress on stdout; keep stdout for results."""
    logger = logging.getLogger("nncf")
    handlers = [h for h in logger.handlers if isinstance(h, logging.StreamHandler) and h.stream is sys.stdout]
    for h in handlers:
        h.setStream(sys.stderr)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for h in handlers:
            h.setStream(sys.stdout)


def nncf_int8(model: Model, config: NncfInt8, data: Dataset | None, out: Path) -> dict[str, Any]:
    """NNCF post-training INT8 of the ONNX model; writes a QDQ ONNX model (weights inline) to ``out``."""
    if data is None:
        raise HastenError("nncf quantization needs calibration data",
                          hint="pass --data file.npz (a few hundred examples), or use --method dynamic")
    nncf = _nncf()
    import onnx

    proto = onnx.load(str(model.path))
    transformer = config.transformer if config.transformer is not None else has_attention(proto)
    items = calibration_items(model, data, config.subset_size)
    preset = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}[config.preset]
    kwargs: dict[str, Any] = {"preset": preset, "subset_size": len(items)}
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if config.nodes_to_exclude:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(config.nodes_to_exclude))
    if config.smooth_quant_alpha is not None:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=config.smooth_quant_alpha))
    try:
        with _nncf_output_to_stderr():
            quantized = nncf.quantize(proto, nncf.Dataset(items), **kwargs)
    except nncf.ValidationError as exc:  # e.g. an excluded node name that is not in the graph
        raise HastenError(f"NNCF refused the quantization settings: {exc}",
                          hint="node names to exclude must be ONNX node names of this model") from exc
    onnx.save(quantized, str(out))
    return {"backend": "openvino", "nncf": nncf.__version__, "format": "QDQ", "preset": config.preset,
            "model_type": "transformer" if transformer else "default",
            "model_type_detected": config.transformer is None, "subset_size": len(items),
            "smooth_quant_alpha": config.smooth_quant_alpha if config.smooth_quant_alpha is not None else "nncf default",
            "ignored_nodes": list(config.nodes_to_exclude)}


def bf16(model: Model, config: Bf16, data: Dataset | None, out: Path) -> dict[str, Any]:
    """BF16 is a precision the backend runs, not a graph change: the ONNX file is copied unchanged
    and the result recommends ``openvino-bf16``. Refused on CPUs without native BF16."""
    from hasten.runtime.openvino import cpu_capabilities

    capabilities = cpu_capabilities()
    if "BF16" not in capabilities:
        raise HastenError("this CPU has no BF16 (AVX512_BF16/AMX); OpenVINO would emulate nothing faster",
                          hint="use --method nncf (INT8 on OpenVINO) or --method dynamic (INT8 on ONNX Runtime)")
    if config.nodes_to_exclude:
        log.warning("bf16: nodes_to_exclude is ignored; OpenVINO chooses BF16 per layer itself")
    _copy_onnx(model.path, out)
    return {"backend": "openvino-bf16", "graph_changed": False,
            "note": "FP32 graph; OpenVINO runs it with INFERENCE_PRECISION_HINT=bf16 on this CPU"}


def _copy_onnx(src: Path, dst: Path) -> None:
    """Copy an ONNX file; weights kept in a side file are inlined so that ``dst`` stands alone."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    header = onnx.load(str(src), load_external_data=False)
    if any(uses_external_data(t) for t in header.graph.initializer):
        onnx.save(onnx.load(str(src)), str(dst))
    else:
        shutil.copyfile(src, dst)
