"""`ModelServer`: the models of a repository, each behind its own `Batcher`; what every front end
(HTTP, gRPC) asks of it: readiness, metadata, config, statistics, inference."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hasten import __version__
from hasten.core import HastenError
from hasten.serve.batcher import Batcher, InvalidInput, ServeError, Timings, Unavailable
from hasten.serve.repository import ModelEntry, check_name
from hasten.serve.tensors import CONFIG_TYPES, InferRequest, wire_type

EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics", "schedule_policy", "model_repository")


class NotFound(ServeError):
    status = 400  # Triton answers an unknown model with INVALID_ARG -> 400


@dataclass
class LoadedModel:
    entry: ModelEntry
    version: int
    model: Any
    batcher: Batcher
    cold_start_s: float = 0.0
    controller: Any = None  # an SloController when the config sets slo_p99_ms
    counts: dict[str, float] = field(default_factory=lambda: {"success": 0, "fail": 0, "queue_ns": 0,
                                                               "compute_ns": 0, "last_inference_ms": 0})

    @property
    def name(self) -> str:
        return self.entry.name


class ModelServer:
    """Loads, warms up and serves the latest version of each model of ``entries``."""

    def __init__(self, entries: dict[str, ModelEntry]) -> None:
        self.entries = entries
        self.models: dict[str, LoadedModel] = {}
        self.ready = False
        self.metrics: Any = None  # a ServerMetrics when /metrics is served
        self.in_flight = 0        # requests the front ends have read and not yet answered

    async def start(self) -> None:
        for name, entry in self.entries.items():
            self.models[name] = await asyncio.to_thread(_load, entry)
            self.models[name].batcher.requests_in_flight = lambda: self.in_flight
            self.models[name].batcher.start()
            slo = entry.config.dynamic_batching.slo_p99_ms if entry.config.dynamic_batching else None
            if slo:
                from hasten.serve.adaptive import SloController, SloPolicy

                loaded = self.models[name]
                controller = SloController(loaded.batcher, SloPolicy(slo / 1e3, entry.config.max_batch_size))
                if self.metrics is not None:
                    controller.on_change = self.metrics.controller_gauges(name, str(loaded.version))
                controller.start()
                loaded.controller = controller
        self.ready = True

    async def stop(self) -> None:
        """Stop accepting; answer everything accepted (each batcher drains); then return."""
        self.ready = False
        for m in self.models.values():
            if m.controller is not None:
                await m.controller.stop()
        await asyncio.gather(*(m.batcher.stop() for m in self.models.values()))

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        try:
            check_name(name)
        except HastenError:
            raise NotFound(f"Request for unknown model: '{name}' is not found") from None
        loaded = self.models.get(name)
        if loaded is None:
            raise NotFound(f"Request for unknown model: '{name}' is not found",
                           hint="models: " + ", ".join(sorted(self.models)))
        if version not in (None, "") and str(version) != str(loaded.version):
            raise NotFound(f"Request for unknown model: '{name}' version {version} is not found",
                           hint=f"served version: {loaded.version}")
        return loaded

    # ------------------------------------------------------------------ descriptions

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "hasten", "version": __version__, "extensions": list(EXTENSIONS)}

    def metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        m = self.get(name, version)
        batching = m.entry.config.max_batch_size > 0
        return {"name": m.name, "versions": [str(m.version)], "platform": "onnxruntime_onnx",
                "inputs": [_tensor_meta(s, batching) for s in m.model.inputs],
                "outputs": [_tensor_meta(s, batching) for s in m.model.outputs]}

    def config(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The model config in Triton's JSON form (protocol.md §5.1)."""
        m = self.get(name, version)
        cfg = m.entry.config
        batching = cfg.max_batch_size > 0

        def dims(spec: Any) -> list[int]:
            return list(spec.shape[1:] if batching else spec.shape)

        out: dict[str, Any] = {
            "name": m.name, "platform": "onnxruntime_onnx", "backend": "onnxruntime", "max_batch_size": cfg.max_batch_size,
            "input": [{"name": s.name, "data_type": CONFIG_TYPES[wire_type(s.dtype)], "format": "FORMAT_NONE",
                       "dims": dims(s), "optional": False} for s in m.model.inputs],
            "output": [{"name": s.name, "data_type": CONFIG_TYPES[wire_type(s.dtype)], "dims": dims(s)}
                       for s in m.model.outputs],
            "instance_group": [{"name": f"{m.name}_0", "kind": "KIND_CPU", "count": cfg.instances, "gpus": []}],
            "version_policy": {"latest": {"num_versions": 1}},
            "parameters": {"hasten_backend": {"string_value": cfg.backend}},
        }
        d = cfg.dynamic_batching
        if d is not None:
            out["dynamic_batching"] = {
                "preferred_batch_size": list(d.preferred_batch_sizes),
                "max_queue_delay_microseconds": int(d.max_queue_delay_ms * 1000), "preserve_ordering": False,
                "priority_levels": d.priority_levels, "default_priority_level": d.default_priority_level,
                "default_queue_policy": {"timeout_action": d.timeout_action.upper(),
                                         "default_timeout_microseconds": int(d.timeout_ms * 1000),
                                         "allow_timeout_override": d.allow_timeout_override,
                                         "max_queue_size": d.max_queue_size}}
        return out

    def statistics(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        models = [self.get(name, version)] if name else list(self.models.values())
        return {"model_stats": [_stats(m) for m in models]}

    def batching(self, name: str, version: str | None = None, changes: Any = None) -> dict[str, Any]:
        """The batcher's live knobs (hasten extension: GET/POST /v2/models/{m}/batching), changed
        when ``changes`` holds any of max_queue_delay_ms, batch_cap (0: max_batch_size),
        preferred_batch_sizes. For `hasten tune` and operators; nothing is written to disk."""
        m = self.get(name, version)
        if changes is not None:
            if not isinstance(changes, dict) or not changes:
                raise InvalidInput("send a JSON object with max_queue_delay_ms, batch_cap and/or preferred_batch_sizes")
            unknown = set(changes) - {"max_queue_delay_ms", "batch_cap", "preferred_batch_sizes"}
            if unknown:
                raise InvalidInput(f"unknown batching knobs: {', '.join(sorted(unknown))}",
                                   hint="max_queue_delay_ms, batch_cap, preferred_batch_sizes")
            update: dict[str, Any] = {}
            try:
                if "max_queue_delay_ms" in changes:
                    update["max_queue_delay_s"] = float(changes["max_queue_delay_ms"]) / 1e3
                if "batch_cap" in changes:
                    update["batch_cap"] = int(changes["batch_cap"])
                if "preferred_batch_sizes" in changes:
                    update["preferred_batch_sizes"] = tuple(int(b) for b in changes["preferred_batch_sizes"])
                m.batcher.update(**update)
            except (TypeError, ValueError, HastenError) as exc:
                raise InvalidInput(f"bad batching knobs: {exc}") from None
        cfg = m.batcher.config
        return {"max_batch_size": cfg.max_batch_size, "batch_cap": cfg.formation_max,
                "max_queue_delay_ms": cfg.max_queue_delay_s * 1e3, "preferred_batch_sizes": list(cfg.preferred_batch_sizes),
                "instances": m.batcher.instances, "slo_controller": None if m.controller is None else {
                    "target_ms": m.controller.policy.target_s * 1e3, "slo_ms": m.controller.policy.slo_s * 1e3,
                    "history": [vars(d) for d in m.controller.history[-2000:]]}}

    # ------------------------------------------------------------------ inference

    async def infer(self, name: str, version: str | None, request: InferRequest) -> tuple[LoadedModel, dict[str, np.ndarray], Timings]:
        if not self.ready:
            raise Unavailable("the server is not ready (starting or stopping)")
        m = self.get(name, version)
        try:
            inputs = _text_inputs(m.model.inputs, request.inputs)
            outputs, timings = await m.batcher.submit(inputs, request.priority, request.timeout_s)
        except ServeError:
            m.counts["fail"] += 1
            raise
        except HastenError as exc:
            m.counts["fail"] += 1
            raise InvalidInput(str(exc)) from None
        m.counts["success"] += 1
        m.counts["queue_ns"] += timings.queue_s * 1e9
        m.counts["compute_ns"] += timings.compute_s * 1e9
        m.counts["last_inference_ms"] = int(time.time() * 1000)
        if self.metrics is not None:
            self.metrics.observe(m.name, str(m.version), timings.queue_s, timings.queue_s + timings.compute_s)
        return m, outputs, timings


def server_timing(deser_s: float, timings: Timings, ser_s: float) -> str:
    """The ``Server-Timing`` value (HTTP header, gRPC trailing metadata): request parsing, queue
    (arrival → batch start; ``window`` is the part of it spent waiting for the batch to form with
    an instance free), the batch's compute, its size, and response encoding; durations in ms."""
    return (f"deser;dur={deser_s * 1e3:.3f}, queue;dur={timings.queue_s * 1e3:.3f}, "
            f"window;dur={timings.window_s * 1e3:.3f}, compute;dur={timings.compute_s * 1e3:.3f}, "
            f"batch;desc=\"{timings.batch_size}\", ser;dur={ser_s * 1e3:.3f}")


def _text_inputs(specs: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """BYTES arrive as bytes; ONNX Runtime's string tensors want str (UTF-8)."""
    out = dict(inputs)
    for spec in specs:
        array = inputs.get(spec.name)
        if spec.dtype != "object" or array is None or array.dtype != object:
            continue
        try:
            out[spec.name] = np.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in array.reshape(-1)],
                                      dtype=object).reshape(array.shape)
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"input '{spec.name}': BYTES elements must be UTF-8 text for this model ({exc})") from None
    return out


def _tensor_meta(spec: Any, batching: bool) -> dict[str, Any]:
    shape = list(spec.shape)
    if batching and shape:
        shape[0] = -1
    return {"name": spec.name, "datatype": wire_type(spec.dtype), "shape": shape}


def _stats(m: LoadedModel) -> dict[str, Any]:
    s = m.batcher.stats
    fails = sum(s.failure.values())

    def dur(count: float, ns: float) -> dict[str, int]:
        return {"count": int(count), "ns": int(ns)}

    return {"name": m.name, "version": str(m.version), "last_inference": int(m.counts["last_inference_ms"]),
            "inference_count": s.inferences, "execution_count": s.executions,
            "inference_stats": {"success": dur(s.success, (s.queue_s + s.compute_s) * 1e9),
                                "fail": dur(fails, 0), "queue": dur(s.success, s.queue_s * 1e9),
                                "compute_input": dur(s.executions, 0),
                                "compute_infer": dur(s.executions, s.compute_s * 1e9),
                                "compute_output": dur(s.executions, 0), "cache_hit": dur(0, 0),
                                "cache_miss": dur(0, 0)},
            "batch_stats": [{"batch_size": b, "compute_input": dur(n, 0), "compute_infer": dur(n, 0),
                             "compute_output": dur(n, 0)} for b, n in sorted(s.batch_sizes.items())],
            "memory_usage": [], "cold_start_ms": round(m.cold_start_s * 1e3, 3)}


def _load(entry: ModelEntry) -> LoadedModel:
    """Compile one runner per instance and warm each up at every batch size the batcher can emit."""
    from hasten.models import load_model, synthetic_dataset
    from hasten.runtime import BackendConfig, compile

    started = time.perf_counter()
    version = entry.latest
    model = load_model(entry.path(version))
    cfg = entry.config
    fixed = model.fixed_batch
    if fixed is not None and cfg.max_batch_size > 0:
        raise HastenError(f"model '{entry.name}' has a fixed batch dimension ({fixed}: input shape "
                          f"{model.inputs[0].shape_text()}); it cannot be batched dynamically",
                          hint=f"set max_batch_size: 0 in {entry.config_path or 'its config'} (requests then carry the "
                               "whole input shape), or export the model with a dynamic batch axis")
    # the batcher checks every request against the specs; the runner need not check the batch again
    bcfg = BackendConfig(threads=cfg.threads, validate_inputs=False, dynamic_quant_group=cfg.dynamic_quant_group)
    runners = [compile(model, cfg.backend, bcfg) for _ in range(cfg.instances)]
    batching = cfg.batching()
    if cfg.max_batch_size == 0 and fixed:  # not batching: requests are exactly the model's fixed batch
        batching = batching.with_changes(max_batch_size=fixed)
    sizes = range(1, batching.max_batch_size + 1) if cfg.max_batch_size > 0 else [None]
    warm = synthetic_dataset(model.inputs, size=max(1, batching.max_batch_size), dynamic_dim=16)
    warm_times: dict[int, float] = {}
    controlled = bool(cfg.dynamic_batching and cfg.dynamic_batching.slo_p99_ms)
    for runner in runners:
        for size in sizes:
            feed = warm.batch(0, size) if size else warm.batch(0, fixed or 1)
            runner.run(feed)
            if controlled and size and runner is runners[0]:  # timed again: the SLO controller's first compute model
                t = time.perf_counter()
                runner.run(feed)
                warm_times[size] = time.perf_counter() - t
    batcher = Batcher(runners, batching, model.inputs, model.outputs, cfg.pad_values)
    batcher.compute_by_size.update(warm_times)
    return LoadedModel(entry, version, model, batcher, time.perf_counter() - started)
