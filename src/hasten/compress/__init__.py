"""Model → model transforms (quantization, pruning, distillation), each recorded in a manifest."""

from hasten.compress.config import (
    Bf16,
    DynamicInt8,
    Fp16,
    NncfInt8,
    Qat,
    QuantConfig,
    StaticInt8,
    config_from_dict,
)
from hasten.compress.distill import DistillConfig, distill
from hasten.compress.prune import PruneConfig, prune
from hasten.compress.quantize import quantize

__all__ = ["Bf16", "DistillConfig", "DynamicInt8", "Fp16", "NncfInt8", "PruneConfig", "Qat", "QuantConfig",
           "StaticInt8", "config_from_dict", "distill", "prune", "quantize"]
