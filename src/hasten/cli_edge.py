"""`hasten export --target edge` and `hasten run-bundle`. Registered on the app in cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from hasten.cli_common import _data_for, _load
from hasten.core import HastenError
from hasten.core.console import stderr_console, stdout_console


def export(
    model: str = typer.Argument(..., help="A model: .onnx file, sentence-transformers folder, built-in example."),
    target: str = typer.Option("edge", "--target", help="What to export for (edge: a self-contained on-device bundle)."),
    fmt: str = typer.Option("ort", "--format", help="ort (ONNX Runtime ORT format), openvino (IR) or executorch (.pte)."),
    out: Path = typer.Option(..., "-o", "--out", help="The bundle folder to write."),
    optimization: str = typer.Option("all", "--optimization", help="ORT graph optimisation baked in: basic, extended, all."),
    target_platform: str = typer.Option("arm", "--platform", help="arm (phones, boards) or amd64: arm leaves out x86-only layouts."),
    preflight_only: bool = typer.Option(False, "--preflight", help="Only list the operators and what each target supports."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
    with_onnx: bool = typer.Option(False, "--with-onnx", help="Also ship the optimised graph as ONNX (to view it; doubles the size)."),
    quantize: str = typer.Option("auto", "--quantize", help="auto: ship dynamic INT8 when it passes the accuracy budget, else FP32; none: FP32."),
    budget: str = typer.Option("1%", "--budget", help="Accuracy budget for --quantize auto (as hasten quantize)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Evaluation data for the budget (.npz; default: the example's own)."),
    compare_cloud: bool = typer.Option(False, "--compare-cloud", help="Time the bundle (1 thread) against the model served by hasten serve."),
    rtt_ms: float = typer.Option(40.0, "--rtt-ms", help="With --compare-cloud: the network round trip to add to the served path."),
    bandwidth_mbps: float = typer.Option(50.0, "--bandwidth-mbps", help="With --compare-cloud: link speed for the payload's transfer time."),
) -> None:
    """Export a self-contained bundle for a device: model, op config, runner, checksums."""
    from hasten.edge.bundle import export_bundle
    from hasten.edge.preflight import preflight

    if target != "edge":
        raise HastenError(f"unknown export target '{target}'", hint="--target edge")
    m = _load(model)
    report = preflight(m.path, optimization if optimization in ("basic", "extended", "all") else "all")
    print_preflight(report)
    if preflight_only:
        return
    if quantize not in ("auto", "none"):
        raise HastenError(f"unknown --quantize '{quantize}'", hint="auto or none")
    chosen, recipe = m, {"precision": "fp32"}
    if quantize == "auto" and fmt != "executorch":
        try:
            chosen, recipe = _int8_if_within_budget(m, budget, data)
        except HastenError as exc:  # the INT8 attempt failing must not cost the export
            stderr_console().print(f"INT8 not possible ({exc}); shipping FP32", highlight=False, soft_wrap=True)
            recipe = {"precision": "fp32", "int8_refused": str(exc)}
    with stderr_console().status(f"exporting {m.name} ({fmt}, {recipe['precision']})…"):
        bundle = export_bundle(chosen, out, fmt, optimization, target_platform, recipe=recipe, force=force,
                               with_onnx=with_onnx)
    t = _files_table(bundle)
    stdout_console().print(t)
    stderr_console().print(f"wrote {out} — run it with: python {out}/run.py --input in.npz  (or hasten run-bundle {out})",
                           highlight=False)
    if compare_cloud:
        if rtt_ms < 0 or bandwidth_mbps <= 0:
            raise HastenError("--rtt-ms must be >= 0 and --bandwidth-mbps > 0")
        from hasten.edge.compare import compare
        from hasten.models import synthetic_dataset

        feed = synthetic_dataset(m.inputs, size=1).batch(0, 1)
        with stderr_console().status("timing the bundle at 1 thread, then the served model over local HTTP…"):
            result = compare(str(out), model, feed, [o.name for o in m.outputs], rtt_ms, bandwidth_mbps)
        print_comparison(result)


def _int8_if_within_budget(m: Any, budget: str, data: Path | None) -> tuple[Any, dict[str, Any]]:
    """Dynamic INT8 through the quantization gate (quality vs ``budget``, with its interval); on
    a device the 4× smaller weights count, and this machine's speed says little about an ARM
    core, so a result that is only not faster here is kept (the ratio is recorded)."""
    import tempfile

    from hasten.compress import config_from_dict
    from hasten.plan import GateConfig, quantize_under_budget

    dataset, seq_len = _data_for(m, data, None)
    gate = GateConfig(budget=budget, threads=1, batch_sizes=(1,), seq_len=seq_len, time_budget_s=1.0, keep_if_slower=True)
    tmp = Path(tempfile.mkdtemp(prefix="hasten-int8-"))
    with stderr_console().status("dynamic INT8 under the accuracy budget…"):
        result = quantize_under_budget(m, config_from_dict({"method": "dynamic"}), dataset, gate, tmp / f"{m.name}.int8.onnx")
    q = result.quality
    if not result.accepted or result.model is None:
        stderr_console().print(f"INT8 not within the budget ({result.refused}); shipping FP32", highlight=False, soft_wrap=True)
        return m, {"precision": "fp32", "int8_refused": result.refused}
    speed = result.guard.rows[0].speedup if result.guard and result.guard.rows else None
    stderr_console().print(f"INT8 within the budget ({q.metric} {q.value:.4f}); shipping INT8", highlight=False)
    from hasten.edge.bundle import sha256

    return result.model, {"precision": "int8 (dynamic)", "from": {"path": str(m.path), "sha256": sha256(Path(m.path))},
                          "quality": {"metric": q.metric, "value": q.value,
                                                                     "baseline": result.baseline_quality.value},
                          "speedup_here": speed}


def _files_table(bundle: Any) -> Any:
    from rich.table import Table

    t = Table(title=f"bundle {bundle.folder} ({bundle.manifest['format']}, model {bundle.manifest['model']})")
    t.add_column("file")
    t.add_column("bytes", justify="right")
    t.add_column("sha256")
    for name, f in bundle.manifest["files"].items():
        t.add_row(name, f"{f['size']:,}", f["sha256"][:16] + "…")
    return t


def print_comparison(c: Any) -> None:
    from rich.table import Table

    t = Table(title=f"edge vs cloud, batch 1 (cloud = local HTTP + {c.rtt_ms:g} ms RTT + "
                    f"{c.transfer_ms:.2f} ms transfer at {c.bandwidth_mbps:g} Mbit/s)")
    for col in ("", "p50 ms", "p99 ms"):
        t.add_column(col, justify="left" if not col else "right")
    t.add_row("edge bundle, 1 thread", f"{c.edge.p50_ms:.3f}", f"{c.edge.p99_ms:.3f}")
    t.add_row("served, local HTTP", f"{c.cloud_local.p50_ms:.3f}", f"{c.cloud_local.p99_ms:.3f}")
    t.add_row("served + network", f"{c.cloud('p50_ms'):.3f}", f"{c.cloud('p99_ms'):.3f}")
    stdout_console().print(t)
    stdout_console().print(f"p50: {c.verdict('p50_ms')}; p99: {c.verdict('p99_ms')}", highlight=False)


def print_preflight(report: Any) -> None:
    from rich.table import Table

    marks = {"ok": "[green]ok[/]", "fallback": "[yellow]CPU fallback[/]", "fails": "[red]fails[/]", "-": "·", "?": "?"}
    t = Table(title="pre-flight: operators per target (ort: the optimised graph the runtime executes)")
    for col in ("domain", "operator", "count", *report.targets):
        t.add_column(col, justify="right" if col == "count" else "left")
    for r in report.rows:
        t.add_row(r.domain, r.op, str(r.count), *(marks.get(r.status.get(x, "-"), r.status.get(x, "-")) for x in report.targets))
    con = stdout_console()
    con.print(t)
    for x in report.targets:
        con.print(f"  {x}: {report.verdict(x)}", highlight=False)


def run_bundle(
    bundle: Path = typer.Argument(..., help="A bundle folder written by hasten export."),
    input_file: Optional[Path] = typer.Option(None, "--input", help=".npz with one array per model input (default: synthetic)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the outputs here (.npz)."),
    threads: int = typer.Option(1, "--threads", help="Intra-op threads (1: a small device)."),
    bench: int = typer.Option(0, "--bench", help="Time this many runs: p50/p99."),
) -> None:
    """Verify a bundle's checksums and run it."""
    import numpy as np

    from hasten.edge.bundle import load_bundle

    runner = load_bundle(bundle, threads)
    if input_file is not None:
        with np.load(input_file, allow_pickle=False) as data:
            missing = [s.name for s in runner.inputs if s.name not in data.files]
            if missing:
                raise HastenError(f"{input_file} lacks the inputs {missing}", hint="names: " + ", ".join(s.name for s in runner.inputs))
            feed = {s.name: np.ascontiguousarray(data[s.name], dtype=s.dtype) for s in runner.inputs}
    else:
        from hasten.models import synthetic_dataset

        feed = synthetic_dataset(runner.inputs, size=1).batch(0, 1)
    outputs = runner.run(feed)
    con = stdout_console()
    for name, value in outputs.items():
        con.print(f"{name}: {value.dtype} {list(value.shape)}", highlight=False)
    if bench:
        from hasten.edge.compare import time_calls

        side = time_calls(lambda: runner.run(feed), max_runs=bench)
        con.print(f"p50 {side.p50_ms:.3f} ms  p99 {side.p99_ms:.3f} ms ({side.runs} runs, {threads} thread(s))",
                  highlight=False)
    if output is not None:
        np.savez(output, **outputs)
        stderr_console().print(f"wrote {output}", highlight=False)
