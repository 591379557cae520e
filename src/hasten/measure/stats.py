"""Small statistics helpers for timing samples."""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054


def median_ci(samples: np.ndarray | list[float], z: float = Z95) -> tuple[float, float]:
    """Distribution-free ~95 % confidence interval of the median from order statistics.

    Ranks ``n/2 -/+ z*sqrt(n)/2`` (the normal approximation to the binomial), clipped to the data.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    if n == 0:
        raise ValueError("no samples")
    half = z * math.sqrt(n) / 2
    lo = max(int(math.floor(n / 2 - half)), 1)
    hi = min(int(math.ceil(n / 2 + half)), n)
    return float(x[lo - 1]), float(x[hi - 1])


def relative_ci_halfwidth(samples: np.ndarray | list[float]) -> float:
    """Half the width of the median's CI divided by the median (inf when undefined)."""
    if len(samples) < 3:
        return math.inf
    lo, hi = median_ci(samples)
    med = float(np.median(samples))
    return (hi - lo) / 2 / med if med > 0 else math.inf
