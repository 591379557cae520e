"""OpenVINO runtime backend (CPU), the only module that imports openvino.

Precision is always set explicitly: OpenVINO runs BF16 by default on CPUs that have it, which is
not the FP32 reference a user expects unless they ask for it (MEASURED.md).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from hasten.core import HastenError, MissingDependencyError
from hasten.runtime.base import BackendConfig, Runner, RunnerInfo

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def _ov() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependencyError("openvino", "openvino", "the openvino backend") from exc
    return openvino


def cpu_capabilities() -> list[str]:
    return list(_ov().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class OpenVinoRunner(Runner):
    """A model compiled by OpenVINO for the CPU; one infer request per calling thread."""

    def __init__(self, model: Any, backend: str, config: BackendConfig) -> None:
        super().__init__(model.inputs, model.outputs, config.validate_inputs)
        ov = _ov()
        precision = "bf16" if backend == "openvino-bf16" else config.precision
        if precision not in PRECISION_HINTS:
            raise HastenError(f"openvino: unknown precision '{precision}'", hint="use fp32, bf16 or fp16")
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise HastenError("openvino-bf16: this CPU has no BF16 support (no AVX512_BF16/AMX)",
                              hint="use the fp32 openvino backend")
        start = time.perf_counter()
        ov_config = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
            "INFERENCE_NUM_THREADS": config.resolved_threads(),
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,  # pinned threads fight other runtimes for cores
        }
        try:
            self._compiled = core.compile_model(core.read_model(str(model.path)), "CPU", ov_config)
        except Exception as exc:  # OpenVINO raises RuntimeError with its own text
            raise HastenError(f"OpenVINO could not compile {model.path}: {exc}") from exc
        self._local = threading.local()
        self._names = [s.name for s in self.outputs]
        self._ports = [self._port(name) for name in self._names]
        actual = str(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.info = RunnerInfo(backend, config.resolved_threads(), "cpu", ("OpenVINO CPU",), time.perf_counter() - start,
                               {"precision": precision, "ov_inference_precision": actual, "openvino": ov.__version__})

    def _port(self, name: str) -> Any:
        for port in self._compiled.outputs:
            if name in port.get_names():
                return port
        raise HastenError(f"OpenVINO lost output '{name}' of the model while compiling it")

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        results = request.infer(feed)
        return {n: np.asarray(results[p]).copy() for n, p in zip(self._names, self._ports)}
