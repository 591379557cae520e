"""ONNX Runtime backends, one per execution provider (CPU, CUDA, TensorRT, OpenVINO EP)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from hasten.core import HastenError, MissingDependencyError
from hasten.runtime.base import BackendConfig, Runner, RunnerInfo

log = logging.getLogger(__name__)

# backend name -> (provider the user asked for, device description)
PROVIDERS = {
    "ort-cpu": ("CPUExecutionProvider", "cpu"),
    "ort-cuda": ("CUDAExecutionProvider", "cuda"),
    "ort-tensorrt": ("TensorrtExecutionProvider", "cuda"),
    "ort-openvino": ("OpenVINOExecutionProvider", "cpu"),
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", "core", "the ONNX Runtime backends") from exc
    return onnxruntime


def provider_list(backend: str, config: BackendConfig) -> list[Any]:
    """The providers to ask ONNX Runtime for, most preferred first, with their options."""
    dev = {"device_id": str(config.device_id)}
    if backend == "ort-cpu":
        return ["CPUExecutionProvider"]
    if backend == "ort-cuda":
        # FP32 means FP32: ONNX Runtime's CUDA EP would otherwise use TF32 tensor cores on Ampere and
        # newer (10-bit mantissa; 5e-4 relative error on a 4-input Linear, measured on an H200)
        return [("CUDAExecutionProvider", {**dev, "use_tf32": "0"}), "CPUExecutionProvider"]
    if backend == "ort-tensorrt":
        return [("TensorrtExecutionProvider", dev), ("CUDAExecutionProvider", dev), "CPUExecutionProvider"]
    if backend == "ort-openvino":
        return [("OpenVINOExecutionProvider", {"device_type": "CPU", "num_of_threads": str(config.resolved_threads())}),
                "CPUExecutionProvider"]
    raise HastenError(f"unknown ONNX Runtime backend '{backend}'", hint="use one of: " + ", ".join(PROVIDERS))


def session_options(config: BackendConfig) -> Any:
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = config.resolved_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[config.graph_optimization]
    # Spinning idle threads steal cores from other runtimes and server threads (MEASURED.md).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.spinning else "0")
    opts.log_severity_level = 3
    return opts


def optimized_graph(path: Any, level: str = "all", threads: int = 1, disabled_optimizers: tuple[str, ...] = ()) -> Any:
    """The model ONNX Runtime's CPU provider actually executes after its graph optimisations at
    ``level`` (fusions, contrib ops), read back (without weights) from the file it saves.
    ONNX Runtime's own load error propagates: it names what could not be loaded."""
    import tempfile
    from pathlib import Path

    import onnx

    with tempfile.TemporaryDirectory(prefix="hasten-optimized-") as tmp:
        opts = session_options(BackendConfig(threads=threads, graph_optimization=level))
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        _ort().InferenceSession(str(path), opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled_optimizers) or None)
        return onnx.load(opts.optimized_model_filepath, load_external_data=False)


def open_session(path: Any, backend: str, config: BackendConfig, options: Any = None) -> Any:
    """An InferenceSession on ``backend``'s provider (``options`` default: `session_options`).
    A missing provider, an unloadable model, or a silent fall back to another provider (unless
    ``config.allow_fallback``) is a HastenError."""
    ort = _ort()
    wanted = PROVIDERS[backend][0]
    if wanted not in ort.get_available_providers():
        raise HastenError(
            f"backend {backend} needs ONNX Runtime's {wanted}, which this onnxruntime build lacks "
            f"(it has {', '.join(ort.get_available_providers())})",
            hint="install the onnxruntime build with that provider (e.g. onnxruntime-gpu), or use ort-cpu",
        )
    try:
        extra = {"disabled_optimizers": list(config.disabled_optimizers)} if config.disabled_optimizers else {}
        session = ort.InferenceSession(str(path), options or session_options(config),
                                       providers=provider_list(backend, config), **extra)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise HastenError(f"ONNX Runtime could not load {path}: {exc}") from exc
    active = session.get_providers()[0]
    if active != wanted:
        msg = f"{backend}: ONNX Runtime fell back from {wanted} to {active}"
        if not config.allow_fallback:
            raise HastenError(msg, hint="check the device and drivers, or allow fallback (--allow-fallback)")
        log.warning(msg)
    return session


def run_session(session: Any, output_names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``session.run`` with ONNX Runtime's run-time errors turned into a HastenError."""
    try:
        return session.run(output_names, feed)
    except Exception as exc:  # ORT's RuntimeException & co: bad values the specs cannot catch
        raise HastenError(f"ONNX Runtime failed running the model: {exc}",
                          hint="check the input values (e.g. token ids inside the vocabulary)") from exc


def _gpu_name(index: int) -> str:
    from hasten.measure.peaks import _gpu_models

    models = _gpu_models()
    return models[index] if index < len(models) else "unknown NVIDIA GPU"


class OrtRunner(Runner):
    """An ``onnxruntime.InferenceSession`` behind the Runner contract."""

    def __init__(self, model: Any, backend: str, config: BackendConfig) -> None:
        super().__init__(model.inputs, model.outputs, config.validate_inputs)
        wanted, device = PROVIDERS[backend]
        start = time.perf_counter()
        self._session = open_session(model.path, backend, config)
        cold = time.perf_counter() - start
        active = tuple(self._session.get_providers())
        self._output_names = [o.name for o in self.outputs]
        self.info = RunnerInfo(backend, config.resolved_threads(), device if active[0] == wanted else "cpu",
                               active, cold, {"graph_optimization": config.graph_optimization,
                                              **({"disabled_optimizers": list(config.disabled_optimizers)}
                                                 if config.disabled_optimizers else {}),
                                              **({"gpu": _gpu_name(config.device_id)}
                                                 if device == "cuda" and active[0] == wanted else {}),
                                              "spinning": config.spinning, "onnxruntime": _ort().__version__})

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, run_session(self._session, self._output_names, feed)))

    def close(self) -> None:
        self._session = None
