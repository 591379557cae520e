"""A profile as tables, plain-words verdict, and a roofline chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BOUND_COLOURS = {"compute": "tab:red", "memory": "tab:blue", "overhead": "tab:gray", "unknown": "tab:olive"}


def print_profile(result: Any) -> None:
    from rich.table import Table

    from hasten.core.console import stdout_console

    con = stdout_console()
    shapes = ", ".join(f"{k} {'×'.join(map(str, v))}" for k, v in result.input_shapes.items())
    where = result.extra.get("device", "cpu")
    where = f"{result.threads} thread(s)" if where == "cpu" else where
    con.print(f"[bold]{result.model}[/] on {result.backend}, {where}, {shapes}", highlight=False)
    r = result.roofs
    int8 = f", INT8 {r['int8_gops']:.0f} GOP/s" if r.get("int8_gops") else ""
    con.print(f"roofs (measured): FP32 {r['fp32_gflops']:.0f} GFLOP/s{int8}, memory {r['mem_gbps']:.1f} GB/s", highlight=False)
    con.print(f"time per call: {result.wall_us:.0f} µs unprofiled wall = Σ nodes {result.node_sum_us:.0f} µs + "
              f"overhead {result.overhead_us:.0f} µs (coverage {result.coverage:.0%})", highlight=False)
    if not 0.8 <= result.coverage <= 1.25:
        con.print(f"[yellow]note:[/] Σ nodes + overhead is {result.coverage:.0%} of the unprofiled time: on a model "
                  "this small (or a machine this busy) the profiler's own cost distorts the split; trust the ranking "
                  "more than the shares", highlight=False)
    con.print("")
    for line in result.advice:
        con.print(f"• {line}", highlight=False)
    con.print("")
    con.print(_op_table(result, Table))
    con.print(_node_table(result, Table))
    if result.fallback_nodes:
        con.print(f"[yellow]{len(result.fallback_nodes)} nodes fell back:[/] " + "; ".join(result.fallback_nodes))


def _op_table(result: Any, Table: Any) -> Any:
    t = Table(title="Time by op type")
    for col in ("op type", "nodes", "µs/call", "share", "GFLOP", "bound", "% of roof"):
        t.add_column(col, justify="left" if col in ("op type", "bound") else "right")
    for o in result.op_types:
        t.add_row(o.op_type, str(o.nodes), f"{o.time_us:.1f}", f"{o.share:.1%}", f"{o.flops / 1e9:.3f}", o.bound,
                  f"{o.peak_fraction:.0%}")
    return t


def _node_table(result: Any, Table: Any) -> Any:
    t = Table(title=f"Top {min(len(result.nodes), _top(result))} nodes")
    for col in ("node", "op", "µs/call", "share", "GFLOP", "FLOP/byte", "bound", "% of roof", "provider"):
        t.add_column(col, justify="left" if col in ("node", "op", "bound", "provider") else "right")
    for n in result.nodes[: _top(result)]:
        name = n.name if len(n.name) <= 40 else "…" + n.name[-39:]
        t.add_row(name, n.op_type, f"{n.time_us:.1f}", f"{n.time_us / (sum(v.time_us for v in result.nodes) + result.overhead_us):.1%}", f"{n.flops / 1e9:.3f}",
                  f"{n.intensity:.1f}", n.bound, f"{n.peak_fraction:.0%}", n.provider.replace("ExecutionProvider", ""))
    return t


def _top(result: Any) -> int:
    return int(result.extra.get("top_n", 10))


def write_plot(result: Any, path: str | Path) -> None:
    """Roofline chart: each node at (FLOP/byte, achieved GFLOP/s), the machine's roofs as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    r = result.roofs
    nodes = [n for n in result.nodes if n.flops > 0 and n.bytes_moved > 0]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    lo = min([n.intensity for n in nodes] + [0.05]) / 2
    hi = max([n.intensity for n in nodes] + [r["fp32_gflops"] / r["mem_gbps"] * 4]) * 2
    x = np.logspace(np.log10(lo), np.log10(hi), 200)
    ax.plot(x, np.minimum(r["fp32_gflops"], x * r["mem_gbps"]), "k-", label=f"FP32 roof {r['fp32_gflops']:.0f} GFLOP/s")
    if r.get("int8_gops"):
        ax.plot(x, np.minimum(r["int8_gops"], x * r["mem_gbps"]), "k--", label=f"INT8 roof {r['int8_gops']:.0f} GOP/s")
    total = sum(n.time_us for n in nodes) or 1.0
    for bound, colour in BOUND_COLOURS.items():
        pts = [n for n in nodes if n.bound == bound]
        if pts:
            ax.scatter([n.intensity for n in pts], [max(n.achieved_gflops, 1e-3) for n in pts],
                       s=[20 + 600 * n.time_us / total for n in pts], c=colour, alpha=0.6, label=f"{bound}-bound nodes")
    for n in sorted(nodes, key=lambda n: -n.time_us)[:6]:
        ax.annotate(n.op_type, (n.intensity, max(n.achieved_gflops, 1e-3)), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved GFLOP/s (GOP/s for integer ops)")
    shapes = ", ".join("×".join(map(str, v)) for v in result.input_shapes.values())
    ax.set_title(f"{result.model} on {result.backend} ({result.threads} threads, input {shapes}); point size = time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
