"""`quantize()`: one verb, a config per method, a handler per config; every result has a manifest."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hasten.compress.config import QuantConfig
from hasten.compress.manifest import manifest_for
from hasten.compress.ort_quant import prepare_for_ort
from hasten.core import HastenError
from hasten.models import Model
from hasten.models.onnx_file import read_specs
from hasten.models.text import encoder_record

Handler = Callable[[Model, Any, Any, Path], dict[str, Any]]


def handlers() -> dict[str, Handler]:
    """Method name -> handler; built on each call (no module-level mutable registry)."""
    from hasten.compress import ort_quant

    table: dict[str, Handler] = {"dynamic": ort_quant.dynamic, "static": ort_quant.static, "fp16": ort_quant.fp16}
    table["nncf"] = _lazy("hasten.compress.nncf_quant", "nncf_int8")
    table["bf16"] = _lazy("hasten.compress.nncf_quant", "bf16")
    table["qat"] = _lazy("hasten.compress.qat", "qat")
    return table


def _lazy(module: str, name: str) -> Handler:
    def call(model: Model, config: Any, data: Any, out: Path) -> dict[str, Any]:
        import importlib

        return getattr(importlib.import_module(module), name)(model, config, data, out)

    return call


def quantize(model: Model, config: QuantConfig, data: Any = None, out: str | Path | None = None) -> Model:
    """Quantize ``model`` as ``config`` says; returns a new `Model` (the input is untouched) whose
    ``info.extra["manifest"]`` (also saved as ``<out>.manifest.json``) records what was done."""
    if not isinstance(config, QuantConfig) or not config.method:
        raise HastenError(f"expected a quantization config, got {type(config).__name__}",
                          hint="e.g. hasten.compress.StaticInt8(calibration='entropy')")
    handler = handlers().get(config.method)
    if handler is None:
        raise HastenError(f"no handler for method '{config.method}'")
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="hasten-q-")) / f"{model.name}.{config.method}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # the graph the quantizer sees (the manifest's node names refer to it)
    graph_in, prep = prepare_for_ort(model, config.method, out.with_suffix(".prepared.onnx"))
    try:
        _check_excluded(graph_in, config)
    except HastenError:
        if graph_in is not model:
            graph_in.path.unlink(missing_ok=True)
        raise
    facts = {**prep, **handler(graph_in, config, data, out)}
    manifest = manifest_for(graph_in, out, config, facts, time.perf_counter() - start, source=model)
    if (record := encoder_record(model.text_encoder)) is not None:
        manifest["text_encoder"] = record  # so the file, loaded on its own, takes text as its source did
    if graph_in is not model:  # the fused, pre-processed intermediate: its node names live on in the manifest
        graph_in.path.unlink(missing_ok=True)
        manifest["quantized_graph"] = "the source after ONNX Runtime's transformer fusion and pre-processing"
    out.with_suffix(".manifest.json").write_text(json.dumps(manifest, indent=2))
    return _derived(model, out, manifest)


def _check_excluded(graph: Model, config: QuantConfig) -> None:
    """Every node asked to stay in float must be in the graph the quantizer sees: the quantizers
    skip an unknown name silently, and the user would get an INT8 node they asked to keep."""
    if not config.nodes_to_exclude or config.method == "qat":  # qat works on the torch module
        return
    import onnx

    names = {n.name for n in onnx.load(str(graph.path), load_external_data=False).graph.node}
    missing = [n for n in config.nodes_to_exclude if n not in names]
    if missing:
        import difflib

        near = difflib.get_close_matches(missing[0], sorted(names), n=3, cutoff=0.5)
        raise HastenError(
            f"node(s) to keep in float are not in the graph being quantized: {', '.join(missing)}"
            + (f" (close: {', '.join(near)})" if near else ""),
            hint="use ONNX node names of that graph; for dynamic/static it is the source after ONNX Runtime's "
                 "transformer fusion: a quantized result's manifest lists its names (quantized_nodes, float_nodes)")


def _derived(model: Model, path: Path, manifest: dict[str, Any]) -> Model:
    from dataclasses import replace

    inputs, outputs, facts = read_specs(path)
    recommended = manifest.get("backend")
    info = replace(model.info, name=f"{model.name}-{manifest['method']}", source=f"quantized:{model.info.source}",
                   path=str(path), inputs=inputs, outputs=outputs,
                   extra={**facts, "manifest": manifest, **({"backend": recommended} if recommended else {})})
    return Model(info, text_encoder=model.text_encoder, torch_factory=None)
