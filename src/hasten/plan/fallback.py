"""Accuracy-aware fallback: keep the most sensitive quantized nodes in float until the budget holds."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

# score(excluded nodes) -> (margin to the bar: < 0 misses, >= 0 holds; passes?)
Scorer = Callable[[tuple[str, ...]], tuple[float, bool]]


@dataclass(frozen=True)
class Sensitivity:
    node: str
    gain: float      # margin to the bar with only this node in float, minus the all-quantized margin
    cost: int        # float weights it keeps (bytes): the speed we give up
    priority: float  # gain per MB kept in float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrailStep:
    excluded: tuple[str, ...]
    value: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"excluded": list(self.excluded), "value": self.value, "passed": self.passed}


def sensitivities(nodes: list[str], base_margin: float, score: Scorer, costs: dict[str, int],
                  progress: Callable[[int, int], None] | None = None) -> list[Sensitivity]:
    """Each node's gain in margin to the bar when only it is kept in float, ranked most useful
    first: largest gain per byte of weights kept in float (cheapest-first among equally sensitive)."""
    out = []
    for i, node in enumerate(nodes):
        margin, _ = score((node,))
        gain = margin - base_margin
        cost = max(costs.get(node, 1), 1)
        out.append(Sensitivity(node, gain, cost, gain / (cost / 1e6)))
        if progress is not None:
            progress(i + 1, len(nodes))
    return sorted(out, key=lambda s: (-s.priority, -s.gain))


def greedy_fallback(ranked: list[Sensitivity], score: Scorer, total: int, start: tuple[str, ...] = (),
                    max_steps: int | None = None) -> list[TrailStep]:
    """Exclude nodes in ranked order until the budget holds; returns the trail (whose last step
    says whether it held).
    Stops when only one of the ``total`` quantized nodes would remain (all-float-but-one)."""
    trail: list[TrailStep] = []
    excluded = start
    limit = total - 1 if max_steps is None else min(max_steps, total - 1)
    for s in ranked[:limit]:
        excluded = excluded + (s.node,)
        value, passed = score(excluded)
        trail.append(TrailStep(excluded, value, passed))
        log.info("fallback: +%s in float -> %.5f (%s)", s.node, value, "pass" if passed else "miss")
        if passed:
            break
    return trail
