"""A load step against fixed batching windows and the SLO controller.

Usage:  python benchmarks/bench_adaptive.py [--rate 100] [--step 4] [--before 20] [--during 30] [--after 20]
                                            [--slo-ms 50] [--out benchmarks/results]

Model: the MLP 512→3072→3072→512 of bench_server.py, served by `hasten serve` (its own process,
max batch 32, 1 instance, 1 intra-op thread). Load: one Poisson trace, the same for every config —
`rate` req/s for `before` s, `rate × step` for `during` s, `rate` again for `after` s — replayed
open loop by `hasten.loadgen` in a separate process. Configs: fixed windows 0, 2, 5, 10 ms, and
`dynamic_batching: {slo_p99_ms: SLO}` (the controller starts at window 0). Per phase: throughput
(answered per second of the phase) and p50/p99 (client-measured), and whether p99 ≤ SLO. Writes
JSON and PNGs (latency CDF per config, the controller's window over time).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_server import build_mlp  # noqa: E402

from hasten.loadgen import LoadSpec, run_load  # noqa: E402
from hasten.loadgen.worker import COLUMNS  # noqa: E402
from hasten.measure import machine_facts  # noqa: E402
from hasten.plan.tune import LiveServer  # noqa: E402


def write_trace(path: Path, rate: float, step: float, before: float, during: float, after: float, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    times, t = [], 0.0
    phases = [("before", rate, before), ("step", rate * step, during), ("after", rate, after)]
    bounds, start = [], 0.0
    for name, r, seconds in phases:
        end = start + seconds
        while True:
            t += rng.exponential(1.0 / r)
            if t >= end:
                t = end
                break
            times.append(t)
        bounds.append((name, start, end, r))
        start = end
    path.write_text("\n".join(f"{x:.6f}" for x in times) + "\n")
    return bounds


def per_phase(report, bounds: list) -> dict:
    rows, ok = report.rows, report.ok_mask
    c = {name: rows[:, i] for i, name in enumerate(COLUMNS)}
    out = {}
    for name, start, end, rate in bounds:
        sel = (c["scheduled"] >= start) & (c["scheduled"] < end)
        lat = (c["end"] - c["sent"])[sel & ok] * 1e3
        out[name] = {"offered_per_s": rate, "throughput_per_s": float((sel & ok).sum() / (end - start)),
                     "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
                     "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
                     "errors": int((sel & ~ok).sum())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--step", type=float, default=4.0)
    ap.add_argument("--before", type=float, default=20.0)
    ap.add_argument("--during", type=float, default=30.0)
    ap.add_argument("--after", type=float, default=20.0)
    ap.add_argument("--slo-ms", type=float, default=50.0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    work = args.out / "adaptive"
    work.mkdir(parents=True, exist_ok=True)
    trace = work / "trace.txt"
    bounds = write_trace(trace, args.rate, args.step, args.before, args.during, args.after)
    configs = {f"fixed window {w:g} ms": f"dynamic_batching:\n  max_queue_delay_ms: {w}\n" for w in (0, 2, 5, 10)}
    configs[f"adaptive, SLO {args.slo_ms:g} ms"] = f"dynamic_batching:\n  max_queue_delay_ms: 0\n  slo_p99_ms: {args.slo_ms}\n"
    result: dict = {"machine": machine_facts(), "rate": args.rate, "step": args.step, "slo_ms": args.slo_ms,
                    "phases": [b[:3] for b in bounds], "configs": {}}
    for label, batching in configs.items():
        folder = work / "repo" / label.replace(" ", "_").replace(",", "") / "mlp"
        (folder / "1").mkdir(parents=True, exist_ok=True)
        if not (folder / "1" / "model.onnx").exists():
            build_mlp(folder / "1" / "model.onnx")
        (folder / "config.yaml").write_text("max_batch_size: 32\nthreads: 1\ninstances: 1\n" + batching)
        server = LiveServer(str(folder), 1)
        try:
            print(f"{label}: replaying {trace} …", file=sys.stderr)
            report = run_load(LoadSpec("mlp", f"127.0.0.1:{server.port}", trace=trace, duration_s=None), progress=True)
            entry = {"phases": per_phase(report, bounds), "overall": report.to_dict()}
            if "adaptive" in label:
                import http.client

                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                conn.request("GET", "/v2/models/mlp/batching")
                entry["controller"] = json.loads(conn.getresponse().read())["slo_controller"]
                conn.close()
            result["configs"][label] = entry
        finally:
            server.close()
    (args.out / "bench_adaptive.json").write_text(json.dumps(result, indent=2))
    _table(result)
    _plots(result, work)
    print(f"wrote {args.out / 'bench_adaptive.json'} and {work}/*.png", file=sys.stderr)


def _table(result: dict) -> None:
    from rich.table import Table

    from hasten.core.console import stdout_console

    slo = result["slo_ms"]
    t = Table(title=f"load step {result['rate']:g} → {result['rate'] * result['step']:g} → {result['rate']:g} req/s, "
                    f"SLO p99 {slo:g} ms")
    t.add_column("config")
    for name, *_ in result["phases"]:
        t.add_column(f"{name} req/s", justify="right")
        t.add_column(f"{name} p99 ms", justify="right")
    for label, entry in result["configs"].items():
        cells = []
        for name, *_ in result["phases"]:
            ph = entry["phases"][name]
            mark = "" if ph["p99_ms"] <= slo else " ✗"
            cells += [f"{ph['throughput_per_s']:.0f}", f"{ph['p99_ms']:.1f}{mark}"]
        t.add_row(label, *cells)
    stdout_console().print(t)


def _plots(result: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, entry in result["configs"].items():
        cdf = entry["overall"]["cdf_ms"]
        ax.plot(cdf, [i / 2 for i in range(len(cdf))], label=label)
    ax.axvline(result["slo_ms"], color="grey", linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("percentile")
    ax.legend(fontsize=7)
    ax.set_title("latency CDF over the whole load step")
    fig.tight_layout()
    fig.savefig(folder / "latency_cdf.png", dpi=120)
    plt.close(fig)
    ctl = next((e["controller"] for e in result["configs"].values() if e.get("controller")), None)
    if ctl and ctl["history"]:
        h = ctl["history"]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.step([d["t"] for d in h], [d["window_ms"] for d in h], where="post", label="window (ms)")
        ax2 = ax.twinx()
        ax2.plot([d["t"] for d in h], [d["rate_per_s"] for d in h], color="tab:orange", alpha=0.6, label="arrivals/s")
        ax.set_xlabel("seconds since the server started")
        ax.set_ylabel("window (ms)")
        ax2.set_ylabel("arrivals per second")
        ax.set_title("the SLO controller's window over the load step")
        fig.tight_layout()
        fig.savefig(folder / "controller_window.png", dpi=120)
        plt.close(fig)


if __name__ == "__main__":
    main()
