"""Keeping chosen nodes of a QDQ model in float by graph surgery, without re-quantizing.

For each chosen node, an input fed by QuantizeLinear → DequantizeLinear is rewired to the float
tensor before the pair, and a weight fed by DequantizeLinear(int8 constant) is replaced by the
source model's original float weight. Q/DQ nodes and constants nobody reads any more are dropped.
This makes the accuracy fallback cheap for every QDQ method (static, NNCF, QAT): one trial costs
an evaluation, not a calibration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hasten.core import HastenError


def keep_in_float(qdq_path: Path, source_path: Path, nodes: tuple[str, ...], out: Path) -> list[str]:
    """Write ``qdq_path`` with ``nodes`` back in float to ``out``; returns the nodes changed."""
    import onnx

    model = onnx.load(str(qdq_path))
    source = onnx.load(str(source_path))
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    src_nodes = {n.name: n for n in source.graph.node}
    src_inits = {i.name: i for i in source.graph.initializer}
    by_name = {n.name: n for n in graph.node}
    missing = [n for n in nodes if n not in by_name]
    if missing:
        raise HastenError(f"nodes not in the quantized graph: {missing}", hint="names come from the manifest's quantized_nodes")
    changed = []
    for name in nodes:
        node = by_name[name]
        restored = _restore_inputs(node, producer, inits, src_nodes.get(name), src_inits, graph)
        if _bypass_output_pairs(node, graph) or restored:
            changed.append(name)
    _drop_unused(graph)
    onnx.save(model, str(out))
    return changed


def _restore_inputs(node: Any, producer: dict[str, Any], inits: dict[str, Any], src: Any, src_inits: dict[str, Any],
                    graph: Any) -> bool:
    changed = False
    for i, tensor in enumerate(list(node.input)):
        dq = producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear":  # an activation: take the float before the pair
            node.input[i] = q.input[0]
            changed = True
        elif dq.input[0] in inits and src is not None and i < len(src.input) and src.input[i] in src_inits:
            original = src_inits[src.input[i]]  # a weight: put the source model's float weight back …
            if not _same_weight(original, dq, inits):
                # … unless the quantizer rescaled it (NNCF's SmoothQuant folds activation scales into
                # the weights): then the dequantized weight, computed in float, is the right one
                node.input[i] = _dequantized(dq, inits, graph)
                changed = True
                continue
            name = original.name if original.name not in producer else original.name + "_float"
            if name not in inits:
                copy = type(original)()
                copy.CopyFrom(original)
                copy.name = name
                graph.initializer.append(copy)
                inits[name] = copy
            node.input[i] = name
            changed = True
    return changed


def _dq_value(dq: Any, inits: dict[str, Any]) -> Any:
    from onnx import numpy_helper

    q = numpy_helper.to_array(inits[dq.input[0]]).astype("float32")
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype("float32")
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype("float32") if len(dq.input) > 2 and dq.input[2] in inits else 0.0
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if getattr(scale, "ndim", 0) == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale = scale.reshape(shape)
        zero = zero.reshape(shape) if getattr(zero, "ndim", 0) == 1 else zero
    return (q - zero) * scale


def _same_weight(original: Any, dq: Any, inits: dict[str, Any]) -> bool:
    """Whether the quantized constant is (up to rounding) the source's weight."""
    import numpy as np
    from onnx import numpy_helper

    try:
        w = numpy_helper.to_array(original).astype("float32")
        d = _dq_value(dq, inits)
    except (KeyError, ValueError):
        return False
    if w.shape != d.shape:
        return False
    return float(np.linalg.norm(w - d) / max(np.linalg.norm(w), 1e-12)) < 0.05


def _dequantized(dq: Any, inits: dict[str, Any], graph: Any) -> str:
    from onnx import numpy_helper

    name = dq.output[0] + "_float"
    if name not in inits:
        tensor = numpy_helper.from_array(_dq_value(dq, inits), name)
        graph.initializer.append(tensor)
        inits[name] = tensor
    return name


def _bypass_output_pairs(node: Any, graph: Any) -> bool:
    """A float node's output needs no Q → DQ round trip: readers of the DQ read the output itself."""
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in graph.output}
    changed = False
    for out in node.output:
        for q in [c for c in consumers.get(out, []) if c.op_type == "QuantizeLinear"]:
            for dq in [c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"]:
                if dq.output[0] in graph_outputs:
                    continue
                for reader in consumers.get(dq.output[0], []):
                    for k, name in enumerate(reader.input):
                        if name == dq.output[0]:
                            reader.input[k] = out
                            changed = True
    return changed


def _drop_unused(graph: Any) -> None:
    """Remove nodes whose outputs nobody reads (not graph outputs), then unread constants."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.output and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input} | outputs
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


QDQ_METHODS = ("static", "nncf", "qat")


def with_float_nodes(variant: Any, source: Any, nodes: tuple[str, ...], out: Path) -> Any:
    """A new `Model`: ``variant`` (a QDQ model made from ``source``) with ``nodes`` back in float,
    its manifest updated (which nodes are quantized now, and that the fallback did it)."""
    import json
    from dataclasses import replace

    from hasten.compress.manifest import output_facts
    from hasten.models import Model
    from hasten.models.onnx_file import read_specs

    changed = keep_in_float(variant.path, source.path, nodes, out)
    manifest = json.loads(json.dumps(variant.info.extra["manifest"]))
    manifest.update(**output_facts(source.path, out), kept_in_float_by_fallback=changed)
    out.with_suffix(".manifest.json").write_text(json.dumps(manifest, indent=2))
    inputs, outputs, facts = read_specs(out)
    info = replace(variant.info, path=str(out), inputs=inputs, outputs=outputs,
                   extra={**variant.info.extra, **facts, "manifest": manifest})
    return Model(info, text_encoder=variant.text_encoder)
