"""Which backends exist, which are usable here, and `compile()` to get a Runner.

Backend modules are imported only when a backend is compiled, so a missing optional package is
never imported by accident.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hasten.core import HastenError
from hasten.runtime.base import BackendConfig, Runner, check_dynamic_quant_group


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    description: str
    reason: str = ""
    needs_torch_model: bool = False


@dataclass(frozen=True)
class _Entry:
    module: str
    cls: str
    description: str
    needs_torch_model: bool = False


_BACKENDS: dict[str, _Entry] = {
    "ort-cpu": _Entry("hasten.runtime.onnxruntime", "OrtRunner", "ONNX Runtime, CPU execution provider"),
    "ort-cuda": _Entry("hasten.runtime.onnxruntime", "OrtRunner", "ONNX Runtime, CUDA execution provider"),
    "ort-tensorrt": _Entry("hasten.runtime.onnxruntime", "OrtRunner", "ONNX Runtime, TensorRT execution provider"),
    "ort-openvino": _Entry("hasten.runtime.onnxruntime", "OrtRunner", "ONNX Runtime, OpenVINO execution provider"),
    "openvino": _Entry("hasten.runtime.openvino", "OpenVinoRunner", "OpenVINO runtime, CPU, FP32 precision set explicitly"),
    "openvino-bf16": _Entry("hasten.runtime.openvino", "OpenVinoRunner", "OpenVINO runtime, CPU, BF16 inference precision"),
    "openvino-static": _Entry("hasten.runtime.openvino", "OpenVinoRunner",
                              "OpenVINO, CPU, FP32, compiled per input shape"),
    "torch-eager": _Entry("hasten.runtime.torch", "TorchEagerRunner", "PyTorch eager (models from torch)", True),
    "torch-compile": _Entry("hasten.runtime.torch", "TorchCompileRunner", "torch.compile, inductor (models from torch)", True),
    "torch-cuda": _Entry("hasten.runtime.torch_cuda", "TorchCudaRunner", "PyTorch on CUDA, FP32", True),
    "torch-cuda-fp16": _Entry("hasten.runtime.torch_cuda", "TorchCudaRunner", "PyTorch on CUDA, FP16", True),
    "torch-cuda-bf16": _Entry("hasten.runtime.torch_cuda", "TorchCudaRunner", "PyTorch on CUDA, BF16", True),
    "torch-cuda-graphs": _Entry("hasten.runtime.torch_cuda", "TorchCudaRunner", "PyTorch on CUDA, FP16, CUDA graphs", True),
}


def backend_names() -> list[str]:
    return list(_BACKENDS)


def gpu_present() -> bool:
    """An NVIDIA GPU with a loaded driver, seen without importing any GPU library."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def _ort_providers() -> list[str] | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def _status(name: str, entry: _Entry, providers: list[str] | None) -> BackendStatus:
    def st(ok: bool, reason: str = "") -> BackendStatus:
        return BackendStatus(name, ok, entry.description, reason, entry.needs_torch_model)

    if name.startswith("torch-"):
        if importlib.util.find_spec("torch") is None:
            return st(False, "torch is not installed (pip install 'hasten[torch]')")
        if name.startswith("torch-cuda") and not gpu_present():
            return st(False, "no NVIDIA GPU found")
        return st(True)
    if name.startswith("openvino"):
        return _openvino_status(name, st)
    if providers is None:
        return st(False, "onnxruntime is not installed")
    from hasten.runtime.onnxruntime import PROVIDERS

    wanted, device = PROVIDERS[name]
    if wanted not in providers:
        return st(False, f"this onnxruntime build has no {wanted}")
    if device == "cuda" and not gpu_present():
        return st(False, "no NVIDIA GPU found")
    return st(True)


def _openvino_status(name: str, st: Any) -> BackendStatus:
    if importlib.util.find_spec("openvino") is None:
        return st(False, "openvino is not installed (pip install 'hasten[openvino]')")
    if name == "openvino-bf16":
        from hasten.runtime.openvino import cpu_capabilities

        if "BF16" not in cpu_capabilities():
            return st(False, "this CPU has no BF16 (AVX512_BF16/AMX)")
    return st(True)


def available_backends(include_unavailable: bool = False) -> list[BackendStatus]:
    """Backends usable on this machine (all known ones, with the reason, if asked)."""
    providers = _ort_providers()
    statuses = [_status(n, e, providers) for n, e in _BACKENDS.items()]
    return statuses if include_unavailable else [s for s in statuses if s.available]


def backends_for(model: Any) -> list[str]:
    """Names of the available backends that can run ``model``."""
    return [s.name for s in available_backends() if model.has_torch or not s.needs_torch_model]


def compile(model: Any, backend: str = "ort-cpu", config: BackendConfig | None = None) -> Runner:  # noqa: A001
    """Turn a `Model` into a `Runner` on ``backend`` (see `available_backends()`)."""
    if backend not in _BACKENDS:
        raise HastenError(f"unknown backend '{backend}'", hint="known backends: " + ", ".join(_BACKENDS))
    entry = _BACKENDS[backend]
    config = config or BackendConfig()
    check_dynamic_quant_group(config.dynamic_quant_group, backend)
    module = importlib.import_module(entry.module)
    return getattr(module, entry.cls)(model, backend, config)
