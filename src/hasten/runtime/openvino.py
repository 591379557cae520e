"""OpenVINO runtime backend (CPU), the only module that imports openvino.

Precision is always set explicitly: OpenVINO runs BF16 by default on CPUs that have it, which is
not the FP32 reference a user expects unless they ask for it (MEASURED.md).

``openvino-static`` compiles a copy of the model for each exact input shape it is given (OpenVINO's
CPU plugin is faster on static shapes: an NNCF INT8 MiniLM at 8 × 128 ran 7-9 % faster here, see
BENCHMARKS.md) and keeps the last ``STATIC_SHAPES_KEPT``; each new shape costs one compile, which
is reported (``static_compiles``). Right for fixed or bucketed shapes (a batcher padding to a few
lengths), wrong for inputs whose shape changes every call.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from hasten.core import HastenError, MissingDependencyError
from hasten.runtime.base import BackendConfig, Runner, RunnerInfo

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
STATIC_SHAPES_KEPT = 8


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
        self._core, self._ov_config = core, ov_config
        dynamic: list[str] = []
        try:
            self._ir = core.read_model(str(model.path))
            if config.dynamic_quant_group:
                from hasten.compress.nncf_quant import compress_float_matmuls

                self._ir, dynamic = compress_float_matmuls(self._ir)
                ov_config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = config.dynamic_quant_group
            self._compiled = core.compile_model(self._ir, "CPU", ov_config)
        except Exception as exc:  # OpenVINO raises RuntimeError with its own text
            raise HastenError(f"OpenVINO could not compile {model.path}: {exc}") from exc
        self._static = backend == "openvino-static"
        self._by_shape: OrderedDict[tuple, tuple[Any, list[Any]]] = OrderedDict()  # shapes -> (compiled, ports)
        self._shape_lock = threading.Lock()
        self.static_compiles, self.static_compile_s = 0, 0.0
        self._local = threading.local()
        self._names = [s.name for s in self.outputs]
        self._dynamic = (self._compiled, self._ports_of(self._compiled))
        if self._static and not any(port.get_partial_shape().is_dynamic for port in self._ir.inputs):
            # a model that is static already: its first compile is the one for its only shape
            self._by_shape[tuple(sorted((port.get_any_name(), tuple(port.get_shape())) for port in self._ir.inputs))] = self._dynamic
        actual = str(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        extra = {"precision": precision, "ov_inference_precision": actual, "openvino": ov.__version__}
        if config.dynamic_quant_group:
            extra["dynamic_quant_group"] = int(self._compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE"))
            extra["dynamic_int8_matmuls"] = len(dynamic)
        if self._static:
            extra["static_shapes_kept"] = STATIC_SHAPES_KEPT
        self.info = RunnerInfo(backend, config.resolved_threads(), "cpu", ("OpenVINO CPU",), time.perf_counter() - start,
                               extra)

    def _ports_of(self, compiled: Any) -> list[Any]:
        ports = []
        for name in self._names:
            port = next((p for p in compiled.outputs if name in p.get_names()), None)
            if port is None:
                raise HastenError(f"OpenVINO lost output '{name}' of the model while compiling it")
            ports.append(port)
        return ports

    def _for_shapes(self, feed: dict[str, np.ndarray]) -> tuple[Any, list[Any]]:
        """(compiled model, output ports) for these exact input shapes: compiled on first sight,
        the last STATIC_SHAPES_KEPT kept."""
        key = tuple((name, tuple(np.shape(value))) for name, value in sorted(feed.items()))
        with self._shape_lock:
            hit = self._by_shape.get(key)
            if hit is not None:
                self._by_shape.move_to_end(key)
                return hit
            ov = _ov()
            t0 = time.perf_counter()
            ir = self._ir.clone()
            ir.reshape({port: ov.PartialShape(list(np.shape(feed[port.get_any_name()])))
                        for port in ir.inputs if port.get_any_name() in feed})
            compiled = self._core.compile_model(ir, "CPU", self._ov_config)
            self.static_compile_s += time.perf_counter() - t0
            self.static_compiles += 1
            hit = self._by_shape[key] = (compiled, self._ports_of(compiled))
            while len(self._by_shape) > STATIC_SHAPES_KEPT:
                self._by_shape.popitem(last=False)
            return hit

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        compiled, ports = self._for_shapes(feed) if self._static else self._dynamic
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = OrderedDict()  # this thread's infer request per compiled model
        request = requests.get(id(compiled))
        if request is None or request[0] is not compiled:
            request = requests[id(compiled)] = (compiled, compiled.create_infer_request())
            while len(requests) > STATIC_SHAPES_KEPT + 1:  # forget requests of models no longer kept
                requests.popitem(last=False)
        requests.move_to_end(id(compiled))
        results = request[1].infer(feed)
        return {n: np.asarray(results[p]).copy() for n, p in zip(self._names, ports)}
