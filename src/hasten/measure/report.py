"""Benchmark results as tables and a few plain sentences."""

from __future__ import annotations

from hasten.measure.bench import BenchResult


def print_bench(results: dict[str, BenchResult], model: str, data: str) -> None:
    from rich.table import Table

    from hasten.core.console import stdout_console

    first = next(iter(results.values()))
    gpus = sorted({r.runner.get("extra", {}).get("gpu") for r in results.values()} - {None})
    where = " + ".join([first.machine.get("cpu", "?"), *gpus])
    table = Table(title=f"{model} — latency (ms) per batch, {data} data, {where}",
                  caption="±CI: half-width of the median's 95% confidence interval. min/max/std: --json.")
    for col in ("backend", "threads", "batch", "input", "p50", "p90", "p99", "mean", "±CI", "samples/s", "runs"):
        table.add_column(col, justify="left" if col in ("backend", "input") else "right")
    for name, res in results.items():
        for r in res.results:
            s = r.stats
            shape = "×".join(str(d) for d in next(iter(r.input_shapes.values())))
            table.add_row(name, _threads(res.runner), str(r.batch_size), shape,
                          _ms(s.p50_ms), _ms(s.p90_ms), _ms(s.p99_ms), _ms(s.mean_ms), f"{100 * r.rel_ci:.1f}%",
                          f"{r.samples_per_s:,.0f}", str(s.count))
    stdout_console().print(table)


def summary_lines(results: dict[str, BenchResult]) -> list[str]:
    """What a user should take away, derived from the numbers."""
    lines = []
    for name, res in results.items():
        rs = res.results
        best = max(rs, key=lambda r: r.samples_per_s)
        b1 = rs[0]
        cold = res.runner.get("cold_start_s", 0.0) * 1e3
        where = _threads(res.runner)
        on = f"on {where}" if where.startswith("cuda") else f"{where} thread{'' if where == '1' else 's'}"
        lines.append(
            f"{name}: batch {b1.batch_size} p50 {_ms(b1.stats.p50_ms)} ms; best throughput "
            f"{best.samples_per_s:,.0f} samples/s at batch {best.batch_size} (p50 {_ms(best.stats.p50_ms)} ms); "
            f"cold start {res.cold_start_ms:.0f} ms (setup {cold:.0f} ms + first run {b1.first_run_ms:.0f} ms); "
            f"{on}"
        )
        if best is not b1 and b1.samples_per_s > 0:
            gain = best.samples_per_s / b1.samples_per_s
            lines.append(f"  batching {b1.batch_size}→{best.batch_size} multiplies throughput by {gain:.1f}× "
                         f"for {best.stats.p50_ms / b1.stats.p50_ms:.1f}× the latency")
    if len(results) > 1:
        sizes = [r.batch_size for r in next(iter(results.values())).results]
        for i, bs in enumerate(sizes):
            ranked = sorted(results.items(), key=lambda kv: kv[1].results[i].stats.p50_ms)
            (fast, fr), (slow, sr) = ranked[0], ranked[-1]
            ratio = sr.results[i].stats.p50_ms / fr.results[i].stats.p50_ms
            lines.append(f"batch {bs}: fastest {fast} ({ratio:.2f}× faster than {slow} at p50, measured interleaved)")
    return lines


def _threads(runner: dict) -> str:
    """CPU threads, or the GPU a CUDA runner computes on (its host threads do not set its speed)."""
    device = str(runner.get("device", ""))
    return device if device.startswith("cuda") else str(runner.get("threads", "?"))


def _ms(value: float) -> str:
    """Three significant digits or more: 0.0612, 5.61, 412.3."""
    return f"{value:.3g}" if value < 100 else f"{value:.1f}"


def pick_lines(results: dict[str, BenchResult]) -> list[str]:
    """The fastest backend per batch size, with the ratio to the runner-up and its CI."""
    lines = []
    sizes = [r.batch_size for r in next(iter(results.values())).results]
    for i, bs in enumerate(sizes):
        ranked = sorted(results.items(), key=lambda kv: kv[1].results[i].stats.p50_ms)
        best_name, best = ranked[0][0], ranked[0][1].results[i]
        line = f"fastest at batch {bs}: {best_name} (p50 {_ms(best.stats.p50_ms)} ms ±{100 * best.rel_ci:.1f}%)"
        if len(ranked) > 1:
            second_name, second = ranked[1][0], ranked[1][1].results[i]
            ratio = second.stats.p50_ms / best.stats.p50_ms
            overlap = best.median_ci_ms[1] >= second.median_ci_ms[0]
            line += f", {ratio:.2f}× faster than {second_name}" + (" — within noise (CIs overlap)" if overlap else "")
        lines.append(line)
    return lines
