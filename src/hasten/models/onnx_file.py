"""Reading an ONNX file: validation and input/output specs from the graph."""

from __future__ import annotations

from pathlib import Path

from hasten.core import HastenError, TensorSpec

_ELEM_TO_DTYPE = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    8: "object", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
    16: "bfloat16",
}


def read_specs(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], dict]:
    """Input specs, output specs and a few facts (opset, producer) of the ONNX file at ``path``."""
    import onnx  # lazy: `import hasten` stays light

    path = Path(path)
    if not path.exists():
        raise HastenError(
            f"model file not found: {path}",
            hint="check the path, or use a built-in example: minilm, digits-cnn",
        )
    if path.is_dir():
        raise HastenError(
            f"{path} is a folder, not an ONNX file",
            hint="pass the .onnx file itself, or a sentence-transformers model folder",
        )
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise HastenError(
            f"{path} is not an ONNX model (it could not be parsed: {type(exc).__name__})",
            hint="export your model to ONNX first, e.g. torch.onnx.export(...)",
        ) from exc
    graph = proto.graph
    if not graph.node or not graph.output:
        raise HastenError(
            f"{path} is not an ONNX model: the parsed file has no graph nodes or outputs",
            hint="check that the file is a complete .onnx export and not another format",
        )
    initializers = {init.name for init in graph.initializer}
    inputs = tuple(_spec(v) for v in graph.input if v.name not in initializers)
    outputs = tuple(_spec(v) for v in graph.output)
    facts = {
        "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0),
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
    }
    return inputs, outputs, facts


def _spec(value) -> TensorSpec:  # noqa: ANN001 - onnx ValueInfoProto
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":  # sequences and maps (e.g. scikit-learn classifiers' probabilities)
        return TensorSpec(value.name, kind.removesuffix("_type") if kind else "unknown", ())
    tensor = value.type.tensor_type
    dtype = _ELEM_TO_DTYPE.get(tensor.elem_type, f"onnx-elem-{tensor.elem_type}")
    shape = tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor.shape.dim
    )
    return TensorSpec(value.name, dtype, shape)


def without_initializer_inputs(src: str | Path, dst: str | Path) -> bool:
    """Old (IR < 4) models list every initializer as a graph input too; ONNX Runtime then treats
    them as overridable inputs, and its graph rewrites (ORT-format conversion, quantization
    pre-processing) can turn shape-folding helpers into *required* inputs (seen with the ONNX test
    suite's squeezenet). Writes ``dst`` without the inputs an initializer backs, as onnxruntime's
    remove_initializer_from_input tool does; returns False (nothing written) when there are none."""
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    names = {i.name for i in model.graph.initializer}
    if not any(i.name in names for i in model.graph.input):
        return False
    model = onnx.load(str(src))
    keep = [i for i in model.graph.input if i.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    onnx.save(model, str(dst))
    return True
