"""One small frozen config per quantization method; validated on creation, JSON round-trip."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from hasten.core import HastenError

CALIBRATIONS = ("minmax", "entropy", "percentile")


def _check(cond: bool, message: str, hint: str | None = None) -> None:
    if not cond:
        raise HastenError(message, hint=hint)


@dataclass(frozen=True)
class QuantConfig:
    """Base: ``method`` names the handler; ``nodes_to_exclude`` keeps nodes in float."""

    method: ClassVar[str] = ""
    nodes_to_exclude: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        d["method"] = self.method
        return d

    def excluding(self, nodes: tuple[str, ...]) -> "QuantConfig":
        from dataclasses import replace

        return replace(self, nodes_to_exclude=tuple(dict.fromkeys(self.nodes_to_exclude + tuple(nodes))))


@dataclass(frozen=True)
class DynamicInt8(QuantConfig):
    """ONNX Runtime dynamic INT8: weights quantized ahead, activations at run time."""

    method: ClassVar[str] = "dynamic"
    per_channel: bool = True
    # Attention: a transformer-fused attention block quantizes whole (QAttention)
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Attention")
    reduce_range: bool | None = None  # None: chosen for the CPU (7-bit weights without VNNI)


@dataclass(frozen=True)
class StaticInt8(QuantConfig):
    """ONNX Runtime static INT8 in QDQ format, calibrated on data."""

    method: ClassVar[str] = "static"
    calibration: str = "minmax"
    per_channel: bool = True
    # MaxPool is exact in int8 and keeps a CNN's data in int8 between convolutions
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Conv", "MaxPool")
    calibration_size: int = 128
    percentile: float = 99.999
    reduce_range: bool | None = None

    def __post_init__(self) -> None:
        _check(self.calibration in CALIBRATIONS, f"unknown calibration method '{self.calibration}'",
               "use one of: " + ", ".join(CALIBRATIONS))
        _check(self.calibration_size >= 1, f"calibration_size must be >= 1, got {self.calibration_size}")
        _check(50.0 < self.percentile <= 100.0, f"percentile must be in (50, 100], got {self.percentile}")


@dataclass(frozen=True)
class Fp16(QuantConfig):
    """Weights and compute in FP16 (fast on GPUs; on CPUs the guard usually refuses it)."""

    method: ClassVar[str] = "fp16"
    keep_io_types: bool = True


@dataclass(frozen=True)
class Bf16(QuantConfig):
    """BF16 inference precision on a backend that runs it (OpenVINO on CPUs with AVX512_BF16/AMX)."""

    method: ClassVar[str] = "bf16"


@dataclass(frozen=True)
class NncfInt8(QuantConfig):
    """NNCF post-training INT8 (QDQ ONNX), meant for the OpenVINO backend."""

    method: ClassVar[str] = "nncf"
    preset: str = "mixed"          # "performance" (symmetric) or "mixed" (asymmetric activations)
    subset_size: int = 300
    transformer: bool | None = None  # None: detected from the graph (attention MatMuls / Softmax)
    # SmoothQuant strength for MatMuls of transformers (NNCF's default 0.95 when None; -1 turns it off)
    smooth_quant_alpha: float | None = None

    def __post_init__(self) -> None:
        _check(self.preset in ("performance", "mixed"), f"unknown NNCF preset '{self.preset}'", "use performance or mixed")
        _check(self.smooth_quant_alpha is None or self.smooth_quant_alpha == -1 or 0 <= self.smooth_quant_alpha <= 1,
               f"smooth_quant_alpha must be between 0 and 1 (or -1 to turn smoothing off), got {self.smooth_quant_alpha}")
        _check(self.subset_size >= 1, f"subset_size must be >= 1, got {self.subset_size}")


@dataclass(frozen=True)
class Qat(QuantConfig):
    """Quantization-aware training (torch models): fake-quant fine-tuning, then a QDQ ONNX export."""

    method: ClassVar[str] = "qat"
    steps: int = 200
    lr: float = 1e-4
    batch_size: int = 32

    def __post_init__(self) -> None:
        _check(self.steps >= 1 and self.lr > 0 and self.batch_size >= 1, "qat needs steps >= 1, lr > 0, batch_size >= 1")


METHODS: dict[str, type[QuantConfig]] = {c.method: c for c in (DynamicInt8, StaticInt8, Fp16, Bf16, NncfInt8, Qat)}


def config_from_dict(d: dict[str, Any]) -> QuantConfig:
    """Inverse of ``to_dict`` (for manifests and saved configs)."""
    d = dict(d)
    method = d.pop("method", None)
    _check(method in METHODS, f"unknown quantization method '{method}'", "use one of: " + ", ".join(METHODS))
    cls = METHODS[method]
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    _check(not unknown, f"{method}: unknown field(s) {unknown}", "known: " + ", ".join(sorted(names)))
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
