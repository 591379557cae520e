"""Search over variants under constraints (accuracy budget, speed)."""

from hasten.plan.derive import DerivedResult, distill_under_budget, prune_under_budget
from hasten.plan.gate import GateConfig, GateResult, quantize_under_budget

__all__ = ["DerivedResult", "GateConfig", "GateResult", "distill_under_budget", "prune_under_budget",
           "quantize_under_budget"]
