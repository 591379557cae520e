"""When requests are sent: Poisson arrivals for an open loop, or a replayed trace. Pure functions
(seconds from the start of the run), so the schedule can be checked without a network."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hasten.core import HastenError


def poisson_arrivals(rate: float, duration_s: float | None = None, count: int | None = None,
                     seed: int = 0) -> np.ndarray:
    """Arrival times of a Poisson process of ``rate`` per second: exponential gaps with mean
    1/rate, until ``duration_s`` or ``count`` arrivals (whichever comes first)."""
    if not rate > 0:
        raise HastenError(f"the arrival rate must be > 0 per second, got {rate}")
    if duration_s is None and count is None:
        raise HastenError("give a duration or a request count for an open-loop run")
    rng = np.random.default_rng(seed)
    n = count if count is not None else int(rate * duration_s * 1.2 + 10 * np.sqrt(rate * duration_s) + 10)
    times = np.cumsum(rng.exponential(1.0 / rate, size=n))
    while duration_s is not None and count is None and times[-1] < duration_s:  # rare: draw more
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, size=n))])
    if duration_s is not None:
        times = times[times < duration_s]
    return times[:count] if count is not None else times


def trace_arrivals(path: str | Path) -> np.ndarray:
    """A trace file: one timestamp (seconds; absolute or relative) per line, '#' comments and
    blank lines allowed, non-decreasing. Returned relative to the first."""
    p = Path(path)
    if not p.is_file():
        raise HastenError(f"trace file not found: {p}", hint="one timestamp in seconds per line")
    values = []
    for number, line in enumerate(p.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            values.append(float(text))
        except ValueError:
            raise HastenError(f"{p}:{number}: '{text}' is not a timestamp in seconds") from None
    if not values:
        raise HastenError(f"{p} holds no timestamps", hint="one timestamp in seconds per line")
    times = np.array(values)
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0):
        bad = int(np.argmax(np.diff(times) < 0)) + 2 if np.any(np.diff(times) < 0) else 0
        raise HastenError(f"{p}: timestamps must be finite and non-decreasing" + (f" (entry {bad} goes back)" if bad else ""))
    return times - times[0]


def split_round_robin(times: np.ndarray, parts: int) -> list[np.ndarray]:
    """Share a schedule between worker processes: every ``parts``-th arrival each (the union is
    the schedule; each share is itself a thinned Poisson process when the schedule is one)."""
    return [times[i::parts] for i in range(parts)]
