"""`Quality`: one metric's value on a data set, with its 95 % confidence interval."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hasten.core.errors import HastenError


@dataclass(frozen=True)
class Quality:
    """A metric's point estimate over ``n`` examples and its 95 % bootstrap CI.

    ``metric`` is a built-in name ("accuracy", "cosine", "max_abs", "mean_abs", "nn_agreement") or a
    user metric "module:function". ``extra`` holds plain-number summaries such as the worst example
    (``{"min": ..., "p05": ...}`` when higher is better, ``{"max": ..., "p95": ...}`` for errors).
    """

    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    higher_is_better: bool
    extra: dict[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 0:
            raise HastenError(f"Quality.n must be a non-negative integer, got {self.n!r}")
        if not math.isnan(self.value) and not (self.ci_low <= self.ci_high):
            raise HastenError(
                f"Quality CI is inverted: ci_low {self.ci_low} > ci_high {self.ci_high}",
                hint="pass the lower bound first",
            )

    @property
    def ci(self) -> tuple[float, float]:
        return self.ci_low, self.ci_high

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``Quality.from_dict`` reads it back."""
        return {
            "metric": self.metric,
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": self.n,
            "higher_is_better": self.higher_is_better,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Quality":
        try:
            return cls(
                metric=str(data["metric"]),
                value=float(data["value"]),
                ci_low=float(data["ci_low"]),
                ci_high=float(data["ci_high"]),
                n=int(data["n"]),
                higher_is_better=bool(data["higher_is_better"]),
                extra={str(k): float(v) for k, v in data.get("extra", {}).items()},
            )
        except KeyError as exc:
            raise HastenError(f"quality record lacks the field {exc}", hint="expected the keys of Quality.to_dict()") from None
