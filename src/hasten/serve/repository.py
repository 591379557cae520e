"""The model repository: ``repo/<model>/config.yaml`` + ``repo/<model>/<version>/model.onnx``
(validated with pydantic; errors name the file and the field), or a Triton repository of ONNX
models (``config.pbtxt``). Names are checked against path traversal; nothing is unpickled."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hasten.core import HastenError
from hasten.serve.policy import BatchingConfig, QueuePolicy

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MODEL_FILE = "model.onnx"
TRITON_ONNX = ("onnxruntime", "onnxruntime_onnx")


class DynamicBatching(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_queue_delay_ms: float = Field(0.0, ge=0)
    preferred_batch_sizes: list[int] = []
    max_queue_size: int = Field(0, ge=0)
    timeout_ms: float = Field(0.0, ge=0)
    timeout_action: Literal["reject", "delay"] = "reject"
    allow_timeout_override: bool = False
    priority_levels: int = Field(0, ge=0)
    default_priority_level: int = Field(0, ge=0)
    padding: Literal["pad", "bucket"] = "pad"
    slo_p99_ms: float | None = Field(None, gt=0)


class ModelConfig(BaseModel):
    """``config.yaml`` of one model."""

    model_config = ConfigDict(extra="forbid")

    backend: str = "ort-cpu"
    max_batch_size: int = Field(8, ge=0)
    instances: int = Field(1, ge=1, le=64)
    threads: int | None = Field(None, ge=1)
    dynamic_batching: DynamicBatching | None = None
    pad_values: dict[str, float] = {}
    inline_when_idle: bool = True  # one instance: a batch finding the server idle runs on the loop thread
    dynamic_quant_group: int = 0  # OpenVINO: float MatMuls as dynamic INT8 (`hasten quantize --dynamic-quant-group`)

    @model_validator(mode="after")
    def _dynamic_quant_on_openvino(self) -> ModelConfig:
        from hasten.runtime.base import check_dynamic_quant_group

        try:
            check_dynamic_quant_group(self.dynamic_quant_group, self.backend)
        except HastenError as exc:
            raise ValueError(str(exc).split("\n")[0]) from None  # pydantic names the file and field
        return self

    def batching(self) -> BatchingConfig:
        d = self.dynamic_batching
        policy = QueuePolicy(d.timeout_action, d.timeout_ms / 1e3, d.allow_timeout_override, d.max_queue_size) if d else QueuePolicy()
        return BatchingConfig(
            max_batch_size=max(1, self.max_batch_size),
            preferred_batch_sizes=tuple(d.preferred_batch_sizes) if d else (),
            max_queue_delay_s=d.max_queue_delay_ms / 1e3 if d else 0.0,
            priority_levels=d.priority_levels if d else 0,
            default_priority_level=d.default_priority_level if d else 0,
            queue_policy=policy, padding=d.padding if d else "pad", instances=self.instances,
            combine=d is not None and self.max_batch_size > 0, inline_when_idle=self.inline_when_idle)


@dataclass
class ModelEntry:
    name: str
    versions: dict[int, Path]          # version -> model.onnx
    config: ModelConfig
    source: str                        # "hasten" | "triton" | "file"
    config_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def latest(self) -> int:
        return max(self.versions)

    def path(self, version: int | str | None = None) -> Path:
        if version in (None, "", -1):
            return self.versions[self.latest]
        try:
            v = int(version)
        except (TypeError, ValueError):
            raise HastenError(f"model '{self.name}' has no version '{version}'",
                              hint="versions: " + ", ".join(map(str, sorted(self.versions)))) from None
        if v not in self.versions:
            raise HastenError(f"model '{self.name}' has no version {v}",
                              hint="versions: " + ", ".join(map(str, sorted(self.versions))))
        return self.versions[v]


def check_name(name: str, what: str = "model name") -> str:
    """A name that is safe as one path component (no '/', '..', leading dot, control characters)."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise HastenError(f"invalid {what} {name!r}",
                          hint="use letters, digits, '_', '-' and '.', at most 128 characters, not starting with '.'")
    return name


def load_repository(root: str | Path) -> dict[str, ModelEntry]:
    """Every model under ``root`` (hasten ``config.yaml`` or Triton ``config.pbtxt``)."""
    root = Path(root)
    if not root.is_dir():
        raise HastenError(f"model repository not found: {root}", hint="pass a folder holding <model>/<version>/model.onnx")
    models = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        check_name(folder.name)
        models[folder.name] = load_entry(folder)
    if not models:
        raise HastenError(f"{root} holds no model folders", hint="layout: repo/<model>/config.yaml and repo/<model>/1/model.onnx")
    return models


def load_entry(folder: Path) -> ModelEntry:
    versions = {int(v.name): v / MODEL_FILE for v in folder.iterdir() if v.is_dir() and v.name.isdigit()}
    if (folder / "config.yaml").exists():
        config, source, cfg_path = _read_yaml(folder / "config.yaml"), "hasten", folder / "config.yaml"
    elif (folder / "config.pbtxt").exists():
        config, source, cfg_path = _read_pbtxt(folder / "config.pbtxt"), "triton", folder / "config.pbtxt"
    else:
        raise HastenError(f"{folder} has neither config.yaml nor config.pbtxt",
                          hint="write config.yaml (e.g. 'max_batch_size: 8') next to the version folders")
    missing = [str(p) for p in versions.values() if not p.is_file()]
    if not versions or missing:
        raise HastenError(f"{folder}: every version folder needs a {MODEL_FILE}" + (f"; missing: {', '.join(missing)}" if missing else
                          "; there is no version folder"), hint=f"layout: {folder.name}/1/{MODEL_FILE}")
    return ModelEntry(folder.name, versions, config, source, cfg_path)


def _read_yaml(path: Path) -> ModelConfig:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}  # safe_load: no Python objects
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise HastenError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise HastenError(f"{path} must hold a mapping of settings, got {type(raw).__name__}")
    return _validated(raw, path)


def _validated(raw: dict[str, Any], path: Path) -> ModelConfig:
    try:
        config = ModelConfig.model_validate(raw)
        config.batching()  # cross-field checks (preferred sizes within the max, priority levels)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise HastenError(f"{path}: {problems}", hint="see docs/serving.md for the fields") from None
    except HastenError as exc:
        raise HastenError(f"{path}: {exc}") from None
    return config


def _read_pbtxt(path: Path) -> ModelConfig:
    """A Triton ``config.pbtxt`` of an ONNX model, read with Triton's own protobuf schema."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        from hasten.core import MissingDependencyError

        raise MissingDependencyError("tritonclient", "serve", "reading a Triton config.pbtxt") from exc
    try:
        proto = text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise HastenError(f"{path} is not a valid Triton model config: {exc}") from exc
    platform = proto.platform or proto.backend
    if platform and platform not in TRITON_ONNX:
        raise HastenError(f"{path}: platform/backend '{platform}' is not served by hasten",
                          hint="hasten serves ONNX models (platform: \"onnxruntime_onnx\")")
    raw: dict[str, Any] = {"max_batch_size": proto.max_batch_size}
    counts = [g.count for g in proto.instance_group if g.count]
    if counts:
        raw["instances"] = sum(counts)
    if proto.HasField("dynamic_batching"):
        d = proto.dynamic_batching
        q = d.default_queue_policy
        raw["dynamic_batching"] = {
            "max_queue_delay_ms": d.max_queue_delay_microseconds / 1e3,
            "preferred_batch_sizes": list(d.preferred_batch_size),
            "priority_levels": d.priority_levels, "default_priority_level": d.default_priority_level,
            "max_queue_size": q.max_queue_size, "timeout_ms": q.default_timeout_microseconds / 1e3,
            "timeout_action": "delay" if q.timeout_action == 1 else "reject",
            "allow_timeout_override": q.allow_timeout_override}
    return _validated(raw, path)
