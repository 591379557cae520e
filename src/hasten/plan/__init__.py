"""Search over variants under constraints (accuracy budget, speed)."""

from hasten.plan.gate import GateConfig, GateResult, quantize_under_budget

__all__ = ["GateConfig", "GateResult", "quantize_under_budget"]
