"""benchmark() statistics are exact on a fake runner driven by a scripted clock."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from hasten.core import HastenError
from hasten.measure import BenchConfig, benchmark, compare
from hasten.measure.stats import median_ci, relative_ci_halfwidth
from hasten.models import Dataset
from hasten.runtime import RunnerInfo


@dataclass
class FakeClock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeRunner:
    """Each run advances the clock by the next scripted latency (seconds)."""

    clock: FakeClock
    latencies: list[float]
    name: str = "fake"
    calls: list[tuple[str, int]] = field(default_factory=list)
    log: list[str] | None = None

    def __post_init__(self) -> None:
        self.info = RunnerInfo(self.name, 1, "cpu", (), 0.25)
        self._i = 0

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append((self.name, len(feed["x"])))
        if self.log is not None:
            self.log.append(self.name)
        self.clock.now += self.latencies[min(self._i, len(self.latencies) - 1)]
        self._i += 1
        return {"y": feed["x"]}


DATA = Dataset({"x": np.arange(40, dtype=np.float32).reshape(20, 2)})


def run_script(first: float, warmup: list[float], timed: list[float], **cfg) -> tuple:
    clock = FakeClock()
    runner = FakeRunner(clock, [first, *warmup, *timed])
    config = BenchConfig(batch_sizes=(4,), warmup_runs=len(warmup), min_runs=len(timed), max_runs=len(timed),
                         **cfg)
    return benchmark(runner, DATA, config, clock=clock, machine={}), runner


def test_percentiles_are_exact() -> None:
    timed = [i / 1000 for i in range(100, 0, -1)]  # 100..1 ms, in reverse order
    result, runner = run_script(first=2.0, warmup=[0.5, 0.5], timed=timed)
    r = result.results[0]
    assert r.stats.count == 100
    assert r.stats.p50_ms == pytest.approx(50.5)
    assert r.stats.p90_ms == pytest.approx(90.1)
    assert r.stats.p99_ms == pytest.approx(99.01)
    assert r.stats.min_ms == pytest.approx(1.0) and r.stats.max_ms == pytest.approx(100.0)
    assert r.stats.mean_ms == pytest.approx(50.5)
    assert r.samples_per_s == pytest.approx(4 / 0.0505)
    assert r.stop_reason == "max_runs"
    assert len(runner.calls) == 1 + 2 + 100 and all(bs == 4 for _, bs in runner.calls)


def test_cold_start_is_reported_apart_from_steady_state() -> None:
    result, _ = run_script(first=2.0, warmup=[0.5, 0.5], timed=[0.001] * 30)
    r = result.results[0]
    assert r.first_run_ms == pytest.approx(2000.0)
    assert r.stats.max_ms == pytest.approx(1.0)  # neither the first run nor the warm-up is in the stats
    assert result.cold_start_ms == pytest.approx(250.0 + 2000.0)  # runner creation + first run


def test_stops_once_the_median_is_known() -> None:
    clock = FakeClock()
    runner = FakeRunner(clock, [0.001])
    config = BenchConfig(batch_sizes=(1,), warmup_runs=0, min_runs=20, max_runs=10_000, time_budget_s=60)
    r = benchmark(runner, DATA, config, clock=clock, machine={}).results[0]
    assert r.stop_reason == "ci" and r.stats.count == 20 and r.rel_ci == 0


def test_stops_when_the_time_budget_is_spent() -> None:
    clock = FakeClock()
    noisy = list(np.random.default_rng(0).uniform(0.001, 0.1, 10_000))  # never converges to 0.1 %
    runner = FakeRunner(clock, noisy)
    config = BenchConfig(batch_sizes=(1,), warmup_runs=0, min_runs=5, time_budget_s=2.0, target_rel_ci=0.001)
    r = benchmark(runner, DATA, config, clock=clock, machine={}).results[0]
    assert r.stop_reason == "time"
    assert 2.0 <= sum(noisy[1 : 1 + r.stats.count]) < 2.0 + 0.1 + 0.02  # one turn past the budget at most


def test_compare_interleaves_runners() -> None:
    clock, log = FakeClock(), []
    a = FakeRunner(clock, [0.015], "a", log=log)  # a turn lasts >= 20 ms: two runs each
    b = FakeRunner(clock, [0.030], "b", log=log)
    config = BenchConfig(batch_sizes=(2,), warmup_runs=0, min_runs=6, max_runs=6)
    out = compare({"a": a, "b": b}, DATA, config, clock=clock, machine={})
    timed = log[2:]  # after each runner's first run
    assert timed == ["a", "a", "b", "a", "a", "b", "a", "a", "b", "b", "b", "b"][: len(timed)]
    assert out["a"].results[0].stats.p50_ms == pytest.approx(15.0)
    assert out["b"].results[0].stats.p50_ms == pytest.approx(30.0)


def test_each_batch_size_is_measured_with_its_own_shape() -> None:
    clock = FakeClock()
    runner = FakeRunner(clock, [0.001])
    config = BenchConfig(batch_sizes=(1, 8, 32), warmup_runs=1, min_runs=3, max_runs=3)
    result = benchmark(runner, DATA, config, clock=clock, machine={})
    assert [r.batch_size for r in result.results] == [1, 8, 32]
    assert [r.input_shapes["x"] for r in result.results] == [[1, 2], [8, 2], [32, 2]]
    assert {bs for _, bs in runner.calls} == {1, 8, 32}
    json.dumps(result.to_dict())  # serialisable


def test_median_ci_brackets_the_median() -> None:
    x = np.random.default_rng(0).lognormal(size=1001)
    lo, hi = median_ci(x)
    assert lo < np.median(x) < hi
    assert relative_ci_halfwidth([1.0, 1.0, 1.0, 1.0]) == 0.0
    assert relative_ci_halfwidth([1.0]) == float("inf")


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_sizes": ()}, {"batch_sizes": (0,)}, {"min_runs": 10, "max_runs": 5}, {"time_budget_s": 0},
     {"target_rel_ci": 1.5}, {"seq_len": 0}],
)
def test_bad_config_is_refused(kwargs) -> None:
    with pytest.raises(HastenError):
        BenchConfig(**kwargs)


def test_report_names_the_gpu_instead_of_host_threads(capsys: pytest.CaptureFixture[str]) -> None:
    """A CUDA runner's row says which GPU computed it (not '0 threads'), and the title names the GPU."""
    from dataclasses import replace

    from hasten.measure.report import print_bench, summary_lines

    cpu, _ = run_script(0.01, [0.002], [0.002] * 5)
    gpu, _ = run_script(0.01, [0.001], [0.001] * 5)
    gpu = replace(gpu, runner={**gpu.runner, "threads": 0, "device": "cuda:0", "extra": {"gpu": "Test GPU 80GB"}})
    cpu = replace(cpu, machine={"cpu": "Test CPU"})
    lines = summary_lines({"torch-eager": cpu, "torch-cuda": gpu})
    assert lines[0].endswith("1 thread") and lines[1].endswith("on cuda:0")
    print_bench({"torch-eager": cpu, "torch-cuda": gpu}, "m", "d")
    out = capsys.readouterr().out
    assert "Test CPU + Test GPU 80GB" in out and "cuda:0" in out
