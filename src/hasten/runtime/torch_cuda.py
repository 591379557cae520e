"""PyTorch on an NVIDIA GPU: FP32, FP16, BF16, and FP16 replayed from CUDA graphs.

CUDA graphs remove the per-kernel launch cost (the overhead that dominates small batches): each
input shape is captured once, on its first run, and replayed afterwards.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import numpy as np

from hasten.core import HastenError
from hasten.runtime.base import BackendConfig, Runner, RunnerInfo

# backend name -> (compute dtype name, use CUDA graphs)
VARIANTS = {
    "torch-cuda": ("float32", False),
    "torch-cuda-fp16": ("float16", False),
    "torch-cuda-bf16": ("bfloat16", False),
    "torch-cuda-graphs": ("float16", True),
}


class TorchCudaRunner(Runner):
    """The model's torch module on ``cuda:<device_id>`` in the variant's precision."""

    def __init__(self, model: Any, backend: str, config: BackendConfig) -> None:
        super().__init__(model.inputs, model.outputs, config.validate_inputs)
        from hasten.models.torch_export import import_torch

        if not model.has_torch:
            raise HastenError(f"backend {backend} needs a model that came from PyTorch; '{model.name}' did not",
                              hint="use ort-cuda for ONNX models")
        torch = self._torch = import_torch()
        if not torch.cuda.is_available():
            raise HastenError(f"backend {backend}: torch sees no CUDA device (torch {torch.__version__})",
                              hint="install a CUDA build of torch on a machine with an NVIDIA GPU")
        start = time.perf_counter()
        dtype_name, self._graphs = VARIANTS[backend]
        self._dtype = getattr(torch, dtype_name)
        self._device = torch.device("cuda", config.device_id)
        self._module = copy.deepcopy(model.torch_module()).eval().to(self._device, dtype=self._dtype)
        self._names = [s.name for s in self.inputs]
        self._out_names = [s.name for s in self.outputs]
        self._captured: dict[tuple, tuple[Any, list[Any], list[Any]]] = {}
        self._lock = threading.Lock()
        torch.cuda.synchronize(self._device)
        self.info = RunnerInfo(backend, 0, str(self._device), (), time.perf_counter() - start,
                               {"torch": torch.__version__, "dtype": dtype_name, "cuda_graphs": self._graphs,
                                "gpu": torch.cuda.get_device_name(self._device)})

    def _to_device(self, array: np.ndarray) -> Any:
        t = self._torch.from_numpy(array).to(self._device, non_blocking=True)
        return t.to(self._dtype) if t.is_floating_point() else t

    def _outputs(self, out: Any) -> dict[str, np.ndarray]:
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {n: (t.float() if t.is_floating_point() else t).cpu().numpy() for n, t in zip(self._out_names, outs)}

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        if not self._graphs:
            with torch.inference_mode():
                return self._outputs(self._module(*(self._to_device(feed[n]) for n in self._names)))
        with self._lock:  # captured graphs share static buffers
            key = tuple(feed[n].shape for n in self._names)
            if key not in self._captured:
                self._captured[key] = self._capture(feed)
            graph, static_in, static_out = self._captured[key]
            for buf, name in zip(static_in, self._names):
                buf.copy_(self._to_device(feed[name]))
            graph.replay()
            return self._outputs(static_out)

    def _capture(self, feed: dict[str, np.ndarray]) -> tuple[Any, list[Any], Any]:
        torch = self._torch
        static_in = [self._to_device(feed[n]) for n in self._names]
        stream = torch.cuda.Stream(self._device)
        stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(3):  # warm-up on a side stream, as capture requires
                self._module(*static_in)
        torch.cuda.current_stream(self._device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = self._module(*static_in)
        return graph, static_in, static_out
