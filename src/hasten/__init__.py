"""hasten: measure, accelerate, compress, batch and serve AI inference.

The public surface is re-exported here and pinned by a test. Importing hasten loads neither
torch, openvino, ray nor executorch: each is imported only by the one module that adapts it.
"""

from hasten.core import HastenError, LatencyStats, ModelInfo, TensorSpec
from hasten.measure import BenchConfig, BenchResult, ProfileConfig, benchmark, compare, machine_peaks, profile
from hasten.models import Dataset, Model, load_dataset, load_model, synthetic_dataset
from hasten.runtime import BackendConfig, Runner, available_backends, compile

__version__ = "0.1.0"

__all__ = [
    "BackendConfig",
    "BenchConfig",
    "BenchResult",
    "Dataset",
    "HastenError",
    "LatencyStats",
    "Model",
    "ModelInfo",
    "ProfileConfig",
    "Runner",
    "TensorSpec",
    "__version__",
    "available_backends",
    "benchmark",
    "compare",
    "compile",
    "load_dataset",
    "load_model",
    "machine_peaks",
    "profile",
    "synthetic_dataset",
]
