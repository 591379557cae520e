"""Model → model transforms (quantization so far), each recorded in a manifest."""

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
from hasten.compress.quantize import quantize

__all__ = ["Bf16", "DynamicInt8", "Fp16", "NncfInt8", "Qat", "QuantConfig", "StaticInt8", "config_from_dict", "quantize"]
