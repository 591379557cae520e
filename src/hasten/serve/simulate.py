"""A discrete-event model of one batcher instance — Poisson arrivals, a window from the oldest
queued request, a batch cap, compute(b) per batch — to test batching policies (the SLO
controller, the tuner) in milliseconds of CPU instead of minutes of load."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SimServer:
    compute: Callable[[int], float]           # seconds to run a batch of b
    window_s: float = 0.0
    cap: int = 32
    now: float = 0.0
    free_at: float = 0.0
    queue: list[float] = field(default_factory=list)   # arrival times waiting
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def run(self, rate: float, seconds: float) -> tuple[np.ndarray, np.ndarray]:
        """Offer Poisson arrivals at ``rate`` for ``seconds`` (from ``now``); returns (arrival,
        completion) times of the requests completed in that span, in completion order."""
        end = self.now + seconds
        t = self.now
        arrivals = []
        while True:
            t += self.rng.exponential(1.0 / rate)
            if t >= end:
                break
            arrivals.append(t)
        done_a: list[float] = []
        done_c: list[float] = []
        pending = self.queue + arrivals          # in arrival order; the first ones may be queued already
        k = 0
        while k < len(pending):
            oldest = pending[k]
            cap_at = pending[k + self.cap - 1] if k + self.cap - 1 < len(pending) else float("inf")
            start = max(self.free_at, oldest, min(oldest + self.window_s, cap_at))
            if start >= end:
                break                            # decided in a later span (its arrivals may join)
            n = 0
            while k + n < len(pending) and n < self.cap and pending[k + n] <= start:
                n += 1
            finish = start + self.compute(n)
            self.free_at = finish
            done_a += pending[k:k + n]
            done_c += [finish] * n
            k += n
        self.queue = pending[k:]
        self.now = end
        return np.array(done_a), np.array(done_c)
