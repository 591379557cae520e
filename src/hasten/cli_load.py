"""`hasten loadtest`: drive a KServe v2 server (hasten's or Triton's) and show where the time
goes. Registered on the app in cli.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from hasten.core.console import stderr_console, stdout_console


def loadtest(
    model: str = typer.Argument(..., help="The served model's name."),
    url: str = typer.Option("127.0.0.1:8000", "--url", help="HOST:PORT of the server (gRPC: its gRPC port, e.g. :8001)."),
    protocol: str = typer.Option("http", "--protocol", "-i", help="http (binary tensors) or grpc."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", "-c", help="Closed loop: requests in flight."),
    rate: Optional[float] = typer.Option(None, "--rate", "-r", help="Open loop: Poisson arrivals per second."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="Open loop: replay a file of arrival timestamps (s, one per line)."),
    duration: Optional[float] = typer.Option(None, "--duration", "-d", help="Seconds of load (default 10; a trace: all of it)."),
    requests: Optional[int] = typer.Option(None, "--requests", "-n", help="Stop after this many requests."),
    processes: int = typer.Option(1, "--processes", help="Load generator processes."),
    batch_size: int = typer.Option(1, "--batch-size", help="Examples per request."),
    data: Optional[Path] = typer.Option(None, "--data", help="Inputs (.npz with the model's input names); default: synthetic."),
    max_in_flight: int = typer.Option(256, "--max-in-flight", help="Open loop: most requests outstanding per process."),
    seed: int = typer.Option(0, "--seed", help="Seed of the Poisson schedule and the synthetic inputs."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write PNG charts (latency CDF, ledger) into this folder."),
) -> None:
    """Load a served model: closed loop, Poisson or a trace; latency percentiles and the ledger."""
    from hasten.loadgen import LoadSpec, run_load

    if duration is None and requests is None and trace is None:
        duration = 10.0
    spec = LoadSpec(model, url, protocol, concurrency, rate, trace, duration or None, requests, processes, batch_size,
                    data, seed, max_in_flight)
    load = (f"concurrency {concurrency}" if concurrency else f"{rate:g}/s Poisson" if rate else f"trace {trace}")
    stderr_console().print(f"load test of '{model}' at {url} ({protocol}, {load}, {processes} process(es))…",
                           highlight=False)
    report = run_load(spec)
    print_report(report)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_dict(), indent=2))
        stderr_console().print(f"wrote {json_out}", highlight=False)
    if plot is not None:
        for path in plot_report(report, plot):
            stderr_console().print(f"wrote {path}", highlight=False)


def print_report(r: Any) -> None:
    from rich.table import Table

    con = stdout_console()
    mode = {"closed": f"closed loop, concurrency {r.concurrency}", "open": "open loop, Poisson arrivals",
            "trace": "trace replay"}.get(r.mode, r.mode)
    t = Table(title=f"load test: {mode}, {r.protocol}")
    for col in ("requests", "ok", "req/s", "offered/s", "sent/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
                "client CPU"):
        t.add_column(col, justify="right")
    lat = r.latency_ms
    t.add_row(str(r.requests), str(r.ok), f"{r.throughput_per_s:.1f}", f"{r.offered_per_s:.1f}" if r.offered_per_s else "",
              f"{r.sent_per_s:.1f}", *(f"{lat.get(k, float('nan')):.2f}" for k in ("p50", "p90", "p99", "p99.9")),
              f"{r.client_cpu_cores:.2f} cores")
    con.print(t)
    if r.errors:
        con.print("errors: " + ", ".join(f"{k} × {v}" for k, v in sorted(r.errors.items())), highlight=False)
    if r.send_lag_ms:
        con.print(f"send lag (sent − scheduled): p50 {r.send_lag_ms['p50']:.2f} ms, p99 {r.send_lag_ms['p99']:.2f} ms",
                  highlight=False)
    if r.falling_behind:
        con.print(f"[bold yellow]falling behind:[/] {r.behind_reason}", highlight=False)
    if r.ledger_ms:
        t = Table(title="latency ledger (mean of the requests at that percentile), ms")
        t.add_column("component")
        for band in r.ledger_ms:
            t.add_column(f"at {band}", justify="right")
        for name in next(iter(r.ledger_ms.values())):
            t.add_row(name, *(f"{r.ledger_ms[b][name]:.3f}" for b in r.ledger_ms))
        t.add_row("[bold]dominant[/]", *(r.dominant[b] for b in r.ledger_ms))
        con.print(t)


def plot_report(r: Any, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    if r.cdf_ms:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(r.cdf_ms, [i / 2 for i in range(len(r.cdf_ms))])
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("percentile")
        ax.set_title(f"latency CDF ({r.mode} loop, {r.protocol}, {r.throughput_per_s:.0f} req/s)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(folder / "latency_cdf.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    if r.ledger_ms:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        bands = list(r.ledger_ms)
        left = [0.0] * len(bands)
        for name in r.ledger_ms[bands[0]]:
            values = [r.ledger_ms[b][name] for b in bands]
            ax.barh(bands, values, left=left, label=name)
            left = [a + b for a, b in zip(left, values)]
        ax.set_xlabel("ms")
        ax.set_title("where a request's time goes")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        paths.append(folder / "ledger.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def tune(
    model_folder: Path = typer.Argument(..., help="REPO/MODEL: a model folder (config.yaml or config.pbtxt + <version>/model.onnx)."),
    slo_p99_ms: float = typer.Option(..., "--slo-p99-ms", help="The latency objective: p99 at the client, in ms."),
    rate: Optional[float] = typer.Option(None, "--rate", "-r", help="Tune under Poisson arrivals at this rate (req/s)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", "-c", help="Tune under a closed loop of this many clients."),
    seconds: float = typer.Option(3.0, "--seconds", help="Load per measured point."),
    max_instances: int = typer.Option(1, "--max-instances", help="Try 1..N runner instances."),
    batch_size: int = typer.Option(1, "--batch-size", help="Examples per request."),
    write: bool = typer.Option(True, "--write/--no-write", help="Write the chosen knobs into the model's config."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every measured point as JSON here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write throughput-vs-p99 of the sweep (PNG) into this folder."),
) -> None:
    """Find the batching config (max batch, window, instances) with the most throughput under a p99 SLO."""
    from hasten.core import HastenError
    from hasten.plan.tune import tune_live, write_config
    from hasten.serve.repository import check_name, load_entry

    if (rate is None) == (concurrency is None):
        raise HastenError("tune under one load: --rate R (Poisson) or --concurrency C (closed loop)")
    if not model_folder.is_dir():
        raise HastenError(f"model folder not found: {model_folder}", hint="REPO/MODEL holding config.yaml and 1/model.onnx")
    entry = load_entry(model_folder)
    check_name(entry.name)
    max_batch = max(1, entry.config.max_batch_size)
    load = f"{rate:g} req/s Poisson" if rate else f"concurrency {concurrency}"
    con = stderr_console()
    con.print(f"tuning '{entry.name}' for p99 ≤ {slo_p99_ms:g} ms under {load}, {seconds:g} s per point…", highlight=False)

    def shown(p: Any) -> None:
        c = p.config
        con.print(f"  {p.stage:6} batch {c.max_batch:>3}  window {c.window_ms:>5g} ms  instances {c.instances}: "
                  f"{p.throughput_per_s:8.1f} req/s  p99 {p.p99_ms:8.2f} ms  {'ok' if p.feasible else 'over SLO' if not p.errors else 'errors'}",
                  highlight=False)

    result = tune_live(str(model_folder), entry.name, slo_p99_ms, max_batch, rate, concurrency, seconds, max_instances,
                       batch_size, on_point=shown)
    print_tune(result)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"slo_p99_ms": slo_p99_ms, "reason": result.reason,
                                        "chosen": result.chosen.to_dict() if result.chosen else None,
                                        "points": [p.to_dict() for p in result.points]}, indent=2))
        con.print(f"wrote {json_out}", highlight=False)
    if plot is not None:
        con.print(f"wrote {plot_tune(result, plot)}", highlight=False)
    if result.chosen is None:
        raise HastenError(result.reason)
    if write:
        con.print("wrote " + write_config(entry, result.chosen.config), highlight=False)


def print_tune(result: Any) -> None:
    from rich.table import Table

    t = Table(title=f"batching sweep, p99 SLO {result.slo_p99_ms:g} ms")
    for col in ("stage", "max batch", "window ms", "instances", "req/s", "p50 ms", "p99 ms", "within SLO"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for p in sorted(result.points, key=lambda p: (-p.feasible, -p.throughput_per_s)):
        c = p.config
        mark = "[bold green]chosen[/]" if p is result.chosen else ("yes" if p.feasible else "no")
        t.add_row(p.stage, str(c.max_batch), f"{c.window_ms:g}", str(c.instances), f"{p.throughput_per_s:.1f}",
                  f"{p.p50_ms:.2f}", f"{p.p99_ms:.2f}", mark)
    stdout_console().print(t)
    stdout_console().print(result.reason, highlight=False)


def plot_tune(result: Any, folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for p in result.points:
        ax.scatter(p.p99_ms, p.throughput_per_s, c="tab:green" if p.feasible else "tab:red", s=25)
        ax.annotate(f"b{p.config.max_batch} w{p.config.window_ms:g} i{p.config.instances}", (p.p99_ms, p.throughput_per_s),
                    fontsize=6)
    if result.chosen is not None:
        ax.scatter(result.chosen.p99_ms, result.chosen.throughput_per_s, marker="*", s=200, c="gold", edgecolors="k")
    ax.axvline(result.slo_p99_ms, color="grey", linestyle="--", label="SLO")
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("throughput (req/s)")
    ax.set_title("batching sweep")
    ax.legend()
    fig.tight_layout()
    path = folder / "tune_sweep.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
