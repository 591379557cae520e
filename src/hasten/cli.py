"""The `hasten` command: parses, calls the stages, prints. Results on stdout, logs on stderr."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from hasten.core import HastenError
from hasten.core.console import stderr_console, stdout_console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="hasten: measure, accelerate, compress, batch and serve AI inference.")
log = logging.getLogger("hasten")
# Text models are benchmarked at a fixed token length unless --seq-len says otherwise, so that
# every batch size sees the same per-example work (real sentences vary from 3 to 80 tokens).
DEFAULT_TEXT_SEQ_LEN = 128


@app.callback()
def _setup(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log details to stderr.")) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=stderr_console(), show_path=False)], force=True)
    logging.getLogger("hasten").setLevel(logging.INFO if verbose else logging.WARNING)  # not the libraries' chatter


def _split_ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise HastenError(f"{what} must be comma-separated integers, got '{text}'", hint="e.g. 1,8,32") from None
    if not values or min(values) < 1:
        raise HastenError(f"{what} must be positive integers, got '{text}'", hint="e.g. 1,8,32")
    return values


@app.command()
def backends(
    pick: Optional[str] = typer.Option(None, "--pick", help="Benchmark every available backend on this MODEL and name the fastest."),
    batch_size: int = typer.Option(1, "--batch-size", help="With --pick: the batch size to choose for."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="With --pick: token length (default 128 for text models)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="With --pick: intra-op threads (default: every usable core)."),
    time_budget_s: float = typer.Option(3.0, "--time-budget-s", help="With --pick: timed seconds per backend, at most."),
) -> None:
    """List the backends hasten knows and whether each can run here; --pick MODEL measures them."""
    from rich.table import Table

    from hasten.runtime import available_backends, usable_cores

    if pick is not None:
        _pick(pick, batch_size, seq_len, threads, time_budget_s)
        return
    table = Table(title=f"Backends on this machine ({usable_cores()} usable cores)")
    for col in ("backend", "available", "runs", "note"):
        table.add_column(col)
    for st in available_backends(include_unavailable=True):
        runs = "models from PyTorch" if st.needs_torch_model else "any ONNX model"
        table.add_row(st.name, "[green]yes[/]" if st.available else "[red]no[/]", runs, st.reason or st.description)
    stdout_console().print(table)


def _pick(model_src: str, batch_size: int, seq_len: int | None, threads: int | None, budget: float) -> None:
    from hasten.measure import BenchConfig, compare
    from hasten.measure.report import pick_lines, print_bench
    from hasten.runtime import BackendConfig, backends_for, compile

    m = _load(model_src)
    sizes = (m.fixed_batch,) if m.fixed_batch else (batch_size,)
    dataset, seq_len = _data_for(m, None, seq_len)
    runners = {}
    with stderr_console().status("creating sessions (torch.compile compiles on its first run)…"):
        for name in backends_for(m):
            try:
                runners[name] = compile(m, name, BackendConfig(threads=threads))
            except HastenError as exc:  # one backend failing must not hide the others
                log.warning("skipping %s: %s", name, exc)
    config = BenchConfig(batch_sizes=sizes, seq_len=seq_len, time_budget_s=budget)
    results = compare(runners, dataset, config, progress=_progress_hook(1), model_info=m.info.to_dict())
    print_bench(results, m.name, dataset.name)
    for line in pick_lines(results):
        stdout_console().print(line, highlight=False)


def _data_for(m: Any, data: Path | None, seq_len: int | None) -> tuple[Any, int | None]:
    from hasten.models import default_dataset, load_dataset, synthetic_dataset

    if seq_len is None and m.text_encoder is not None:
        seq_len = DEFAULT_TEXT_SEQ_LEN
    if data is not None:
        return load_dataset(data, m), seq_len
    return default_dataset(m) or synthetic_dataset(m.inputs, dynamic_dim=seq_len or 16), seq_len


@app.command()
def info(model: str = typer.Argument(..., help="Path to an .onnx file, a sentence-transformers folder, or a built-in example (minilm, digits-cnn).")) -> None:
    """Show a model's inputs and outputs."""
    from rich.table import Table

    m = _load(model)
    table = Table(title=f"{m.name} ({m.info.source})")
    for col in ("", "name", "dtype", "shape"):
        table.add_column(col)
    for kind, specs in (("input", m.inputs), ("output", m.outputs)):
        for s in specs:
            table.add_row(kind, s.name, s.dtype, s.shape_text())
    stdout_console().print(table)
    stdout_console().print(f"file: {m.path}", highlight=False, soft_wrap=True)


@app.command()
def bench(
    model: str = typer.Argument(..., help="Path to an .onnx file, a sentence-transformers folder, or a built-in example (minilm, digits-cnn)."),
    backend: str = typer.Option("ort-cpu", "--backend", "-b", help="Backend(s), comma-separated, or 'all' (see `hasten backends`)."),
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", help="Comma-separated batch sizes [default: 1,8,32, or the model's fixed batch size]."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Pad/truncate token inputs to this length (default 128 for text models); also the size of other dynamic dimensions of random inputs (default 16)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads (default: every usable core)."),
    time_budget_s: float = typer.Option(3.0, "--time-budget-s", help="Timed seconds per batch size and backend, at most."),
    target_rel_ci: float = typer.Option(0.01, "--target-rel-ci", help="Stop early once the median's 95% CI half-width is this fraction of it."),
    data: Optional[Path] = typer.Option(None, "--data", help=".npz with one array per input (plus optional labels); default: the example's data, else random inputs."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full results as JSON here."),
    allow_fallback: bool = typer.Option(False, "--allow-fallback", help="Allow a GPU/OpenVINO backend to fall back to CPU instead of failing."),
    graph_opt: str = typer.Option("all", "--graph-opt", help="ONNX Runtime graph optimisation level: disable, basic, extended, all."),
) -> None:
    """Benchmark a model: latency percentiles and throughput per batch size, cold start apart."""
    from hasten.measure import BenchConfig, compare
    from hasten.measure.report import print_bench, summary_lines
    from hasten.runtime import BackendConfig, backends_for, compile

    bcfg = BackendConfig(threads=threads, allow_fallback=allow_fallback, graph_optimization=graph_opt)
    m = _load(model)
    sizes = _batch_sizes(batch_sizes, m)
    dataset, seq_len = _data_for(m, data, seq_len)
    config = BenchConfig(batch_sizes=sizes, seq_len=seq_len, time_budget_s=time_budget_s, target_rel_ci=target_rel_ci)
    names = _pick_backends(backend, backends_for(m), m)
    runners = {}
    with stderr_console().status("creating sessions…"):
        for name in names:
            runners[name] = compile(m, name, bcfg)
    results = compare(runners, dataset, config, progress=_progress_hook(len(config.batch_sizes)), model_info=m.info.to_dict())
    print_bench(results, m.name, dataset.name)
    for line in summary_lines(results):
        stdout_console().print(line)
    if json_out is not None:
        import json

        json_out.write_text(json.dumps({k: v.to_dict() for k, v in results.items()}, indent=2))
        stderr_console().print(f"wrote {json_out}", highlight=False)


@app.command()
def profile(
    model: str = typer.Argument(..., help="Path to an .onnx file, a sentence-transformers folder, or a built-in example."),
    backend: str = typer.Option("ort-cpu", "--backend", "-b", help="ONNX Runtime backend to profile (ort-cpu, ort-cuda, ort-tensorrt, ort-openvino)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size to profile [default: 1, or the model's fixed batch]."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Token length (default 128 for text models)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads (default: every usable core)."),
    runs: int = typer.Option(30, "--runs", help="Profiled runs (after 5 warm-up runs)."),
    graph_opt: str = typer.Option("all", "--graph-opt", help="ONNX Runtime graph optimisation level."),
    top: int = typer.Option(10, "--top", help="How many of the heaviest nodes to list."),
    data: Optional[Path] = typer.Option(None, "--data", help=".npz inputs (default: the example's data, else random)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the whole profile as JSON here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a roofline chart (PNG) here."),
    allow_fallback: bool = typer.Option(False, "--allow-fallback", help="List nodes that fell back to another provider instead of failing."),
) -> None:
    """Where the time goes: per-op-type and per-node time, roofline verdict, and the lever it points to."""
    from hasten.measure.profile import ProfileConfig, profile as run_profile
    from hasten.measure.profile_report import print_profile, write_plot

    config = ProfileConfig(backend=backend, batch_size=batch_size or 1, runs=runs, threads=threads,
                           graph_optimization=graph_opt, allow_fallback=allow_fallback, top_n=top)  # checked before loading
    m = _load(model)
    size = _batch_sizes(None if batch_size is None else str(batch_size), m, "--batch-size")[0] if m.fixed_batch else config.batch_size
    dataset, seq_len = _data_for(m, data, seq_len)
    config = dataclasses.replace(config, batch_size=size, seq_len=seq_len)
    with stderr_console().status("profiling (the first run on a machine also measures its peaks)…"):
        result = run_profile(m, dataset, config)
    print_profile(result)
    if json_out is not None:
        import json

        json_out.write_text(json.dumps(result.to_dict(), indent=2))
        stderr_console().print(f"wrote {json_out}", highlight=False)
    if plot is not None:
        write_plot(result, plot)
        stderr_console().print(f"wrote {plot}", highlight=False)


@app.command()
def quantize(
    model: str = typer.Argument(..., help="Path to an .onnx file, a sentence-transformers folder, or a built-in example."),
    method: str = typer.Option(..., "--method", "-m", help="dynamic | static | nncf | fp16 | bf16 | qat"),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the quantized .onnx (a .manifest.json goes beside it)."),
    data: Optional[Path] = typer.Option(None, "--data", help=".npz for calibration and evaluation (default: the example's data)."),
    calibration: str = typer.Option("minmax", "--calibration", help="static: minmax | entropy | percentile."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="dynamic/static: one scale per tensor instead of per channel."),
    budget: str = typer.Option("1%", "--budget", help="Allowed quality drop vs FP32: '1%' (relative) or '0.5pt' / '0.005' (absolute)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="accuracy | cosine | nn_agreement | max_abs | mean_abs | module:function [default: accuracy with labels, else cosine]."),
    min_example: Optional[float] = typer.Option(None, "--min-example", help="Also require every example's score ≥ this (e.g. the worst cosine)."),
    require: list[str] = typer.Option([], "--require", help="More bars, repeatable: METRIC>=VALUE, e.g. nn_agreement>=0.95."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="Where to measure speed [default: the method's backend; ort-cpu]."),
    batch_sizes: str = typer.Option("1,8", "--batch-sizes", help="Batch sizes for the speed check."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Token length for the speed check (default 128 for text models)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads for both models."),
    steps: int = typer.Option(200, "--steps", help="qat: fine-tuning steps."),
    no_fallback: bool = typer.Option(False, "--no-fallback", help="Do not put sensitive nodes back in float when the budget is missed."),
    keep_if_slower: bool = typer.Option(False, "--keep-if-slower", help="Write the result even if it is not faster than FP32."),
    time_budget_s: float = typer.Option(2.0, "--time-budget-s", help="Timed seconds per batch size and model in the speed check."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the whole result (quality, speed, trail, manifest) as JSON."),
) -> None:
    """Quantize under an accuracy budget: quality with its CI, fallback trail, and a speed guard."""
    from hasten.compress import config_from_dict
    from hasten.plan import GateConfig, quantize_under_budget
    from hasten.plan.report import print_gate

    fields = {"method": method}
    if method in ("dynamic", "static"):
        fields["per_channel"] = not per_tensor
    if method == "static":
        fields["calibration"] = calibration
    if method == "qat":
        fields["steps"] = steps
    qconfig = config_from_dict(fields)
    m = _load(model)
    dataset, seq_len = _data_for(m, data, seq_len)
    if data is None and not m.info.source.startswith("example:") and method in ("static", "nncf", "qat"):
        raise HastenError(f"--method {method} needs calibration data", hint="pass --data file.npz (a few hundred examples)")
    gate = GateConfig(budget=budget, metric=metric, min_example=min_example, require=_requirements(require),
                      backend=backend, threads=threads,
                      batch_sizes=_split_ints(batch_sizes, "--batch-sizes"), seq_len=seq_len,
                      time_budget_s=time_budget_s, fallback=not no_fallback, keep_if_slower=keep_if_slower)
    with stderr_console().status(f"quantizing ({method}), evaluating, then timing against FP32…"):
        result = quantize_under_budget(m, qconfig, dataset, gate, out)
    print_gate(result, m.path.stat().st_size)
    if json_out is not None:
        import json

        json_out.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    if not result.accepted:
        stderr_console().print(f"[bold red]refused:[/] {result.refused}", highlight=False, soft_wrap=True)
        stderr_console().print("  nothing was written" + ("" if keep_if_slower else "; --keep-if-slower keeps a result "
                                                         "that is only refused for speed"), highlight=False)
        raise typer.Exit(3)
    stderr_console().print(f"wrote {out} and {out.with_suffix('.manifest.json')}", highlight=False)


@app.command()
def prune(
    model: str = typer.Argument(..., help="A model that came from torch: a built-in example or a sentence-transformers folder."),
    method: str = typer.Option("channel", "--method", "-m", help="unstructured | channel | 2:4"),
    amount: float = typer.Option(0.5, "--amount", help="Fraction removed: of weights (unstructured), of channels/heads (channel); 2:4 is always 0.5."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the pruned .onnx (a .manifest.json goes beside it)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Training data for fine-tuning: .npz, .txt (one text per line) or 'pydoc' [default: the example's training split]."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Held-out data for the quality gate [default: the example's test data, else the last 20% of --data]."),
    finetune_steps: int = typer.Option(0, "--finetune-steps", help="Fine-tuning steps after pruning (stops early once the budget holds)."),
    importance: str = typer.Option("l1", "--importance", help="channel: l1 | l2 | taylor."),
    scope: str = typer.Option("global", "--scope", help="unstructured: global | layer."),
    round_to: int = typer.Option(8, "--round-to", help="channel: keep channel counts a multiple of this."),
    iterative_steps: int = typer.Option(1, "--iterative-steps", help="channel: prune in this many steps, fine-tuning between them."),
    lr: float = typer.Option(1e-3, "--lr", help="Fine-tuning learning rate (Adam)."),
    ignore: list[str] = typer.Option([], "--ignore", help="Module name to leave alone, repeatable (the output head always is)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Folder for fine-tuning checkpoints; a stopped run resumes from it."),
    no_early_stop: bool = typer.Option(False, "--no-early-stop", help="Fine-tune all steps even after the budget holds."),
    budget: str = typer.Option("1%", "--budget", help="Allowed quality drop: '1%' (relative), '1pt' / '0.01' (absolute)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="accuracy | cosine | nn_agreement | … [default: accuracy with labels, else cosine]."),
    min_example: Optional[float] = typer.Option(None, "--min-example", help="Also require every example's score ≥ this."),
    require: list[str] = typer.Option([], "--require", help="More bars, repeatable: METRIC>=VALUE."),
    backend: str = typer.Option("ort-cpu", "--backend", "-b", help="Where to measure speed."),
    batch_sizes: str = typer.Option("1,8", "--batch-sizes", help="Batch sizes for the speed check."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Token length for the speed check (default 128 for text models)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads for both models."),
    keep_if_slower: bool = typer.Option(False, "--keep-if-slower", help="Write the result even if it is not faster."),
    time_budget_s: float = typer.Option(2.0, "--time-budget-s", help="Timed seconds per batch size and model in the speed check."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the whole result as JSON."),
) -> None:
    """Prune (unstructured, channel, 2:4), fine-tune, then gate: quality with its CI and measured speed."""
    from hasten.compress.prune import PruneConfig
    from hasten.plan.derive import prune_under_budget

    config = PruneConfig(method=method, amount=amount, scope=scope, importance=importance, round_to=round_to,
                         iterative_steps=iterative_steps, finetune_steps=finetune_steps, lr=lr, ignore=tuple(ignore))
    m = _load(model)
    _need_torch(m, "prune")
    train, evaluation, seq_len = _train_eval(m, data, eval_data, seq_len, needed=finetune_steps > 0)
    gate = _gate(budget, metric, min_example, require, backend, threads, batch_sizes, m, seq_len, time_budget_s,
                 keep_if_slower)
    with stderr_console().status(f"pruning ({method} {amount:g}), fine-tuning, evaluating, timing…"):
        result = prune_under_budget(m, config, train, evaluation, gate, out, checkpoint=checkpoint,
                                    early_stop=not no_early_stop)
    _finish(result, out, json_out, keep_if_slower)


@app.command()
def distill(
    teacher: str = typer.Argument(..., help="The teacher: a built-in example or a sentence-transformers folder (a model that came from torch)."),
    student: str = typer.Option("layers=3", "--student", help="layers=N | layers=0,2,4 | width=0.5 | module:function."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the student .onnx (a .manifest.json goes beside it)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Training data: .npz, .txt (one text per line) or 'pydoc' [default: the example's training data]."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Held-out data for the quality gate [default: the example's evaluation data, else the last 20% of --data]."),
    steps: int = typer.Option(1000, "--steps", help="Training steps."),
    temperature: float = typer.Option(4.0, "--temperature", "-T", help="Classifiers: softmax temperature of the soft targets."),
    alpha: float = typer.Option(0.7, "--alpha", help="Classifiers: weight of the soft-target loss (1 - alpha on the labels)."),
    loss: str = typer.Option("auto", "--loss", help="auto | kl | mse | cosine | mse+cosine (auto: kl for classifiers, mse+cosine for embeddings)."),
    lr: float = typer.Option(2e-4, "--lr", help="Peak learning rate (AdamW, cosine decay); 2e-4 suits pre-trained transformers."),
    batch_size: int = typer.Option(32, "--batch-size", help="Training batch size."),
    max_length: int = typer.Option(64, "--max-length", help="Text: tokens per training example, at most."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Folder for checkpoints; a stopped run resumes from it."),
    early_stop: bool = typer.Option(False, "--early-stop", help="Stop as soon as the budget holds on the held-out data."),
    budget: str = typer.Option("5%", "--budget", help="Allowed quality drop vs the teacher: '5%' (relative), '1pt' / '0.05' (absolute)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="accuracy | cosine | nn_agreement | … [default: accuracy with labels, else cosine]."),
    min_example: Optional[float] = typer.Option(None, "--min-example", help="Also require every example's score ≥ this."),
    require: list[str] = typer.Option([], "--require", help="More bars, repeatable: METRIC>=VALUE."),
    backend: str = typer.Option("ort-cpu", "--backend", "-b", help="Where to measure speed."),
    batch_sizes: str = typer.Option("1,8", "--batch-sizes", help="Batch sizes for the speed check."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Token length for the speed check (default 128 for text models)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads for both models."),
    keep_if_slower: bool = typer.Option(False, "--keep-if-slower", help="Write the result even if it is not faster."),
    time_budget_s: float = typer.Option(2.0, "--time-budget-s", help="Timed seconds per batch size and model in the speed check."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the whole result as JSON."),
) -> None:
    """Distil a teacher into a smaller student, then gate it: quality vs the teacher and measured speed."""
    from hasten.compress.distill import DistillConfig
    from hasten.plan.derive import distill_under_budget

    config = DistillConfig(student=student, steps=steps, temperature=temperature, alpha=alpha, loss=loss, lr=lr,
                           batch_size=batch_size, max_length=max_length)
    m = _load(teacher)
    _need_torch(m, "distill")
    train, evaluation, seq_len = _train_eval(m, data, eval_data, seq_len, needed=True)
    gate = _gate(budget, metric, min_example, require, backend, threads, batch_sizes, m, seq_len, time_budget_s,
                 keep_if_slower)
    with stderr_console().status(f"distilling into {student}, evaluating, timing…"):
        result = distill_under_budget(m, config, train, evaluation, gate, out, checkpoint=checkpoint,
                                      early_stop=early_stop)
    _finish(result, out, json_out, keep_if_slower)


@app.command()
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
    instances: int = typer.Option(1, "--instances", help="Single model: runner instances (threads)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Single model: intra-op threads per instance."),
    max_body_mb: float = typer.Option(64.0, "--max-body-mb", help="Largest request body accepted (413 beyond)."),
) -> None:
    """Serve models with dynamic batching over the KServe v2 / Triton HTTP protocol."""
    from hasten.serve.http import run_http
    from hasten.serve.server import ModelServer

    entries = _serve_entries(source, backend, max_batch_size, max_queue_delay_ms, max_queue_size, instances, threads)
    names = ", ".join(f"{n} ({e.config.backend}, max batch {e.config.max_batch_size}, {e.config.instances} instance(s))"
                      for n, e in entries.items())

    def ready() -> None:
        grpc = (f", grpc://{host}:{grpc_port}" if grpc_port else "") + (
            f", metrics http://{host}:{metrics_port}/metrics" if metrics_port else "")
        stderr_console().print(f"serving {names} on http://{host}:{http_port}{grpc} — ready", highlight=False,
                               soft_wrap=True)

    stderr_console().print(f"loading and warming up {len(entries)} model(s)…", highlight=False)
    run_http(ModelServer(entries), host, http_port, int(max_body_mb * 1024 * 1024), on_ready=ready,
             grpc_port=grpc_port or None, metrics_port=metrics_port or None).run()


def _serve_entries(source: str, backend: str, max_batch_size: int, delay_ms: float, queue: int, instances: int,
                   threads: int | None) -> dict[str, Any]:
    from hasten.serve.repository import DynamicBatching, ModelConfig, ModelEntry, check_name, load_repository

    path = Path(source)
    if path.is_dir() and not (path / "modules.json").exists():
        return load_repository(path)
    m = _load(source)
    name = check_name(m.name.replace(" ", "_"))
    try:
        config = ModelConfig(backend=backend, max_batch_size=max_batch_size, instances=instances, threads=threads,
                             dynamic_batching=DynamicBatching(max_queue_delay_ms=delay_ms, max_queue_size=queue))
    except Exception as exc:  # pydantic's ValidationError: say which flag
        raise HastenError(f"bad serving flags: {exc}") from None
    return {name: ModelEntry(name, {1: m.path}, config, "file")}


def _need_torch(m: Any, verb: str) -> None:
    if not m.has_torch:
        raise HastenError(f"{verb} trains the model, so it needs the PyTorch module; '{m.name}' was loaded from "
                          f"{m.info.source}",
                          hint="pass a built-in example or a sentence-transformers folder; for an ONNX file use "
                               "`hasten quantize`")


def _train_eval(m: Any, data: Path | None, eval_data: Path | None, seq_len: int | None,
                needed: bool) -> tuple[Any, Any, int | None]:
    """(training data or None, held-out evaluation data, speed-check token length)."""
    from hasten.models import default_dataset, load_dataset, training_dataset

    if seq_len is None and m.text_encoder is not None:
        seq_len = DEFAULT_TEXT_SEQ_LEN
    train = load_dataset(str(data), m) if data is not None else training_dataset(m)
    if train is None and needed:
        raise HastenError(f"'{m.name}' is not a built-in example, so there is no default training data",
                          hint="pass --data file.npz (or .txt / pydoc for text models)")
    if eval_data is not None:
        return train, load_dataset(str(eval_data), m), seq_len
    evaluation = default_dataset(m)
    if evaluation is not None:
        return train, evaluation, seq_len
    if train is None:
        raise HastenError("no data to check quality on", hint="pass --eval-data file.npz (or --data to split)")
    if len(train) < 5:
        raise HastenError(f"{len(train)} examples are too few to hold some out for evaluation",
                          hint="pass --eval-data, or more data")
    cut = len(train) - max(1, len(train) // 5)
    stderr_console().print(f"note: holding out the last {len(train) - cut} of {len(train)} examples of --data for "
                           "the quality gate (pass --eval-data to choose)", highlight=False)
    return train.select(slice(0, cut)), train.select(slice(cut, None), train.name + "-heldout"), seq_len


def _gate(budget: str, metric: str | None, min_example: float | None, require: list[str], backend: str,
          threads: int | None, batch_sizes: str, m: Any, seq_len: int | None, time_budget_s: float,
          keep_if_slower: bool) -> Any:
    from hasten.plan import GateConfig

    return GateConfig(budget=budget, metric=metric, min_example=min_example, require=_requirements(require),
                      backend=backend, threads=threads, batch_sizes=_batch_sizes(batch_sizes, m), seq_len=seq_len,
                      time_budget_s=time_budget_s, keep_if_slower=keep_if_slower)


def _finish(result: Any, out: Path, json_out: Path | None, keep_if_slower: bool) -> None:
    from hasten.plan.report import print_derived

    print_derived(result)
    if json_out is not None:
        import json

        json_out.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    if not result.accepted:
        stderr_console().print(f"[bold red]refused:[/] {result.refused}", highlight=False, soft_wrap=True)
        speed_only = result.refused.startswith("speed")
        stderr_console().print("  nothing was written" + (
            "; --keep-if-slower keeps a result that is only refused for speed" if speed_only else
            "; fine-tune longer (--finetune-steps / --steps), prune less, or allow a larger --budget"),
            highlight=False, soft_wrap=True)
        raise typer.Exit(3)
    stderr_console().print(f"wrote {out} and {out.with_suffix('.manifest.json')}", highlight=False)


def _requirements(items: list[str]) -> tuple[tuple[str, float], ...]:
    out = []
    for item in items:
        name, sep, value = item.partition(">=")
        try:
            out.append((name.strip(), float(value)))
        except ValueError:
            raise HastenError(f"--require wants METRIC>=VALUE, got '{item}'", hint="e.g. --require nn_agreement>=0.95") from None
        if not sep:
            raise HastenError(f"--require wants METRIC>=VALUE, got '{item}'", hint="e.g. --require nn_agreement>=0.95")
    return tuple(out)


def _batch_sizes(text: str | None, model: Any, flag: str = "--batch-sizes") -> tuple[int, ...]:
    fixed = model.fixed_batch
    if fixed is None:
        return _split_ints(text or "1,8,32", flag)
    if text is None:
        stderr_console().print(f"note: {model.name} has a fixed batch dimension of {fixed} (no dynamic batch axis): "
                               f"measuring batch {fixed} only", highlight=False, soft_wrap=True)
        return (fixed,)
    sizes = _split_ints(text, flag)
    if sizes != (fixed,):
        raise HastenError(f"{model.name} only takes batches of {fixed} (its first dimension is fixed), "
                          f"{flag} asked for {text}",
                          hint=f"use {flag} {fixed}, or re-export the model with a dynamic batch axis")
    return sizes


def _pick_backends(text: str, usable: list[str], model: Any) -> list[str]:
    from hasten.runtime import backend_names

    if text.strip() == "all":
        return usable
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in backend_names():
            raise HastenError(f"unknown backend '{n}'", hint="known backends: " + ", ".join(backend_names()))
        if n not in usable:
            raise HastenError(f"backend '{n}' cannot run '{model.name}' here",
                              hint="run `hasten backends` to see why; usable now: " + ", ".join(usable))
    return names


def _load(source: str) -> Any:
    from hasten.models import load_model

    with stderr_console().status(f"loading {source} (the first load of an example exports or trains it)…"):
        return load_model(source)


def _progress_hook(n_batch_sizes: int) -> Any:
    if not stderr_console().is_terminal:
        return None  # a live bar in a log file is only noise
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                        console=stderr_console(), transient=True)
    tasks: dict[str, Any] = {}

    def hook(label: str, fraction: float) -> None:
        if not progress.live.is_started:
            progress.start()
        if label not in tasks:
            tasks[label] = progress.add_task(f"measuring {label}", total=1.0)
        progress.update(tasks[label], completed=fraction)
        if fraction >= 1.0 and len(tasks) == n_batch_sizes:
            progress.stop()

    return hook


def main() -> None:
    try:
        app()
    except HastenError as exc:
        stderr_console().print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
