"""`benchmark()`: cold start apart, warm-up, then timed runs until the median is known well
enough or the time budget is spent; percentiles and throughput per batch size."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hasten.core import HastenError, LatencyStats
from hasten.measure.stats import median_ci, relative_ci_halfwidth

Clock = Callable[[], float]
# progress(label, fraction_done) — fraction in [0, 1]
ProgressHook = Callable[[str, float], None]


@dataclass(frozen=True)
class BenchConfig:
    """Knobs of one benchmark. Times are per batch size."""

    batch_sizes: tuple[int, ...] = (1, 8, 32)
    seq_len: int | None = None
    warmup_runs: int = 5
    min_runs: int = 20
    max_runs: int = 100_000
    time_budget_s: float = 5.0
    target_rel_ci: float = 0.01
    distinct_inputs: int = 8

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise HastenError(f"batch sizes must be positive integers, got {self.batch_sizes}")
        if self.seq_len is not None and self.seq_len < 1:
            raise HastenError(f"seq_len must be positive, got {self.seq_len}")
        if self.min_runs < 1 or self.max_runs < self.min_runs:
            raise HastenError(f"need 1 <= min_runs <= max_runs, got {self.min_runs}, {self.max_runs}")
        if self.time_budget_s <= 0 or not 0 < self.target_rel_ci < 1:
            raise HastenError("time_budget_s must be > 0 and target_rel_ci in (0, 1)")
        if self.warmup_runs < 0 or self.distinct_inputs < 1:
            raise HastenError("warmup_runs must be >= 0 and distinct_inputs >= 1")


@dataclass(frozen=True)
class BatchResult:
    """Steady-state latency at one batch size, plus its first (cold) run."""

    batch_size: int
    input_shapes: dict[str, list[int]]
    first_run_ms: float
    stats: LatencyStats
    samples_per_s: float
    median_ci_ms: tuple[float, float]
    rel_ci: float
    stop_reason: str  # "ci" (median known well enough), "time" (budget spent) or "max_runs"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.to_dict()
        d["median_ci_ms"] = list(self.median_ci_ms)
        return d


@dataclass(frozen=True)
class BenchResult:
    model: dict[str, Any]
    runner: dict[str, Any]
    config: dict[str, Any]
    results: tuple[BatchResult, ...]
    machine: dict[str, Any] = field(default_factory=dict)

    @property
    def cold_start_ms(self) -> float:
        """Runner creation plus the first run of the first batch size."""
        return self.runner.get("cold_start_s", 0.0) * 1e3 + (self.results[0].first_run_ms if self.results else 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "runner": self.runner, "config": self.config, "machine": self.machine,
                "cold_start_ms": self.cold_start_ms, "results": [r.to_dict() for r in self.results]}

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))


def benchmark(runner: Any, dataset: Any, config: BenchConfig = BenchConfig(), *, clock: Clock = time.perf_counter,
              progress: ProgressHook | None = None, model_info: dict[str, Any] | None = None,
              machine: dict[str, Any] | None = None) -> BenchResult:
    """Measure ``runner`` on batches drawn from ``dataset`` at each of ``config.batch_sizes``.

    The clock and the runner are injectable, so the statistics can be checked exactly.
    """
    return compare({"_": runner}, dataset, config, clock=clock, progress=progress, model_info=model_info,
                   machine=machine)["_"]


def compare(runners: dict[str, Any], dataset: Any, config: BenchConfig = BenchConfig(), *,
            clock: Clock = time.perf_counter, progress: ProgressHook | None = None,
            model_info: dict[str, Any] | None = None, machine: dict[str, Any] | None = None) -> dict[str, BenchResult]:
    """Benchmark several runners interleaved: they take turns of a few runs each, so that noise
    from other processes on a shared machine falls on all of them alike. The time budget is per
    batch size and per runner."""
    if not runners:
        raise HastenError("nothing to benchmark: no runners given")
    per_bs = [_batch_size_round(runners, dataset, bs, config, clock, progress) for bs in config.batch_sizes]
    if machine is None:
        from hasten.measure.machine import machine_facts

        machine = machine_facts()
    out = {}
    for i, (name, runner) in enumerate(runners.items()):
        info = runner.info.to_dict() if hasattr(runner, "info") else {}
        out[name] = BenchResult(model_info or {}, info, asdict(config), tuple(r[i] for r in per_bs), machine)
    return out


# A turn of one runner lasts this long (at least one run), then the next runner takes over.
TURN_S = 0.02


def _batch_size_round(runners: dict[str, Any], dataset: Any, bs: int, cfg: BenchConfig, clock: Clock,
                      progress: ProgressHook | None) -> list[BatchResult]:
    feeds = [dataset.batch(i * bs, bs, cfg.seq_len) for i in range(cfg.distinct_inputs)]
    label = f"batch {bs}"
    firsts = []
    for runner in runners.values():
        t0 = clock()
        runner.run(feeds[0])  # the first run per shape (allocation, kernel choice) is kept apart
        firsts.append(clock() - t0)
        for i in range(cfg.warmup_runs):
            runner.run(feeds[i % len(feeds)])
    samples: list[list[float]] = [[] for _ in runners]
    budget = cfg.time_budget_s * len(runners)
    start, next_check = clock(), cfg.min_runs
    while True:
        for runner, mine in zip(runners.values(), samples):
            _turn(runner, feeds, mine, clock, cfg.max_runs)
        n, spent = min(len(s) for s in samples), clock() - start
        if progress is not None:
            progress(label, min(spent / budget, 1.0))
        if n >= cfg.max_runs:
            reason = "max_runs"
            break
        if n < cfg.min_runs:
            continue
        if n >= next_check:  # re-check the CIs as the sample grows by ~10 %, not every turn
            next_check = max(n + 1, math.ceil(n * 1.1))
            if all(relative_ci_halfwidth(s) <= cfg.target_rel_ci for s in samples):
                reason = "ci"
                break
        if spent >= budget:
            reason = "time"
            break
    if progress is not None:
        progress(label, 1.0)
    return [_result(bs, feeds[0], first, s, reason) for first, s in zip(firsts, samples)]


def _turn(runner: Any, feeds: list[dict[str, np.ndarray]], samples: list[float], clock: Clock, max_runs: int) -> None:
    turn_start = clock()
    while len(samples) < max_runs:
        feed = feeds[len(samples) % len(feeds)]
        t0 = clock()
        runner.run(feed)
        t1 = clock()
        samples.append(t1 - t0)
        if t1 - turn_start >= TURN_S:
            return


def _result(bs: int, feed: dict[str, np.ndarray], first: float, samples: list[float], reason: str) -> BatchResult:
    stats = LatencyStats.from_seconds(samples)
    lo, hi = median_ci(samples)
    mean = float(np.mean(samples))
    return BatchResult(
        batch_size=bs,
        input_shapes={k: list(v.shape) for k, v in feed.items()},
        first_run_ms=first * 1e3,
        stats=stats,
        samples_per_s=bs / mean if mean > 0 else float("inf"),
        median_ci_ms=(lo * 1e3, hi * 1e3),
        rel_ci=relative_ci_halfwidth(samples),
        stop_reason=reason,
    )
