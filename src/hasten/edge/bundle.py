"""`export_bundle`: a self-contained folder for a device — the model in ONNX Runtime's ORT
format (converted with onnxruntime's own tool, optimised for the target), the required-operators
config for a reduced ONNX Runtime build generated from that optimised graph, the input/output
specs, tokenizer assets, a manifest with every file's checksum, and a runner (`run.py`) that
needs only onnxruntime and numpy. `load_bundle` verifies the checksums before it loads."""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hasten.compress.manifest import sha256
from hasten.core import HastenError
from hasten.measure.machine import versions

FORMATS = ("ort", "openvino", "executorch")
LEVELS = ("basic", "extended", "all")
PLATFORMS = ("arm", "amd64")
OPS_CONFIG = "required_operators.config"


class BundleError(HastenError):
    pass


@dataclass
class Bundle:
    folder: Path
    manifest: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.folder / self.manifest["model_file"]


def export_bundle(model: Any, out: str | Path, fmt: str = "ort", optimization: str = "all", target_platform: str = "arm",
                  recipe: dict[str, Any] | None = None, force: bool = False, with_onnx: bool = False) -> Bundle:
    """Write ``model`` (a hasten Model) as a bundle into ``out``. ``optimization``: the ORT graph
    optimisation level baked into the ORT-format model (``all`` minus layout transformations
    that only suit x86 when the target is ``arm``)."""
    out = Path(out)
    if fmt not in FORMATS:
        raise HastenError(f"unknown bundle format '{fmt}'", hint="one of: " + ", ".join(FORMATS))
    if optimization not in LEVELS:
        raise HastenError(f"unknown optimisation level '{optimization}'", hint="one of: " + ", ".join(LEVELS))
    if target_platform not in PLATFORMS:
        raise HastenError(f"unknown target platform '{target_platform}'", hint="arm or amd64")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise HastenError(f"{out} exists and is not empty", hint="choose another -o, or --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    source = Path(model.path)
    try:
        if fmt == "ort":
            model_file, extra = _ort(source, out, optimization, target_platform, with_onnx)
        elif fmt == "openvino":
            model_file, extra = _openvino(source, out)
        else:
            model_file, extra = _executorch(model, out)
        (out / "io.json").write_text(json.dumps({"inputs": [s.to_dict() for s in model.inputs],
                                                 "outputs": [s.to_dict() for s in model.outputs]}, indent=2))
        if getattr(model, "text_encoder", None) is not None:
            enc = model.text_encoder
            (out / "assets").mkdir()
            shutil.copy(enc.tokenizer_file, out / "assets" / "tokenizer.json")
            (out / "assets" / "text.json").write_text(json.dumps({"max_length": enc.max_length,
                                                                  "inputs": list(enc.input_names)}))
        from hasten.edge.runner_template import SOURCE

        (out / "run.py").write_text(SOURCE)
        files = {p.relative_to(out).as_posix(): {"sha256": sha256(p), "size": p.stat().st_size}
                 for p in sorted(out.rglob("*")) if p.is_file()}
        manifest = {"bundle_version": 1, "format": fmt, "model_file": model_file, "model": model.name,
                    "source": {"path": str(source), "sha256": sha256(source), "size": source.stat().st_size},
                    "recipe": {"optimization": optimization, "target_platform": target_platform, **(recipe or {}), **extra},
                    "versions": {**versions(), "python": platform.python_version()}, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "files": files}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    except Exception:
        shutil.rmtree(out, ignore_errors=True)  # never leave half a bundle behind
        raise
    return Bundle(out, manifest)


def _ort(source: Path, out: Path, optimization: str, target_platform: str, with_onnx: bool) -> tuple[str, dict[str, Any]]:
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(prefix="hasten-ort-") as tmp:
        src = Path(tmp) / "in" / "model.onnx"
        src.parent.mkdir()
        shutil.copy(source, src)
        if source.with_suffix(source.suffix + ".data").exists():  # external weights travel with it
            shutil.copy(source.with_suffix(source.suffix + ".data"), src.parent)
        for data in source.parent.glob("*.data"):
            if not (src.parent / data.name).exists():
                shutil.copy(data, src.parent)
        from hasten.models.onnx_file import without_initializer_inputs

        without_initializer_inputs(src, src)
        converted = Path(tmp) / "out"
        previous = os.environ.get("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL")
        os.environ["ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"] = optimization
        log = io.StringIO()
        import logging

        logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(log):  # the tool prints; results go to stdout, so keep it quiet
                convert_onnx_models_to_ort(src, output_dir=converted, optimization_styles=[OptimizationStyle.Fixed],
                                           target_platform=target_platform, save_optimized_onnx_model=True)
        except Exception as exc:
            raise BundleError(f"ONNX Runtime could not convert {source} to the ORT format: {exc}",
                              hint="run `hasten export … --preflight` to see which operators are the problem") from None
        finally:
            if previous is None:
                os.environ.pop("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL", None)
            else:
                os.environ["ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"] = previous
        suffix = "" if optimization == "all" else f".{optimization}"
        ort_file = converted / f"model{suffix}.ort"
        config = converted / f"model.required_operators{suffix}.config"
        optimized = converted / f"model{suffix}.optimized.onnx"
        if not ort_file.exists() or not config.exists():
            raise BundleError("the ORT conversion produced no model or no operator config: " + log.getvalue()[-500:])
        shutil.copy(ort_file, out / "model.ort")
        lines = [ln for ln in config.read_text().splitlines() if not ln.startswith("#") and ln.strip()]
        import onnxruntime

        (out / OPS_CONFIG).write_text(f"# Required operators of model.ort (hasten export, onnxruntime {onnxruntime.__version__}):\n"
                                      "# build a reduced ONNX Runtime with --include_ops_by_config this file\n"
                                      + "\n".join(lines) + "\n")
        if with_onnx:
            shutil.copy(optimized, out / "model.optimized.onnx")  # the same optimised graph, viewable in Netron
    return "model.ort", {"converter": "onnxruntime.tools.convert_onnx_models_to_ort", "optimization_style": "fixed"}


def _openvino(source: Path, out: Path) -> tuple[str, dict[str, Any]]:
    try:
        import openvino as ov
    except ImportError as exc:
        from hasten.core import MissingDependencyError

        raise MissingDependencyError("openvino", "openvino", "an OpenVINO IR bundle") from exc
    # weights beside it (model.bin), kept FP32: save_model would halve them to FP16 by default
    ov.save_model(ov.convert_model(str(source)), str(out / "model.xml"), compress_to_fp16=False)
    return "model.xml", {"converter": "openvino.convert_model", "weights": "model.bin (FP32)"}


def _executorch(model: Any, out: Path) -> tuple[str, dict[str, Any]]:
    import importlib.util

    if importlib.util.find_spec("executorch") is None:
        from hasten.core import MissingDependencyError

        raise MissingDependencyError("executorch", "executorch", "an ExecuTorch (.pte) bundle")
    from hasten.edge.executorch import export_pte

    return export_pte(model, out)


def verify_bundle(folder: str | Path) -> dict[str, Any]:
    """The manifest, after checking every listed file (size and sha256); a BundleError naming
    what is missing or changed otherwise."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not folder.is_dir() or not path.is_file():
        raise BundleError(f"{folder} is not a hasten bundle (no manifest.json)",
                          hint="export one with: hasten export MODEL --target edge -o DIR")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        manifest["model_file"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path} is not a valid bundle manifest ({exc})") from None
    problems = []
    for name, want in files.items():
        p = folder / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            problems.append(f"{name} points outside the bundle")
        elif not p.is_file():
            problems.append(f"{name} is missing")
        elif p.stat().st_size != want.get("size") or sha256(p) != want.get("sha256"):
            problems.append(f"{name} does not match its checksum (changed after export)")
    if manifest["model_file"] not in files:
        problems.append(f"the model file {manifest['model_file']} is not covered by a checksum")
    if problems:
        raise BundleError("refusing a tampered or incomplete bundle: " + "; ".join(problems),
                          hint="export the bundle again from the source model")
    return manifest


def load_bundle(folder: str | Path, threads: int = 1) -> Any:
    """A runner (``run(feed) -> outputs``) over the bundle's model, verified first; ORT and
    OpenVINO IR bundles."""
    manifest = verify_bundle(folder)
    from hasten.core import TensorSpec

    io_spec = json.loads((Path(folder) / "io.json").read_text())
    inputs = tuple(TensorSpec(s["name"], s["dtype"], tuple(s["shape"])) for s in io_spec["inputs"])
    outputs = tuple(TensorSpec(s["name"], s["dtype"], tuple(s["shape"])) for s in io_spec["outputs"])
    path = Path(folder) / manifest["model_file"]
    if manifest["format"] == "ort":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        return OrtBundleRunner(session, inputs, outputs)
    if manifest["format"] == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                            "INFERENCE_PRECISION_HINT": "f32"})  # as exported, no silent downcast
        return OpenVinoBundleRunner(compiled, inputs, outputs)
    raise BundleError(f"bundles of format '{manifest['format']}' run on their own runtime, not here",
                      hint="ExecuTorch: load the .pte with executorch.runtime")


class OrtBundleRunner:
    """``run(feed) -> outputs`` over an ORT-format session (what the bundle's run.py does)."""

    def __init__(self, session: Any, inputs: tuple, outputs: tuple) -> None:
        self.session, self.inputs, self.outputs = session, inputs, outputs
        self._names = [o.name for o in outputs]

    def run(self, feed: dict[str, Any]) -> dict[str, Any]:
        try:
            return dict(zip(self._names, self.session.run(self._names, feed)))
        except Exception as exc:  # ORT's InvalidArgument & co, ValueError for missing inputs
            raise HastenError(f"the bundle's model refused the inputs: {str(exc).strip().splitlines()[0]}",
                              hint="see the bundle's io.json for names, dtypes and shapes") from None


class OpenVinoBundleRunner:
    def __init__(self, compiled: Any, inputs: tuple, outputs: tuple) -> None:
        self.compiled, self.inputs, self.outputs = compiled, inputs, outputs
        self.request = compiled.create_infer_request()

    def run(self, feed: dict[str, Any]) -> dict[str, Any]:
        result = self.request.infer(feed)
        return {port.get_any_name(): value for port, value in result.items()}
