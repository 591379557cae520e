"""Shared value types and errors; imports nothing heavy."""

from hasten.core.errors import HastenError, MissingDependencyError
from hasten.core.types import LatencyStats, ModelInfo, TensorSpec, check_feed

__all__ = [
    "HastenError",
    "LatencyStats",
    "MissingDependencyError",
    "ModelInfo",
    "TensorSpec",
    "check_feed",
]
