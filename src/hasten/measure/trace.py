"""Parsing ONNX Runtime's profiling trace (Chrome trace JSON) into per-run node timings."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hasten.core import HastenError

KERNEL_SUFFIX = "_kernel_time"


@dataclass(frozen=True)
class NodeTiming:
    """One node's kernel time per run over the kept runs (µs: median and mean), where it ran,
    and its shapes. The median resists the spikes a shared machine adds to a few runs."""

    name: str
    op_type: str
    provider: str
    median_us: float
    mean_us: float
    calls_per_run: float
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class TraceSummary:
    runs: int
    run_us: tuple[float, ...]        # wall time of each kept run, as ONNX Runtime saw it
    nodes: tuple[NodeTiming, ...]    # in order of first execution
    run_node_us: tuple[float, ...] = ()  # Σ node time of each kept run

    @property
    def mean_run_us(self) -> float:
        return sum(self.run_us) / len(self.run_us)

    @property
    def median_run_us(self) -> float:
        return float(statistics.median(self.run_us))

    @property
    def node_sum_us(self) -> float:
        """Σ node time of the median run. (Σ of per-node medians would be lower on a busy
        machine, where each run has a few slow nodes: medians pick each node's calm time.)"""
        return float(statistics.median(self.run_node_us)) if self.run_node_us else sum(n.median_us for n in self.nodes)

    @property
    def mean_node_sum_us(self) -> float:
        return sum(n.mean_us for n in self.nodes)

    @property
    def overhead_us(self) -> float:
        """Framework overhead per run: the median over runs of ONNX Runtime's run time minus Σ node time."""
        gaps = [r - n for r, n in zip(self.run_us, self.run_node_us)] or [self.median_run_us - self.node_sum_us]
        return max(float(statistics.median(gaps)), 0.0)


def load_trace(path: str | Path) -> list[dict[str, Any]]:
    try:
        events = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise HastenError(f"cannot read the ONNX Runtime profile {path}: {exc}") from exc
    if not isinstance(events, list):
        raise HastenError(f"{path} is not an ONNX Runtime profile (expected a JSON list of events)")
    return events


def parse_trace(events: list[dict[str, Any]], skip_runs: int = 0) -> TraceSummary:
    """Group node kernel events by the ``model_run`` they fall in; drop the first ``skip_runs``
    runs (warm-up) and average the rest."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[skip_runs:]
    if not runs:
        raise HastenError("the profile has no kept model_run events", hint="run the model at least once more than skip_runs")
    kernels = sorted((e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith(KERNEL_SUFFIX)),
                     key=lambda e: e["ts"])
    per_run: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(runs))
    calls: dict[str, int] = defaultdict(int)
    first: dict[str, dict[str, Any]] = {}
    i = 0
    for r, run in enumerate(runs):
        start, end = run["ts"], run["ts"] + run["dur"]
        while i < len(kernels) and kernels[i]["ts"] < start:
            i += 1
        while i < len(kernels) and kernels[i]["ts"] <= end:
            ev = kernels[i]
            name = ev["name"][: -len(KERNEL_SUFFIX)]
            per_run[name][r] += ev["dur"]
            calls[name] += 1
            first.setdefault(name, ev)
            i += 1
    n = len(runs)
    nodes = tuple(_timing(name, ev, per_run[name], calls[name] / n) for name, ev in first.items())
    totals = tuple(float(sum(times[r] for times in per_run.values())) for r in range(n))
    return TraceSummary(n, tuple(float(r["dur"]) for r in runs), nodes, totals)


def _timing(name: str, ev: dict[str, Any], per_run: list[float], calls: float) -> NodeTiming:
    args = ev.get("args", {})
    return NodeTiming(name, str(args.get("op_name", "?")), str(args.get("provider", "?")),
                      float(statistics.median(per_run)), sum(per_run) / len(per_run), calls,
                      _shapes(args.get("input_type_shape")), _shapes(args.get("output_type_shape")))


def _shapes(items: Any) -> tuple[tuple[int, ...], ...]:
    out = []
    for item in items or []:
        dims = next(iter(item.values()), []) if isinstance(item, dict) and item else []
        out.append(tuple(int(d) for d in dims))
    return tuple(out)

