"""A quantization gate's result as tables and sentences."""

from __future__ import annotations

from typing import Any


def print_gate(result: Any, baseline_size: int) -> None:
    from rich.table import Table

    from hasten.core.console import stdout_console

    con = stdout_console()
    m = result.manifest
    q = result.quality
    base = result.baseline_quality
    t = Table(title=f"{m.get('source', {}).get('name', '?')} — {m.get('method', '?')} on {result.backend}")
    for col in ("", "quality", "95% CI", "size MB", *_speed_cols(result)):
        t.add_column(col, justify="left" if col == "" else "right")
    t.add_row("baseline (FP32)", _q(base), _ci(base), f"{baseline_size / 1e6:.1f}", *_speed(result, "baseline"))
    t.add_row(f"{m.get('method')}", _q(q), _ci(q), f"{m.get('output', {}).get('bytes', 0) / 1e6:.1f}",
              *_speed(result, "variant"))
    con.print(t)
    con.print(f"quality ({q.metric}): {result.verdict.message}", highlight=False)
    n_q, n_f = len(m.get("quantized_nodes", [])), len(m.get("float_nodes", []))
    con.print(f"nodes quantized: {n_q}, kept in float: {n_f}; calibration/evaluation examples: "
              f"{result.split.get('calibration', 0)}/{result.split.get('evaluation', 0)}", highlight=False)
    if result.trail:
        con.print(_trail(result, Table))
    if result.guard is not None:
        for row in result.guard.rows:
            verdict = "faster beyond noise" if row.faster_beyond_noise else (
                "slower beyond noise" if row.slower_beyond_noise else "within noise")
            con.print(f"batch {row.batch_size}: {row.speedup:.2f}× ({verdict})", highlight=False)
        for reason in result.guard.reasons:
            con.print(f"  why: {reason}", highlight=False)


def _speed_cols(result: Any) -> list[str]:
    if result.guard is None:
        return []
    cols = []
    for row in result.guard.rows:
        cols += [f"p50 ms b{row.batch_size}", f"p99 ms b{row.batch_size}", f"speed-up b{row.batch_size}"]
    return cols


def _speed(result: Any, who: str) -> list[str]:
    if result.guard is None:
        return []
    out = []
    for row in result.guard.rows:
        p50, p99 = (row.baseline_p50_ms, row.baseline_p99_ms) if who == "baseline" else (row.variant_p50_ms, row.variant_p99_ms)
        out += [f"{p50:.3g}", f"{p99:.3g}", "1.00×" if who == "baseline" else f"{row.speedup:.2f}×"]
    return out


def _q(q: Any) -> str:
    parts = [f"min {q.extra['min']:.4f}"] if "min" in q.extra and q.metric != "accuracy" else []
    parts += [f"{k} {v:.4f}" for k, v in q.extra.items() if k not in ("min", "p05", "max", "p95")]
    return f"{q.value:.4f}" + (f" ({', '.join(parts)})" if parts else "")


def _ci(q: Any) -> str:
    return f"{q.ci_low:.4f}..{q.ci_high:.4f}"


def _trail(result: Any, Table: Any) -> Any:
    ranked = {s.node: s for s in result.sensitivities}
    t = Table(title="Fallback trail (nodes put back in float, most useful first)")
    for col in ("step", "node kept in float", "sensitivity (margin gain)", "float weights KB", "margin after", "bar"):
        t.add_column(col)
    prev: tuple[str, ...] = ()
    for i, step in enumerate(result.trail, 1):
        node = next((n for n in step.excluded if n not in prev), "?")
        s = ranked.get(node)
        t.add_row(str(i), node, f"{s.gain:+.5f}" if s else "", f"{s.cost / 1e3:.0f}" if s else "",
                  f"{step.value:.5f}", "pass" if step.passed else "miss")
        prev = step.excluded
    return t
