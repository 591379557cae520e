"""The `hasten` command: parses, calls the stages, prints. Results on stdout, logs on stderr."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from hasten.cli_common import _batch_sizes, _data_for, _load, _names, _requirements, _split_ints
from hasten.cli_derive import distill, prune
from hasten.cli_edge import export, run_bundle
from hasten.cli_load import loadtest, tune
from hasten.cli_serve import serve
from hasten.core import HastenError
from hasten.core.console import stderr_console, stdout_console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="hasten: measure, accelerate, compress, batch and serve AI inference.")
log = logging.getLogger("hasten")


@app.callback()
def _setup(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log details to stderr.")) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=stderr_console(), show_path=False)], force=True)
    logging.getLogger("hasten").setLevel(logging.INFO if verbose else logging.WARNING)  # not the libraries' chatter


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
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", help="Comma-separated batch sizes \\[default: 1,8,32, or the model's fixed batch size]."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Pad/truncate token inputs to this length (default 128 for text models); also the size of other dynamic dimensions of random inputs (default 16)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads (default: every usable core)."),
    time_budget_s: float = typer.Option(3.0, "--time-budget-s", help="Timed seconds per batch size and backend, at most."),
    target_rel_ci: float = typer.Option(0.01, "--target-rel-ci", help="Stop early once the median's 95% CI half-width is this fraction of it."),
    data: Optional[Path] = typer.Option(None, "--data", help=".npz with one array per input (plus optional labels); default: the example's data, else random inputs."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full results as JSON here."),
    allow_fallback: bool = typer.Option(False, "--allow-fallback", help="Allow a GPU/OpenVINO backend to fall back to CPU instead of failing."),
    graph_opt: str = typer.Option("all", "--graph-opt", help="ONNX Runtime graph optimisation level: disable, basic, extended, all."),
    ort_disable: str = typer.Option("", "--ort-disable", help="ONNX Runtime fusions to turn off, comma-separated (e.g. SkipLayerNormFusion): each ORT backend is measured with and without them, interleaved; `hasten profile` says when one is slow."),
    dynamic_quant_group: int = typer.Option(0, "--dynamic-quant-group", help="OpenVINO backends: also measure them with the MatMuls still in float run as dynamic INT8 (activations quantized per N values, e.g. 128), interleaved with the plain run."),
) -> None:
    """Benchmark a model: latency percentiles and throughput per batch size, cold start apart."""
    from hasten.measure import BenchConfig, compare
    from hasten.measure.report import print_bench, summary_lines
    from hasten.runtime import BackendConfig, backends_for, compile
    from hasten.runtime.base import check_dynamic_quant_group

    bcfg = BackendConfig(threads=threads, allow_fallback=allow_fallback, graph_optimization=graph_opt,
                         disabled_optimizers=_names(ort_disable))
    m = _load(model)
    sizes = _batch_sizes(batch_sizes, m)
    dataset, seq_len = _data_for(m, data, seq_len)
    config = BenchConfig(batch_sizes=sizes, seq_len=seq_len, time_budget_s=time_budget_s, target_rel_ci=target_rel_ci)
    names = _pick_backends(backend, backends_for(m), m)
    # applied to the OpenVINO backends among -b: checked against the first of them (or the first backend)
    check_dynamic_quant_group(dynamic_quant_group, next((n for n in names if n.startswith("openvino")), names[0]))
    runners = {}
    with stderr_console().status("creating sessions…"):
        for name in names:
            if bcfg.disabled_optimizers and name.startswith("ort-"):  # with and without, interleaved
                runners[name] = compile(m, name, dataclasses.replace(bcfg, disabled_optimizers=()))
                runners[f"{name} -" + ",".join(bcfg.disabled_optimizers)] = compile(m, name, bcfg)
            else:
                runners[name] = compile(m, name, bcfg)
            if dynamic_quant_group and name.startswith("openvino"):
                runners[f"{name} +dynamic-int8/{dynamic_quant_group}"] = compile(
                    m, name, dataclasses.replace(bcfg, dynamic_quant_group=dynamic_quant_group))
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
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size to profile \\[default: 1, or the model's fixed batch]."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Token length (default 128 for text models)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads (default: every usable core)."),
    runs: int = typer.Option(30, "--runs", help="Profiled runs (after 5 warm-up runs)."),
    graph_opt: str = typer.Option("all", "--graph-opt", help="ONNX Runtime graph optimisation level."),
    top: int = typer.Option(10, "--top", help="How many of the heaviest nodes to list."),
    data: Optional[Path] = typer.Option(None, "--data", help=".npz inputs (default: the example's data, else random)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the whole profile as JSON here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a roofline chart (PNG) here."),
    allow_fallback: bool = typer.Option(False, "--allow-fallback", help="List nodes that fell back to another provider instead of failing."),
    ort_disable: str = typer.Option("", "--ort-disable", help="ONNX Runtime fusions to turn off, comma-separated (e.g. SkipLayerNormFusion)."),
) -> None:
    """Where the time goes: per-op-type and per-node time, roofline verdict, and the lever it points to."""
    from hasten.measure.profile import ProfileConfig, profile as run_profile
    from hasten.measure.profile_report import print_profile, write_plot

    config = ProfileConfig(backend=backend, batch_size=batch_size or 1, runs=runs, threads=threads,
                           graph_optimization=graph_opt, allow_fallback=allow_fallback, top_n=top,
                           disabled_optimizers=_names(ort_disable))  # checked before loading
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
    metric: Optional[str] = typer.Option(None, "--metric", help="accuracy | cosine | nn_agreement | max_abs | mean_abs | module:function \\[default: accuracy with labels, else cosine]."),
    min_example: Optional[float] = typer.Option(None, "--min-example", help="Also require every example's score ≥ this (e.g. the worst cosine)."),
    require: list[str] = typer.Option([], "--require", help="More bars, repeatable: METRIC>=VALUE, e.g. nn_agreement>=0.95."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="Where to measure speed \\[default: the method's backend; ort-cpu]."),
    batch_sizes: str = typer.Option("1,8", "--batch-sizes", help="Batch sizes for the speed check."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Token length for the speed check (default 128 for text models)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads for both models."),
    steps: int = typer.Option(200, "--steps", help="qat: fine-tuning steps."),
    smooth_quant_alpha: Optional[float] = typer.Option(None, "--sq-alpha", help="nncf: SmoothQuant strength for transformer MatMuls, 0..1 (-1: off) \\[default: NNCF's 0.95]."),
    keep_float: list[str] = typer.Option([], "--keep-float", help="Keep this ONNX node in float, repeatable (e.g. a MatMul that INT8 hurts most; names as in a result's manifest). The fallback adds more only if the budget needs them."),
    dynamic_quant_group: int = typer.Option(0, "--dynamic-quant-group", help="OpenVINO backends: run the MatMuls left in float as INT8 anyway (weights INT8 at load, activations quantized at run time per N values, e.g. 128); the fallback then trades static for dynamic INT8 instead of float. 0: off."),
    no_fallback: bool = typer.Option(False, "--no-fallback", help="Do not put sensitive nodes back in float when the budget is missed."),
    keep_if_slower: bool = typer.Option(False, "--keep-if-slower", help="Write the result even if it is not faster than FP32."),
    time_budget_s: float = typer.Option(2.0, "--time-budget-s", help="Timed seconds per batch size and model in the speed check."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the whole result (quality, speed, trail, manifest) as JSON."),
) -> None:
    """Quantize under an accuracy budget: quality with its CI, fallback trail, and a speed guard."""
    from hasten.compress import config_from_dict
    from hasten.plan import GateConfig, quantize_under_budget
    from hasten.plan.gate import recommended_backend
    from hasten.plan.report import print_gate
    from hasten.runtime.base import check_dynamic_quant_group

    fields = {"method": method}
    if method in ("dynamic", "static"):
        fields["per_channel"] = not per_tensor
    if method == "static":
        fields["calibration"] = calibration
    if method == "qat":
        fields["steps"] = steps
    if smooth_quant_alpha is not None:
        if method != "nncf":
            raise HastenError("--sq-alpha applies to --method nncf only", hint="drop --sq-alpha or use --method nncf")
        fields["smooth_quant_alpha"] = smooth_quant_alpha
    if keep_float:
        fields["nodes_to_exclude"] = list(keep_float)
    qconfig = config_from_dict(fields)
    m = _load(model)
    dataset, seq_len = _data_for(m, data, seq_len)
    if data is None and not m.info.source.startswith("example:") and method in ("static", "nncf", "qat"):
        raise HastenError(f"--method {method} needs calibration data", hint="pass --data file.npz (a few hundred examples)")
    gate = GateConfig(budget=budget, metric=metric, min_example=min_example, require=_requirements(require),
                      backend=backend, threads=threads,
                      batch_sizes=_split_ints(batch_sizes, "--batch-sizes"), seq_len=seq_len,
                      time_budget_s=time_budget_s, fallback=not no_fallback, keep_if_slower=keep_if_slower,
                      dynamic_quant_group=dynamic_quant_group)
    check_dynamic_quant_group(dynamic_quant_group, backend or recommended_backend(qconfig) or "ort-cpu")  # before any work
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


app.command()(prune)
app.command()(distill)
app.command()(serve)
app.command()(loadtest)
app.command()(tune)
app.command()(export)
app.command("run-bundle")(run_bundle)


def main() -> None:
    try:
        app()
    except HastenError as exc:
        stderr_console().print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
