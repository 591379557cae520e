"""The contract every backend implements: a `Runner` runs numpy dicts and says how it runs."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hasten.core import HastenError, TensorSpec, check_feed

GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")
PRECISIONS = ("fp32", "bf16", "fp16")
# ONNX Runtime graph transformers that may be turned off (BackendConfig.disabled_optimizers), by the
# fused op each one creates. ONNX Runtime ignores names it does not know, so hasten checks them.
ORT_FUSIONS = {
    "SkipLayerNormalization": "SkipLayerNormFusion", "BiasGelu": "BiasGeluFusion", "FastGelu": "FastGeluFusion",
    "Gelu": "GeluFusion", "QuickGelu": "QuickGeluFusion", "LayerNormalization": "LayerNormFusion",
    "SimplifiedLayerNormalization": "SimplifiedLayerNormFusion", "Attention": "AttentionFusion",
    "EmbedLayerNormalization": "EmbedLayerNormFusion", "FusedMatMul": "MatmulTransposeFusion",
    "MatMulIntegerToFloat": "MatMulIntegerToFloatFusion", "DynamicQuantizeMatMul": "DynamicQuantizeMatMulFusion",
    "FusedConv": "ConvActivationFusion", "FusedGemm": "GemmActivationFusion", "BiasSoftmax": "BiasSoftmaxFusion",
}


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_disabled_optimizers(names: tuple[str, ...]) -> None:
    """ONNX Runtime ignores optimizer names it does not know, so hasten refuses them itself."""
    unknown = [n for n in names if n not in ORT_FUSIONS.values()]
    if unknown:
        raise HastenError(f"unknown ONNX Runtime optimizer(s) to disable: {', '.join(unknown)}",
                          hint="known: " + ", ".join(sorted(ORT_FUSIONS.values())))


def check_dynamic_quant_group(group: int, backend: str | None = None) -> None:
    """``dynamic_quant_group`` is 0 (off) or a group size of 16–4096, and only OpenVINO backends
    run it (pass ``backend`` to check that too). One check for the API, the CLI and config.yaml."""
    if not isinstance(group, int) or not (group == 0 or 16 <= group <= 4096):
        raise HastenError(f"dynamic_quant_group must be 0 (off) or a group size from 16 to 4096, got {group!r}",
                          hint="e.g. 128: activations quantized per 128 values (32: more accurate, slower)")
    if group and backend is not None and not backend.startswith("openvino"):
        raise HastenError(f"dynamic_quant_group (float MatMuls as dynamic INT8) is an OpenVINO option, for use on an "
                          f"openvino backend (got {group} on {backend})",
                          hint="use an openvino backend (openvino, openvino-static), or leave the option out")


@dataclass(frozen=True)
class BackendConfig:
    """How a backend runs: threads (``None`` = every usable core), spinning, graph optimisation
    (ONNX Runtime), whether falling back from the requested device to CPU is allowed, the device
    index, and the compute precision for backends that choose one (OpenVINO, torch).

    ``dynamic_quant_group`` (OpenVINO only; 0 = off): the MatMuls whose weights are still float
    run in INT8 all the same — their weights compressed to INT8 per output channel when the model
    loads, their activations quantized at run time in groups of that many values (OpenVINO's
    dynamic quantization). A quantized model's float fallback nodes then cost little time."""

    threads: int | None = None
    spinning: bool = False
    graph_optimization: str = "all"
    allow_fallback: bool = False
    device_id: int = 0
    validate_inputs: bool = True
    precision: str = "fp32"
    disabled_optimizers: tuple[str, ...] = ()  # ONNX Runtime fusions to turn off (names in ORT_FUSIONS)
    dynamic_quant_group: int = 0

    def __post_init__(self) -> None:
        check_disabled_optimizers(self.disabled_optimizers)
        check_dynamic_quant_group(self.dynamic_quant_group)
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise HastenError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.graph_optimization not in GRAPH_OPT_LEVELS:
            raise HastenError(
                f"unknown graph optimisation level '{self.graph_optimization}'",
                hint="use one of: " + ", ".join(GRAPH_OPT_LEVELS),
            )
        if self.precision not in PRECISIONS:
            raise HastenError(f"unknown precision '{self.precision}'", hint="use one of: " + ", ".join(PRECISIONS))

    def resolved_threads(self) -> int:
        return self.threads or usable_cores()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunnerInfo:
    """What a runner actually runs on: backend, threads, providers/device, and cold start."""

    backend: str
    threads: int
    device: str
    providers: tuple[str, ...] = ()
    cold_start_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["providers"] = list(self.providers)
        return d


class Runner(ABC):
    """Runs a model: ``run({name: array}) -> {name: array}``. Safe to call from several threads
    when the backend allows it (ONNX Runtime does)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    info: RunnerInfo

    def __init__(self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], validate: bool) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self._validate = validate

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Inputs are checked against the model's specs (names, dtypes, ranks)."""
        if self._validate:
            check_feed(self.inputs, feed)
        return self._run(feed)

    @abstractmethod
    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None:
        """Release what the runner holds (sessions, device memory)."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.backend}, threads={self.info.threads}, device={self.info.device})"
