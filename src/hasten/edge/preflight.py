"""Pre-flight: every operator of a model and whether each edge target runs it.

- **ORT reduced build**: the graph ONNX Runtime will execute after its optimisations at the
  bundle's level (what `required_operators.config` lists); an operator without a CPU kernel in
  this ONNX Runtime fails to load, and the message names it.
- **NNAPI / CoreML** (ONNX Runtime's mobile execution providers): the support tables shipped
  inside the onnxruntime package (`tools/mobile_helpers/*.md`), checked against the source
  graph; what they lack falls back to the CPU provider (a partition boundary, not a failure).
- **OpenVINO** (when installed): its ONNX frontend converts the model; operators without a
  conversion rule fail, by name.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ONNX_DOMAIN = "ai.onnx"


@dataclass
class OpRow:
    domain: str
    op: str
    count: int
    status: dict[str, str] = field(default_factory=dict)   # target -> "ok" | "fallback" | "fails" | "-"
    notes: dict[str, str] = field(default_factory=dict)


@dataclass
class Preflight:
    targets: list[str]
    rows: list[OpRow]
    errors: dict[str, str]      # target -> why it cannot run at all

    def verdict(self, target: str) -> str:
        if target in self.errors:
            return "fails: " + self.errors[target]
        states = Counter(r.status.get(target, "-") for r in self.rows)
        if states["fails"]:
            return f"fails: {states['fails']} operator type(s) unsupported"
        if states["fallback"]:
            return f"runs, {states['fallback']} operator type(s) fall back to the CPU provider"
        return "runs entirely"


def graph_ops(path_or_model: Any) -> Counter:
    """(domain, op type) -> count, subgraphs included, of an ONNX file or ModelProto."""
    import onnx

    model = path_or_model if isinstance(path_or_model, onnx.ModelProto) else onnx.load(str(path_or_model),
                                                                                      load_external_data=False)
    ops: Counter = Counter()

    def walk(graph: Any) -> None:
        for node in graph.node:
            ops[(node.domain or ONNX_DOMAIN, node.op_type)] += 1
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)
    walk(model.graph)
    return ops


def ort_optimized_ops(path: str | Path, level: str = "all") -> tuple[Counter | None, str | None]:
    """The operators of ONNX Runtime's optimised graph (NCHWc layouts left out, as for an arm
    bundle), or (None, the load error)."""
    from hasten.runtime.onnxruntime import optimized_graph

    try:
        return graph_ops(optimized_graph(path, level, disabled_optimizers=("NchwcTransformer",))), None
    except Exception as exc:  # noqa: BLE001 - ORT's own exception types; the message names the operator
        return None, str(exc).strip().splitlines()[0][:300]


def ep_table(name: str) -> dict[tuple[str, str], str]:
    """An execution provider's support table shipped with onnxruntime: (domain, op) -> note."""
    import onnxruntime.tools.mobile_helpers as helpers

    files = {"nnapi": ["nnapi_supported_ops.md"], "coreml": ["coreml_supported_mlprogram_ops.md",
                                                             "coreml_supported_neuralnetwork_ops.md"]}[name]
    table: dict[tuple[str, str], str] = {}
    for fname in files:
        path = Path(helpers.__file__).parent / fname
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            m = re.match(r"\|\s*([\w.]+):(\w+)\s*\|(.*)\|", line)
            if m:
                table[(m.group(1), m.group(2))] = m.group(3).strip()
    return table


def openvino_failures(path: str | Path) -> tuple[set[str] | None, str | None]:
    """(op types OpenVINO cannot convert, None) / (None, why it failed) / (set(), None) when fine."""
    try:
        import openvino as ov
    except ImportError:
        return None, "openvino is not installed"
    try:
        ov.convert_model(str(path))
    except Exception as exc:  # noqa: BLE001 - the frontend's errors name the operators
        text = str(exc)
        found = set(re.findall(r"No conversion rule found for operations?:?\s*([\w.:, -]+)", text))
        names = {n.strip().split(":")[-1].split("-")[-1].strip() for part in found for n in part.split(",") if n.strip()}
        names |= set(re.findall(r"OpType:\s*(\w+)", text))
        if names:
            return names, None
        return None, text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
    return set(), None


def preflight(path: str | Path, level: str = "all") -> Preflight:
    source = graph_ops(path)
    optimized, ort_error = ort_optimized_ops(path, level)
    targets = ["ort", "nnapi", "coreml", "openvino"]
    errors: dict[str, str] = {}
    rows: dict[tuple[str, str], OpRow] = {}
    for key, n in source.items():
        rows[key] = OpRow(key[0], key[1], n)
    if optimized is not None:
        for key, n in optimized.items():
            row = rows.setdefault(key, OpRow(key[0], key[1], 0))
            row.status["ort"] = "ok"
            row.notes["ort"] = f"{n} in the optimised graph"
        for key, row in rows.items():
            if key not in optimized:
                row.status["ort"] = "-"
                row.notes["ort"] = "fused or removed by the optimiser"
    else:
        errors["ort"] = ort_error or "cannot load"
        for row in rows.values():
            named = row.op in (ort_error or "")
            row.status["ort"] = "fails" if named else "?"
    for ep in ("nnapi", "coreml"):
        table = ep_table(ep)
        for key, row in rows.items():
            if row.count == 0:
                row.status[ep] = "-"
            elif key in table:
                row.status[ep] = "ok"
                if table[key]:
                    row.notes[ep] = table[key]
            else:
                row.status[ep] = "fallback"
    failing, ov_error = openvino_failures(path)
    if failing is None:
        errors["openvino"] = ov_error or "unknown"
    for row in rows.values():
        if failing is None:
            row.status["openvino"] = "?" if ov_error != "openvino is not installed" else "-"
        elif row.count == 0:
            row.status["openvino"] = "-"
        else:
            row.status["openvino"] = "fails" if row.op in failing else "ok"
    return Preflight(targets, sorted(rows.values(), key=lambda r: (r.domain, r.op)), errors)
