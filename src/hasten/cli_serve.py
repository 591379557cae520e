"""`hasten serve`: a model repository (or one model) behind the KServe v2 / Triton protocol.
Registered on the app in cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from hasten.cli_common import _load
from hasten.core import HastenError
from hasten.core.console import stderr_console


def serve(
    source: str = typer.Argument(..., help="A model repository folder (repo/<model>/config.yaml + <version>/model.onnx, or a Triton repository of ONNX models), or one model: .onnx file, sentence-transformers folder, built-in example."),
    http_port: int = typer.Option(8000, "--http-port", help="KServe v2 / Triton HTTP port."),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="KServe v2 / Triton gRPC port (0: no gRPC)."),
    metrics_port: int = typer.Option(8002, "--metrics-port", help="Prometheus /metrics port (0: no metrics)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 to accept other machines."),
    backend: str = typer.Option("ort-cpu", "--backend", "-b", help="Single model: the backend."),
    max_batch_size: int = typer.Option(8, "--max-batch-size", help="Single model: the largest batch the batcher forms."),
    max_queue_delay_ms: float = typer.Option(2.0, "--max-queue-delay-ms", help="Single model: the batching window (from the oldest queued request)."),
    max_queue_size: int = typer.Option(0, "--max-queue-size", help="Single model: requests queued at most (0: unbounded); more get 503."),
    slo_p99_ms: Optional[float] = typer.Option(None, "--slo-p99-ms", help="Single model: let the SLO controller set the window and batch cap to keep p99 under this."),
    instances: Optional[int] = typer.Option(None, "--instances", help="Runner instances (threads); for a repository it overrides every model's config (default there: the config's)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Single model: intra-op threads per instance."),
    dynamic_quant_group: int = typer.Option(0, "--dynamic-quant-group", help="Single model on an openvino backend: run its float MatMuls as dynamic INT8 (activations quantized per N values), as `hasten quantize --dynamic-quant-group N` judged it."),
    inline: bool = typer.Option(True, "--inline/--no-inline", help="Single model, one instance: a batch that finds the server idle runs on the event loop's thread (saves two thread wake-ups)."),
    max_body_mb: float = typer.Option(64.0, "--max-body-mb", help="Largest request body accepted (413 beyond)."),
    idle_timeout_s: float = typer.Option(60.0, "--idle-timeout-s", help="Close an HTTP connection silent this long with no request in progress."),
) -> None:
    """Serve models with dynamic batching over the KServe v2 / Triton HTTP protocol."""
    from hasten.serve.http import run_http
    from hasten.serve.server import ModelServer

    entries = _serve_entries(source, backend, max_batch_size, max_queue_delay_ms, max_queue_size, instances or 1, threads,
                             inline, instances is not None, slo_p99_ms, dynamic_quant_group)
    names = ", ".join(f"{n} ({e.config.backend}, max batch {e.config.max_batch_size}, {e.config.instances} instance(s))"
                      for n, e in entries.items())

    def ready() -> None:
        grpc = (f", grpc://{host}:{grpc_port}" if grpc_port else "") + (
            f", metrics http://{host}:{metrics_port}/metrics" if metrics_port else "")
        stderr_console().print(f"serving {names} on http://{host}:{http_port}{grpc} — ready", highlight=False,
                               soft_wrap=True)

    stderr_console().print(f"loading and warming up {len(entries)} model(s)…", highlight=False)
    run_http(ModelServer(entries), host, http_port, int(max_body_mb * 1024 * 1024), on_ready=ready,
             grpc_port=grpc_port or None, metrics_port=metrics_port or None, idle_timeout_s=idle_timeout_s).run()


def _serve_entries(source: str, backend: str, max_batch_size: int, delay_ms: float, queue: int, instances: int,
                   threads: int | None, inline: bool = True, instances_set: bool = False,
                   slo_p99_ms: float | None = None, dynamic_quant_group: int = 0) -> dict[str, Any]:
    from hasten.serve.repository import DynamicBatching, ModelConfig, ModelEntry, check_name, load_entry, load_repository

    path = Path(source)
    if path.is_dir() and ((path / "config.yaml").exists() or (path / "config.pbtxt").exists()):
        entry = load_entry(path)  # one model folder of a repository
        check_name(entry.name)
        entries = {entry.name: entry}
    elif path.is_dir() and not (path / "modules.json").exists():
        entries = load_repository(path)
    else:
        entries = {}
    if entries:
        if instances_set:
            for e in entries.values():
                e.config.instances = instances
        return entries
    m = _load(source)
    name = check_name(m.name.replace(" ", "_"))
    if m.fixed_batch is not None and max_batch_size > 0:
        stderr_console().print(f"note: '{name}' has a fixed batch dimension ({m.fixed_batch}); serving it without dynamic "
                               "batching (max_batch_size 0)", highlight=False)
        max_batch_size = 0
    _note_run_with(m.path, backend, dynamic_quant_group)
    try:
        config = ModelConfig(backend=backend, max_batch_size=max_batch_size, instances=instances, threads=threads,
                             inline_when_idle=inline, dynamic_quant_group=dynamic_quant_group,
                             dynamic_batching=DynamicBatching(max_queue_delay_ms=delay_ms, max_queue_size=queue,
                                                              slo_p99_ms=slo_p99_ms))
    except Exception as exc:  # pydantic's ValidationError: say which flag
        raise HastenError(f"bad serving flags: {exc}") from None
    return {name: ModelEntry(name, {1: m.path}, config, "file")}


def _note_run_with(model_path: Path, backend: str, dynamic_quant_group: int) -> None:
    """A quantized model's manifest says how the gate judged and timed it; say so when serving it otherwise."""
    import json

    manifest = Path(model_path).with_suffix(".manifest.json")
    try:
        run_with = json.loads(manifest.read_text()).get("run_with")
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(run_with, dict):
        return
    want_backend, want_group = run_with.get("backend"), int(run_with.get("dynamic_quant_group") or 0)
    if (want_backend, want_group) != (backend, dynamic_quant_group):
        stderr_console().print(f"note: {manifest.name} says this model was judged and timed with -b {want_backend} "
                               f"--dynamic-quant-group {want_group}; served with -b {backend}"
                               + (f" --dynamic-quant-group {dynamic_quant_group}" if dynamic_quant_group else "")
                               + ", its quality and speed may differ", highlight=False, soft_wrap=True)
