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
    run_with = m.get("run_with")
    if run_with:
        con.print(f"judged and timed on {run_with['backend']} with --dynamic-quant-group {run_with['dynamic_quant_group']}: "
                  f"{run_with['dynamic_int8_matmuls']} float MatMul{'' if run_with['dynamic_int8_matmuls'] == 1 else 's'} "
                  "ran as dynamic INT8; run it the same way "
                  "(the manifest's run_with says so)", highlight=False, soft_wrap=True)
    if result.trail:
        con.print(_trail(result, Table))
    _print_guard(con, result.guard)


def _print_guard(con: Any, guard: Any) -> None:
    """The speed check per batch size, and why a result is not faster."""
    if guard is None:
        return
    for row in guard.rows:
        verdict = "faster beyond noise" if row.faster_beyond_noise else (
            "slower beyond noise" if row.slower_beyond_noise else "within noise")
        con.print(f"batch {row.batch_size}: {row.speedup:.2f}× ({verdict})", highlight=False)
    for reason in guard.reasons:
        con.print(f"  why: {reason}", highlight=False, soft_wrap=True)


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


def print_derived(result: Any) -> None:
    """Before/after table of a pruned or distilled model: parameters, MACs, size, quality with its
    interval, latency; then what changed per layer and the guard's verdict."""
    from rich.table import Table

    from hasten.core.console import stdout_console

    con = stdout_console()
    m = result.manifest
    params, macs = m.get("parameters", {}), m.get("macs", {})
    label = {"prune": f"pruned ({m.get('config', {}).get('method')})", "distill": "student"}.get(m.get("method"), "variant")
    t = Table(title=f"{m.get('source', {}).get('name', '?')} — {label} on {result.backend}")
    for col in ("", "params", "non-zero", "MACs", "size MB", "quality", "95% CI", *_speed_cols(result)):
        t.add_column(col, justify="left" if col == "" else "right")
    for who, name, q in (("before", "source", result.baseline_quality), ("after", label, result.quality)):
        p = params.get(who, {})
        size = m.get("size_before_bytes", 0) if who == "before" else m.get("output", {}).get("bytes", 0)
        t.add_row(name, _count(p.get("total")), _count(p.get("nonzero")), _count(macs.get(who)), f"{size / 1e6:.2f}",
                  _q(q), _ci(q), *_speed(result, "baseline" if who == "before" else "variant"))
    con.print(t)
    shape = ", ".join(f"{k} {v}" for k, v in macs.get("shape", {}).items())
    con.print(f"MACs counted at {shape}; quality ({result.quality.metric}) on {result.split.get('evaluation', 0)} "
              f"held-out examples: {result.verdict.message}", highlight=False, soft_wrap=True)
    _print_training(con, m)
    _print_layers(con, m, Table)
    if m.get("speed_note"):
        con.print(f"note: {m['speed_note']}", highlight=False, soft_wrap=True)
    for row in (m.get("gpu_speed_check") or {}).get("layers", []):
        con.print(f"2:4 on {m['gpu_speed_check']['device']}, weight {row['shape']}: "
                  + (f"{row['speedup']:.2f}× over dense FP16 ({row.get('kernel', 'sparse')} {row['sparse_ms']:.3f} ms vs "
                     f"{row['dense_ms']:.3f} ms" + (f"; {row['graph_speedup']:.2f}× replayed from a CUDA graph"
                                                     if row.get("graph_speedup") else "") + ")"
                     if row["supported"] else f"not supported ({row['why']})"),
                  highlight=False)
    _print_guard(con, result.guard)


def _count(n: Any) -> str:
    if n is None:
        return ""
    n = float(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _print_training(con: Any, m: dict[str, Any]) -> None:
    run = m.get("finetune") or m.get("training")
    if not run or not run.get("steps"):
        if m.get("method") == "prune":
            con.print("fine-tuning: none (pass --finetune-steps N with --data to recover quality)", highlight=False)
        return
    what = "fine-tuning" if "finetune" in m else "distillation"
    data = run.get("data") or {}
    line = (f"{what}: {run['steps']} steps on {data.get('name', '?')} ({data.get('examples', '?')} examples)"
            + (f", trained on {run['device']} in {run['seconds']:.0f} s" if run.get("device") and run.get("seconds") else "")
            + f", final loss {run.get('final_loss')}")
    if run.get("resumed_from"):
        line += f", resumed from step {run['resumed_from']}"
    if run.get("stopped_early"):
        line += ", stopped early: the budget held"
    if run.get("stopped_at_time_limit"):
        line += ", stopped at its time limit"
    evals = run.get("evaluations") or []
    if evals:
        last = evals[-1]
        line += "; last check at step {}: {}".format(
            last.get("step"), ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "at_s" and isinstance(v, float)))
    con.print(line, highlight=False, soft_wrap=True)


def _print_layers(con: Any, m: dict[str, Any], Table: Any) -> None:
    if m.get("channels_per_layer"):
        t = Table(title="Channels per layer")
        for col in ("layer", "outputs before → after", "inputs before → after"):
            t.add_column(col)
        for name, c in m["channels_per_layer"].items():
            t.add_row(name, f"{c['out'][0]} → {c['out'][1]}", f"{c['in'][0]} → {c['in'][1]}")
        con.print(t)
    if m.get("heads_per_layer"):
        con.print("attention heads per layer: " + ", ".join(f"{a}→{b}" for a, b in m["heads_per_layer"]),
                  highlight=False)
    if m.get("sparsity_per_layer"):
        t = Table(title="Sparsity per layer")
        t.add_column("layer")
        t.add_column("zero weights", justify="right")
        if "two_four_layers" in m:
            t.add_column("2:4 pattern")
        for name, s in m["sparsity_per_layer"].items():
            extra = []
            if "two_four_layers" in m:
                extra = ["yes" if m["two_four_layers"].get(name) else m.get("skipped_layers", {}).get(name, "no")]
            t.add_row(name, f"{s:.1%}", *extra)
        con.print(t)
        con.print(f"overall sparsity of the pruned layers: {m.get('sparsity_overall', 0):.1%} zeros", highlight=False)
    student, init = m.get("student"), m.get("init")
    start = (f"started from {init['path']}" + (f" (step {init['step']})" if init.get("step") is not None else "")
             if init else "initialised from the teacher")
    if student and student.get("kind") == "layers":
        con.print(f"student: blocks {student['kept_blocks']} of the teacher's {student['teacher_blocks']} "
                  f"({student['blocks']}), {start}", highlight=False)
    elif init:
        con.print(f"student: {start}", highlight=False)
