"""`Model`: an ONNX file plus its specs, and (when it came from torch) a way back to the module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hasten.core import HastenError, ModelInfo, TensorSpec
from hasten.models.text import TextEncoder

# Builds (module, example_inputs) on demand, so that loading a model never imports torch.
TorchFactory = Callable[[], tuple[Any, tuple[Any, ...]]]


@dataclass
class Model:
    """An ONNX model on disk with its input/output specs.

    ``text_encoder`` turns sentences into the model's token inputs (text models only).
    ``torch_factory`` rebuilds the PyTorch module and an example input for models that came from
    torch, so training-based transforms and the ``torch-eager`` backend can use it.
    """

    info: ModelInfo
    text_encoder: TextEncoder | None = None
    torch_factory: TorchFactory | None = None
    _torch: tuple[Any, tuple[Any, ...]] | None = None

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def path(self) -> Path:
        return Path(self.info.path)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.info.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.info.outputs

    @property
    def fixed_batch(self) -> int | None:
        """The batch size a model without a dynamic batch axis accepts (its fixed first dim);
        ``None`` when the model batches (any input's first dim is dynamic)."""
        firsts = {s.shape[0] for s in self.inputs if s.rank > 0}
        if not firsts or -1 in firsts or len(firsts) != 1:
            return None
        return firsts.pop()

    @property
    def has_torch(self) -> bool:
        return self.torch_factory is not None

    def torch_module(self) -> Any:
        """The PyTorch module this model was exported from (built once, then kept)."""
        return self._torch_pair()[0]

    def example_input(self) -> tuple[Any, ...]:
        """The example input (a tuple of tensors, in input order) used for export."""
        return self._torch_pair()[1]

    def _torch_pair(self) -> tuple[Any, tuple[Any, ...]]:
        if self.torch_factory is None:
            raise HastenError(
                f"model '{self.name}' was loaded from {self.info.source}, not from PyTorch, "
                "so there is no torch module to use",
                hint="load it from a torch.nn.Module (load_model(module, example_input=...)) "
                "or use an ONNX backend such as ort-cpu",
            )
        if self._torch is None:
            self._torch = self.torch_factory()
        return self._torch

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}:{s.dtype}{s.shape_text()}" for s in self.inputs)
        outs = ", ".join(f"{s.name}:{s.dtype}{s.shape_text()}" for s in self.outputs)
        return f"Model({self.name!r}, {self.info.source}, inputs=[{ins}], outputs=[{outs}])"
