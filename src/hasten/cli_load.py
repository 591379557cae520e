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
    duration: Optional[float] = typer.Option(10.0, "--duration", "-d", help="Seconds of load (0: unbounded, needs --requests)."),
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
    t = Table(title=f"load test: {r.mode} loop, {r.protocol}")
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
