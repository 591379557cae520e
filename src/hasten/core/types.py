"""Small value types shared by every stage. No heavy imports here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hasten.core.errors import HastenError

# ONNX tensor element types that hasten handles, as numpy dtype names.
ONNX_TYPE_TO_DTYPE = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype (numpy name) and shape of one model input or output; -1 marks a dynamic dim."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_batched(self) -> bool:
        """True when the first dimension is dynamic, i.e. the model takes any batch size."""
        return self.rank > 0 and self.shape[0] == -1

    def check(self, array: np.ndarray) -> None:
        """Raise a HastenError unless ``array`` has this spec's dtype, rank and fixed dims."""
        if not isinstance(array, np.ndarray):
            raise HastenError(
                f"input '{self.name}': expected a numpy array, got {type(array).__name__}",
                hint="pass numpy arrays, e.g. np.asarray(x, dtype=np.%s)" % self.dtype,
            )
        if array.dtype.name != self.dtype:
            raise HastenError(
                f"input '{self.name}': expected dtype {self.dtype}, got {array.dtype.name}",
                hint=f"convert it with array.astype(np.{self.dtype})",
            )
        if array.ndim != self.rank:
            raise HastenError(
                f"input '{self.name}': expected rank {self.rank} with shape {self.shape_text()}, "
                f"got rank {array.ndim} with shape {list(array.shape)}",
                hint="add or remove a batch dimension (np.expand_dims / squeeze) to match",
            )
        for axis, (want, got) in enumerate(zip(self.shape, array.shape)):
            if want != -1 and want != got:
                raise HastenError(
                    f"input '{self.name}': dimension {axis} must be {want} (shape "
                    f"{self.shape_text()}), got shape {list(array.shape)}"
                )

    def shape_text(self) -> str:
        return "[" + ", ".join("?" if d == -1 else str(d) for d in self.shape) + "]"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def check_feed(specs: tuple[TensorSpec, ...], feed: dict[str, np.ndarray]) -> None:
    """Check a dict of inputs against the model's input specs; raise a clear HastenError."""
    if not isinstance(feed, dict):
        raise HastenError(
            f"inputs must be a dict of name -> numpy array, got {type(feed).__name__}",
            hint="expected names: " + ", ".join(s.name for s in specs),
        )
    wanted = {s.name for s in specs}
    missing = sorted(wanted - feed.keys())
    unknown = sorted(feed.keys() - wanted)
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if unknown:
            parts.append("unknown " + ", ".join(map(str, unknown)))
        raise HastenError(
            "wrong input names: " + "; ".join(parts),
            hint="the model takes " + ", ".join(f"{s.name} {s.dtype}{s.shape_text()}" for s in specs),
        )
    for spec in specs:
        spec.check(feed[spec.name])


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is: where it came from and its input/output specs."""

    name: str
    source: str
    path: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "path": self.path,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            **({"extra": self.extra} if self.extra else {}),
        }


@dataclass(frozen=True)
class LatencyStats:
    """Latency statistics of repeated runs, in milliseconds."""

    count: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float

    @classmethod
    def from_seconds(cls, samples_s: list[float] | np.ndarray) -> "LatencyStats":
        """Statistics of samples given in seconds; percentiles use linear interpolation."""
        ms = np.asarray(samples_s, dtype=np.float64) * 1e3
        if ms.size == 0:
            raise HastenError("cannot compute latency statistics of zero samples")
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(
            count=int(ms.size),
            min_ms=float(ms.min()),
            mean_ms=float(ms.mean()),
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99),
            max_ms=float(ms.max()),
            std_ms=float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
