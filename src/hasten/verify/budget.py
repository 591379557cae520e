"""The accuracy gate: how much quality a variant may lose against the baseline, and whether it did."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from hasten.core.errors import HastenError
from hasten.core.quality import Quality
from hasten.verify.evaluate import bootstrap_ci

KINDS = ("relative", "absolute")
# Metrics whose values are fractions, reported in points (1 pt = 0.01).
POINT_METRICS = ("accuracy", "nn_agreement")
_NUMBER = r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*"
_TOLERANCE = 1e-12  # float round-off at the budget's edge (0.99 vs 1.0 with a 1 % budget) still passes


@dataclass(frozen=True)
class Budget:
    """The quality loss allowed: ``relative`` (a fraction of the baseline's value, at most 1) or
    ``absolute`` (in the metric's own units)."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise HastenError(f"unknown budget kind '{self.kind}'", hint="use one of: " + ", ".join(KINDS))
        if not isinstance(self.value, (int, float)) or not math.isfinite(self.value) or self.value < 0:
            raise HastenError(f"a budget must be a finite number >= 0, got {self.value!r}")
        if self.kind == "relative" and self.value > 1:
            raise HastenError(
                f"a relative budget of {self.value:.0%} would allow losing more than everything",
                hint="give at most 100%, e.g. '1%'",
            )

    @classmethod
    def parse(cls, text: str) -> "Budget":
        """'1%' -> relative 0.01; '0.5pt' -> absolute 0.005 (points, for accuracy); '0.005' ->
        absolute 0.005 (the metric's units)."""
        forms = ((r"%", "relative", 0.01), (r"pts?", "absolute", 0.01), (r"", "absolute", 1.0))
        for suffix, kind, scale in forms:
            match = re.fullmatch(_NUMBER + suffix + r"\s*", str(text))
            if match:
                number = float(match.group(1))
                if number < 0:
                    raise HastenError(f"budget '{text}' is negative", hint="give the allowed drop as a positive amount")
                return cls(kind, number * scale)
        raise HastenError(
            f"cannot read the budget '{text}'",
            hint="write '1%' (relative to the baseline), '0.5pt' (points of accuracy) or '0.005' (metric units)",
        )

    def allowed(self, baseline_value: float) -> float:
        """The budget in the metric's units, for a baseline scoring ``baseline_value``."""
        return self.value * abs(baseline_value) if self.kind == "relative" else self.value

    def text(self) -> str:
        """A string that `Budget.parse` reads back."""
        return f"{self.value * 100:g}%" if self.kind == "relative" else f"{self.value:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}


@dataclass(frozen=True)
class BudgetVerdict:
    """Whether a variant stays within the budget. ``drop`` is the quality lost (positive = worse),
    in metric units; ``confident`` also requires the upper end of the drop's 95 % CI to fit."""

    passed: bool
    confident: bool
    drop: float
    drop_ci: tuple[float, float]
    allowed: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "confident": self.confident, "drop": self.drop,
                "drop_ci": list(self.drop_ci), "allowed": self.allowed, "message": self.message}


def check_budget(baseline: Quality, variant: Quality, budget: Budget,
                 paired_drop_ci: tuple[float, float] | None = None) -> BudgetVerdict:
    """Compare ``variant`` with ``baseline`` under ``budget``. Give ``paired_drop_ci`` (from
    `paired_drop` on per-example scores) for a tighter CI; otherwise the two CIs are combined as
    if independent."""
    if baseline.metric != variant.metric or baseline.higher_is_better != variant.higher_is_better:
        raise HastenError(f"cannot compare {baseline.metric} of the baseline with {variant.metric} of the variant",
                          hint="evaluate both with the same metric")
    if budget.kind == "relative" and baseline.value == 0:
        raise HastenError(
            f"a relative budget needs a non-zero baseline, but the baseline's {baseline.metric} is 0",
            hint="give an absolute budget in the metric's units, e.g. '0.01'",
        )
    sign = 1.0 if baseline.higher_is_better else -1.0
    drop = sign * (baseline.value - variant.value)
    drop_ci = paired_drop_ci if paired_drop_ci is not None else _unpaired_ci(baseline, variant, drop)
    allowed = budget.allowed(baseline.value)
    slack = _TOLERANCE * max(1.0, abs(allowed))
    passed, confident = drop <= allowed + slack, drop_ci[1] <= allowed + slack
    drop_ci = (float(drop_ci[0]), float(drop_ci[1]))
    return BudgetVerdict(passed, passed and confident, float(drop), drop_ci, float(allowed),
                         _message(baseline, budget, drop, drop_ci, allowed, passed, confident))


def paired_drop(baseline_scores: np.ndarray, variant_scores: np.ndarray, n_boot: int = 1000, seed: int = 0,
                higher_is_better: bool = True) -> tuple[float, tuple[float, float]]:
    """The mean quality drop over the same examples and its 95 % CI, bootstrapping the per-example
    differences (paired: both models are scored on each resampled example)."""
    base = np.asarray(baseline_scores, dtype=np.float64).ravel()
    var = np.asarray(variant_scores, dtype=np.float64).ravel()
    if base.shape != var.shape:
        raise HastenError(
            f"paired scores must cover the same examples: {base.size} baseline vs {var.size} variant scores",
            hint="score both models on the same data set with evaluate_scores()",
        )
    diff = base - var if higher_is_better else var - base
    return float(diff.mean()), bootstrap_ci(diff, n_boot, seed)


def _unpaired_ci(baseline: Quality, variant: Quality, drop: float) -> tuple[float, float]:
    # Independent errors add in quadrature, each side using the half-width that pushes that way.
    worse_b, better_b = baseline.value - baseline.ci_low, baseline.ci_high - baseline.value
    worse_v, better_v = variant.value - variant.ci_low, variant.ci_high - variant.value
    if not baseline.higher_is_better:
        worse_b, better_b, worse_v, better_v = better_b, worse_b, better_v, worse_v
    return drop - math.hypot(worse_b, better_v), drop + math.hypot(better_b, worse_v)


def _message(baseline: Quality, budget: Budget, drop: float, ci: tuple[float, float], allowed: float,
             passed: bool, confident: bool) -> str:
    points = baseline.metric in POINT_METRICS
    unit, scale = (" pt", 100.0) if points else ("", 1.0)

    def fmt(x: float) -> str:
        return f"{x * scale:.1f}" if points else f"{x:.3g}"

    what = "drop" if baseline.higher_is_better else "increase"
    of = f" ({budget.text()} of the baseline's {baseline.value:.4g})" if budget.kind == "relative" else ""
    text = (f"{baseline.metric} {what} {fmt(drop)}{unit} (95% CI {fmt(ci[0])}..{fmt(ci[1])}) "
            f"{'within' if passed else 'exceeds'} the {fmt(allowed)}{unit} budget{of}")
    if passed and not confident:
        text += "; not confidently: the CI reaches past the budget, evaluate on more examples to be sure"
    return text
