"""Keep a stated p99 while batching as much as it allows: the SLO controller.

`dynamic_batching: {slo_p99_ms: X}` in a model's config turns it on. Every interval it reads the
server-side latencies of the requests answered (from fully read to answered: the event loop's
own queueing, parsing, batching, compute and encoding), the arrival rate, and the
compute time per batch size (measured at warm-up, then from live batches), and sets the batcher's
window and batch cap:

- **cap**: the largest batch whose predicted compute fits half the latency target (a batch
  bigger than that cannot be answered in time however short the queue);
- **window** by additive increase / multiplicative decrease (as in Clipper), steered by the
  measured p99: above the target, or the arrival rate up by half since the window last grew (a
  load step: act before the tail shows it) → halve it; below 70 % of it → add 5 % of the target, up to
  the time the arrival rate needs to fill a capped batch and to half of what the target leaves
  after computing one. A wider window forms bigger batches (more throughput per core) at the
  cost of latency; the controller spends the latency the SLO allows and no more.

The target is ``slo × headroom`` (default 0.8): the server sees only its own part of a request's
time; the rest (network, client) is what the headroom is for. The decision is a pure function
(`SloPolicy.decide`), tested on a simulated server; `SloController` wires it to a live batcher,
logs every change and exports it as metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class Knobs:
    window_s: float
    cap: int
    rate_ref: float = 0.0   # the arrival rate when the window last grew (a load step halves it at once)


def compute_model(observed: dict[int, float]) -> Callable[[int], float]:
    """compute(b) from measured (batch size -> seconds): a least-squares line a + c·b over the
    sizes seen (a single size: proportional to b, which overestimates larger batches: safe)."""
    if not observed:
        return lambda b: 0.0
    sizes = np.array(sorted(observed), dtype=float)
    times = np.array([observed[int(b)] for b in sizes])
    if len(sizes) == 1:
        per = times[0] / sizes[0]
        return lambda b: per * b
    c, a = np.polyfit(sizes, times, 1)
    c, a = max(c, 0.0), max(a, 0.0)
    return lambda b: a + c * b


@dataclass
class SloPolicy:
    slo_s: float
    max_batch: int
    headroom: float = 0.8
    step_fraction: float = 0.05     # additive increase, as a fraction of the target
    low_fraction: float = 0.7       # grow the window only below this share of the target

    @property
    def target_s(self) -> float:
        return self.slo_s * self.headroom

    def cap_for(self, compute: Callable[[int], float]) -> int:
        fits = [b for b in range(1, self.max_batch + 1) if compute(b) <= self.target_s / 2]
        return max(fits) if fits else 1

    def decide(self, knobs: Knobs, p99_s: float | None, rate_per_s: float,
               compute: Callable[[int], float]) -> tuple[Knobs, str]:
        """The next knobs and what was done ("hold", "increase", "decrease", "limit", "cap")."""
        cap = self.cap_for(compute)
        target = self.target_s
        fill = cap / rate_per_s if rate_per_s > 0 else 0.0
        limit = max(0.0, min((target - compute(cap)) / 2, fill))
        window, action, ref = knobs.window_s, "hold", knobs.rate_ref
        stepped = ref > 0 and rate_per_s > 1.5 * ref  # the load rose by half since the window last grew
        if (p99_s is not None and p99_s > target) or stepped:
            window, action, ref = (window / 2 if window / 2 >= 5e-5 else 0.0), "decrease", rate_per_s if stepped else ref
        elif p99_s is not None and p99_s < self.low_fraction * target and window < limit - 1e-6:
            window, action, ref = min(window + self.step_fraction * target, limit), "increase", rate_per_s
        if action != "decrease" and window > limit:
            window, action = limit, "limit"  # the rate fell or a batch got slower: the window shrinks with it
        if action == "hold" and cap != knobs.cap:
            action = "cap"
        return Knobs(window, cap, ref), action


@dataclass
class Decision:
    t: float
    window_ms: float
    cap: int
    p99_ms: float | None
    rate_per_s: float
    action: str


@dataclass
class SloController:
    """Runs `SloPolicy` every ``interval_s`` against a live `Batcher`."""

    batcher: Any
    policy: SloPolicy
    interval_s: float = 0.5
    min_samples: int = 100        # a p99 from fewer is its top one or two requests: noise
    on_change: Callable[[Knobs], None] | None = None
    history: list[Decision] = field(default_factory=list)
    _latencies: deque = field(default_factory=lambda: deque(maxlen=20000))
    _task: asyncio.Task | None = None

    def __post_init__(self) -> None:
        cfg = self.batcher.config
        self.knobs = Knobs(cfg.max_queue_delay_s, cfg.formation_max)
        self._arrivals = self.batcher.arrivals
        self._since = time.monotonic()
        self._started = self._since

    def observe(self, latency_s: float) -> None:
        self._latencies.append(latency_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="hasten-slo-controller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.step()

    def step(self) -> Decision:
        now = time.monotonic()
        arrivals = self.batcher.arrivals
        elapsed = now - self._since
        rate = (arrivals - self._arrivals) / max(elapsed, 1e-9)
        p99 = None
        n = len(self._latencies)
        if n >= self.min_samples or (n >= 20 and elapsed >= 8 * self.interval_s):  # light traffic: wait longer
            p99 = float(np.percentile(np.fromiter(self._latencies, float), 99))
            self._latencies.clear()
            self._arrivals, self._since = arrivals, now
        knobs, action = self.policy.decide(self.knobs, p99, rate, compute_model(dict(self.batcher.compute_by_size)))
        if (knobs.window_s, knobs.cap) != (self.knobs.window_s, self.knobs.cap):
            self.batcher.update(max_queue_delay_s=knobs.window_s, batch_cap=knobs.cap)
            log.info("SLO controller (p99 target %.2f ms): p99 %s, %.0f req/s -> %s: window %.2f ms, batch cap %d",
                     self.policy.target_s * 1e3, "n/a" if p99 is None else f"{p99 * 1e3:.2f} ms", rate, action,
                     knobs.window_s * 1e3, knobs.cap)
            if self.on_change is not None:
                self.on_change(knobs)
        self.knobs = knobs
        decision = Decision(now - self._started, knobs.window_s * 1e3, knobs.cap, None if p99 is None else p99 * 1e3,
                            rate, action)
        self.history.append(decision)
        return decision
