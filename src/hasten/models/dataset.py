"""`Dataset`: model inputs (one array per input name, first axis = examples) and optional labels."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hasten.core import HastenError, TensorSpec

LABELS = "labels"


@dataclass
class Dataset:
    """Examples for calibration, evaluation and benchmarking.

    ``inputs`` maps each model input name to an array whose first axis indexes examples. Token
    inputs may be padded; with an ``attention_mask`` input, batches are trimmed to their longest
    example. ``texts`` keeps the sentences of a text dataset, when known.
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    name: str = "dataset"
    texts: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise HastenError(f"dataset '{self.name}' has no input arrays")
        sizes = {k: len(v) for k, v in self.inputs.items()}
        if self.labels is not None:
            sizes[LABELS] = len(self.labels)
        if len(set(sizes.values())) != 1:
            raise HastenError(
                f"dataset '{self.name}': arrays disagree on the number of examples: {sizes}",
                hint="every array (and labels) needs the same first dimension",
            )
        if next(iter(sizes.values())) == 0:
            raise HastenError(f"dataset '{self.name}' is empty")

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """One example as an input dict with a batch dimension of 1."""
        return self.batch(index, 1)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return (self[i] for i in range(len(self)))

    def batch(self, start: int, size: int, seq_len: int | None = None) -> dict[str, np.ndarray]:
        """``size`` examples from ``start`` (wrapping around), as one input dict.

        Without ``seq_len`` token inputs are trimmed to the batch's longest example; with it they
        are padded (with 0 and a 0 mask) or truncated to exactly ``seq_len``.
        """
        idx = (np.arange(size) + start) % len(self)
        feed = {k: np.ascontiguousarray(v[idx]) for k, v in self.inputs.items()}
        mask = feed.get("attention_mask")
        if mask is None or mask.ndim != 2:
            return feed
        length = seq_len if seq_len is not None else max(int(mask.sum(1).max()), 1)
        return {k: (_fit(v, length) if _is_token_array(v, mask) else v) for k, v in feed.items()}

    def labels_for(self, start: int, size: int) -> np.ndarray:
        if self.labels is None:
            raise HastenError(f"dataset '{self.name}' has no labels")
        return self.labels[(np.arange(size) + start) % len(self)]

    def select(self, part: slice, name: str | None = None) -> "Dataset":
        """The examples in ``part`` (inputs, labels and texts alike)."""
        return Dataset({k: v[part] for k, v in self.inputs.items()},
                       None if self.labels is None else self.labels[part], name or self.name,
                       None if self.texts is None else self.texts[part])

    def take(self, n: int) -> "Dataset":
        return self.select(slice(0, min(n, len(self))))

    def check_against(self, specs: tuple[TensorSpec, ...]) -> None:
        """Raise a clear HastenError unless this dataset can feed a model with these inputs."""
        from hasten.core import check_feed

        try:
            check_feed(specs, self.batch(0, 1))
        except HastenError as exc:
            raise HastenError(f"dataset '{self.name}' does not fit the model: {exc}") from None

    @classmethod
    def from_npz(cls, path: str | Path) -> "Dataset":
        """Load from ``.npz``: one array per input name plus an optional ``labels`` array."""
        path = Path(path)
        if not path.exists():
            raise HastenError(f"dataset file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:  # never unpickle user files
                arrays = {k: data[k] for k in data.files}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise HastenError(
                f"{path} is not a readable .npz dataset ({exc})",
                hint="save one with np.savez(path, input_name=array, labels=labels); object arrays are refused",
            ) from exc
        labels = arrays.pop(LABELS, None)
        return cls(arrays, labels, name=path.stem)

    def save_npz(self, path: str | Path) -> None:
        arrays = dict(self.inputs)
        if self.labels is not None:
            arrays[LABELS] = self.labels
        np.savez(path, **arrays)


def _is_token_array(v: np.ndarray, mask: np.ndarray) -> bool:
    return v.ndim == 2 and v.shape == mask.shape and np.issubdtype(v.dtype, np.integer)


def _fit(v: np.ndarray, length: int) -> np.ndarray:
    if v.shape[1] >= length:
        return np.ascontiguousarray(v[:, :length])
    out = np.zeros((v.shape[0], length), dtype=v.dtype)
    out[:, : v.shape[1]] = v
    return out


def synthetic_dataset(specs: tuple[TensorSpec, ...], size: int = 64, dynamic_dim: int = 16, seed: int = 0) -> Dataset:
    """Random inputs that fit ``specs``, for models that come without data. Dynamic dimensions
    other than the batch take ``dynamic_dim``; ``*mask`` inputs are all ones, token-type/segment
    inputs zeros; other integer inputs are drawn from [0, 100) so token ids stay inside any
    vocabulary."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = (size,) + tuple(dynamic_dim if d == -1 else d for d in spec.shape[1:])
        if spec.dtype == "bool":
            arrays[spec.name] = rng.random(shape) < 0.5
        elif "mask" in spec.name.lower():
            arrays[spec.name] = np.ones(shape, dtype=spec.dtype)
        elif "type" in spec.name.lower() or "segment" in spec.name.lower():  # token_type_ids: segment 0
            arrays[spec.name] = np.zeros(shape, dtype=spec.dtype)
        elif np.issubdtype(np.dtype(spec.dtype), np.integer):
            arrays[spec.name] = rng.integers(0, 100, shape).astype(spec.dtype)
        elif spec.dtype in ("float32", "float16", "float64"):
            arrays[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == "object":  # string tensors
            arrays[spec.name] = np.full(shape, b"hasten", dtype=object)
        else:
            raise HastenError(
                f"cannot make synthetic data for input '{spec.name}' of dtype {spec.dtype}",
                hint="pass a data set with --data file.npz",
            )
    return Dataset(arrays, name="synthetic")
