"""The SLO controller: its compute model, its decisions on a simulated server (converges, keeps
p99 under the SLO, backs off when the load rises), and its wiring into a served model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from hasten.serve.adaptive import Knobs, SloController, SloPolicy, compute_model
from hasten.serve.simulate import SimServer


def compute(b: int) -> float:
    return 0.002 + 0.0003 * b  # 2 ms per batch + 0.3 ms per example


def test_the_compute_model_is_fitted_from_measured_batches() -> None:
    model = compute_model({1: compute(1), 8: compute(8), 32: compute(32)})
    assert model(16) == pytest.approx(compute(16), rel=1e-6)
    assert compute_model({4: 0.004})(8) == pytest.approx(0.008)  # one size: proportional (safe for bigger batches)
    assert compute_model({})(8) == 0.0


def test_the_batch_cap_keeps_one_batch_within_half_the_target() -> None:
    policy = SloPolicy(slo_s=0.020, max_batch=32)   # target 16 ms: a batch may take 8 ms -> 20 examples
    assert policy.cap_for(compute) == 20
    assert SloPolicy(slo_s=0.001, max_batch=32).cap_for(compute) == 1


def run_phases(policy: SloPolicy, phases: list[tuple[float, int]]) -> list[list[tuple[float, float, int, int]]]:
    """(rate, intervals of 0.5 s) per phase -> per interval: (p99 s, window s, cap, completed)."""
    sim = SimServer(compute, window_s=0.0, cap=policy.max_batch)
    knobs = Knobs(0.0, policy.max_batch)
    out = []
    for rate, intervals in phases:
        rows = []
        for _ in range(intervals):
            arrived, done = sim.run(rate, 0.5)
            p99 = float(np.percentile(done - arrived, 99))
            knobs, _ = policy.decide(knobs, p99, len(arrived) / 0.5, compute)
            sim.window_s, sim.cap = knobs.window_s, knobs.cap
            rows.append((p99, knobs.window_s, knobs.cap, len(arrived)))
        out.append(rows)
    return out


def test_the_controller_converges_keeps_the_slo_and_backs_off_when_the_load_rises() -> None:
    slo = 0.020
    policy = SloPolicy(slo_s=slo, max_batch=32)
    base, step, back = run_phases(policy, [(500, 40), (2000, 40), (500, 40)])
    # converges: after a few intervals the window stops moving, and it does batch (window > 0)
    settled = [w for _, w, _, _ in base[20:]]
    assert max(settled) == min(settled) > 0
    assert all(p99 <= slo for p99, *_ in base[5:])
    # load ×4: the window is cut at once and stays below where it was; p99 stays under the SLO;
    # everything offered is served (no queue builds up)
    assert step[0][1] < base[-1][1] and max(w for _, w, _, _ in step) < base[-1][1]
    assert all(p99 <= slo for p99, *_ in step[3:])
    served = sum(n for *_, n in step[5:]) / (0.5 * len(step[5:]))
    assert served == pytest.approx(2000, rel=0.05)
    # load back down: the window grows again
    assert back[-1][1] > step[-1][1]
    # the cap never lets one batch take more than half the target
    assert all(compute(c) <= policy.target_s / 2 for phase in (base, step, back) for _, _, c, _ in phase)


def test_a_served_model_with_slo_p99_ms_gets_a_controller_that_moves_the_batcher(tmp_path: Path) -> None:
    from hasten.serve.repository import load_repository
    from hasten.serve.server import ModelServer
    from tests.serve.helpers import linear_repo

    linear_repo(tmp_path)
    (tmp_path / "lin" / "config.yaml").write_text(
        "max_batch_size: 8\nthreads: 1\ndynamic_batching:\n  max_queue_delay_ms: 0\n  slo_p99_ms: 50\n")

    async def main() -> tuple[list, float, int]:
        from hasten.serve.http import HttpApp

        server = ModelServer(load_repository(tmp_path))
        app = HttpApp(server)
        await server.start()
        m = server.models["lin"]
        assert m.controller is not None and m.batcher.compute_by_size  # seeded at warm-up
        body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}'
        for _ in range(120):  # through the HTTP app: what the controller observes is the front end's time
            status, _, _ = await app.respond("POST", "/v2/models/lin/infer", {}, body)
            assert status == 200
        decision = m.controller.step()     # one interval's decision, taken now
        window, cap = m.batcher.config.max_queue_delay_s, m.batcher.config.formation_max
        await server.stop()
        return [decision], window, cap

    (decision,), window, cap = asyncio.run(main())
    assert decision.action == "increase" and decision.p99_ms is not None and decision.p99_ms < 40
    assert window == pytest.approx(decision.window_ms / 1e3) and window > 0
    assert cap == 8  # a tiny model: a batch of 8 fits the target easily


def test_controller_history_records_each_interval() -> None:
    class FakeBatcher:
        def __init__(self) -> None:
            from hasten.serve.policy import BatchingConfig

            self.config = BatchingConfig(max_batch_size=8)
            self.arrivals = 0
            self.compute_by_size = {1: 0.001}
            self.updates: list[dict] = []

        def update(self, **changes: float) -> None:
            self.updates.append(changes)

    batcher = FakeBatcher()
    controller = SloController(batcher, SloPolicy(0.050, 8), min_samples=5)
    assert controller.step().action in ("hold", "cap")   # no samples yet: nothing measured
    for _ in range(10):
        controller.observe(0.002)
    batcher.arrivals = 100
    d = controller.step()
    assert d.action == "increase" and batcher.updates[-1]["max_queue_delay_s"] > 0 and len(controller.history) == 2
