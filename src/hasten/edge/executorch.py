"""ExecuTorch `.pte` export with the XNNPACK partitioner (only imported when the `executorch`
package is installed): torch.export of the model's own torch module, lowered with
`to_edge_transform_and_lower(…, partitioner=[XnnpackPartitioner()])`, then `to_executorch()`;
the manifest records how many operator nodes were delegated to XNNPACK and which stayed on the
portable kernels."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from hasten.core import HastenError


def export_pte(model: Any, out: Path) -> tuple[str, dict[str, Any]]:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        module = model.torch_module().eval()
        example = tuple(t.contiguous() for t in model.example_input())  # contiguous inputs for export
    except HastenError as exc:
        raise HastenError(f"ExecuTorch needs the model's torch module: {exc}",
                          hint="load the model from PyTorch (a built-in example or load_model(module, example_input=…))") from None
    with torch.no_grad():
        exported = torch.export.export(module, example)
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    delegated, portable = _count(edge.exported_program().graph_module)
    program = edge.to_executorch()
    with open(out / "model.pte", "wb") as f:
        program.write_to_file(f)
    return "model.pte", {"converter": "executorch.to_edge_transform_and_lower + XnnpackPartitioner",
                         "xnnpack_delegate_calls": delegated,
                         "portable_ops": dict(portable)}


def _count(graph_module: Any) -> tuple[int, Counter]:
    """(delegate calls, operators left outside any delegate)."""
    delegated, portable = 0, Counter()
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if "executorch_call_delegate" in name:
            delegated += 1
        elif not name.startswith("getitem"):
            portable[name] += 1
    return delegated, portable
