"""Roofline classification of profiled nodes against the machine's measured peaks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# A node this short whose roofline time is a small part of it is dominated by per-call cost.
OVERHEAD_NODE_US = 20.0
OVERHEAD_ROOF_FRACTION = 0.25


@dataclass(frozen=True)
class Roofs:
    """The ceilings a node is held against: GFLOP/s (float), GOP/s (int8), GB/s."""

    fp32_gflops: float
    int8_gops: float | None
    mem_gbps: float

    def compute_peak(self, int_ops: bool) -> float:
        return self.int8_gops if int_ops and self.int8_gops else self.fp32_gflops

    def ridge(self, int_ops: bool) -> float:
        """Arithmetic intensity (FLOP/byte) above which a node is compute-bound."""
        return self.compute_peak(int_ops) / self.mem_gbps


@dataclass(frozen=True)
class NodeVerdict:
    name: str
    op_type: str
    provider: str
    time_us: float
    flops: int
    bytes_moved: int
    intensity: float
    int_ops: bool
    bound: str            # "compute", "memory", "overhead", or "unknown" (cost not countable)
    peak_fraction: float  # of the relevant roof (compute peak, bandwidth, or roof-time / time)
    achieved_gflops: float
    achieved_gbps: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classify(name: str, op_type: str, provider: str, time_us: float, flops: int, bytes_moved: int,
             int_ops: bool, roofs: Roofs) -> NodeVerdict:
    """Compute-, memory- or overhead-bound, and how close the node gets to its roof."""
    t = max(time_us, 1e-3) * 1e-6
    peak = roofs.compute_peak(int_ops)
    t_roof = max(flops / (peak * 1e9), bytes_moved / (roofs.mem_gbps * 1e9))
    intensity = flops / bytes_moved if bytes_moved else 0.0
    gflops, gbps = flops / t / 1e9, bytes_moved / t / 1e9
    if time_us < OVERHEAD_NODE_US and t_roof < OVERHEAD_ROOF_FRACTION * t:
        bound, frac = "overhead", t_roof / t
    elif flops == 0 and bytes_moved == 0:
        bound, frac = "unknown", 0.0  # its cost could not be counted (an op the counter does not know)
    elif flops > 0 and intensity >= roofs.ridge(int_ops):
        bound, frac = "compute", gflops / peak
    else:
        bound, frac = "memory", gbps / roofs.mem_gbps
    return NodeVerdict(name, op_type, provider, time_us, flops, bytes_moved, intensity, int_ops, bound, frac,
                       gflops, gbps)
