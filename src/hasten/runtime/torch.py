"""PyTorch eager backend, for models that came from torch (the only runtime module importing torch)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hasten.core import HastenError
from hasten.runtime.base import BackendConfig, Runner, RunnerInfo


class TorchEagerRunner(Runner):
    """Runs the original ``torch.nn.Module`` in inference mode on the CPU.

    torch's intra-op thread count is process-wide: creating this runner sets it for the process.
    """

    def __init__(self, model: Any, backend: str, config: BackendConfig) -> None:
        super().__init__(model.inputs, model.outputs, config.validate_inputs)
        if not model.has_torch:
            raise HastenError(
                f"backend {backend} needs a model that came from PyTorch; '{model.name}' was loaded from "
                f"{model.info.source}",
                hint="use an ONNX Runtime backend (ort-cpu), or load the model from its torch.nn.Module",
            )
        from hasten.models.torch_export import import_torch

        start = time.perf_counter()
        self._torch = torch = import_torch()
        torch.set_num_threads(config.resolved_threads())
        self._module = model.torch_module().eval()
        self._names = [s.name for s in self.inputs]
        self._out_names = [s.name for s in self.outputs]
        self.info = RunnerInfo(backend, config.resolved_threads(), "cpu", (), time.perf_counter() - start,
                               {"torch": torch.__version__})

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self._module(*(torch.from_numpy(feed[n]) for n in self._names))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {n: t.detach().cpu().numpy() for n, t in zip(self._out_names, outs)}


class TorchCompileRunner(TorchEagerRunner):
    """``torch.compile`` (inductor) of the module. Compilation happens on the first run of each
    input shape, so it shows up in the benchmark's first-run (cold start) time, not the steady state."""

    def __init__(self, model: Any, backend: str, config: BackendConfig) -> None:
        super().__init__(model, backend, config)
        start = time.perf_counter()
        self._module = self._torch.compile(self._module, dynamic=False)
        self.info = RunnerInfo(backend, self.info.threads, "cpu", (), self.info.cold_start_s + time.perf_counter() - start,
                               {**self.info.extra, "compile": "inductor, one graph per input shape, on first run"})
