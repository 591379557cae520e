"""Per-example quality scores: pure numpy functions, found by name with `get_metric()`.

Each metric takes the variant's outputs (examples on axis 0) and either the labels or the baseline's
outputs, and returns one score per example so that its mean can be bootstrapped.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hasten.core.errors import HastenError

MetricFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
_USER_FORM = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class Metric:
    """A named per-example metric. ``needs_labels``: compared with labels (task metric) rather
    than with the baseline's outputs (fidelity). ``perfect``: the baseline's score against itself,
    when one exists (cosine 1, error 0)."""

    name: str
    fn: MetricFn
    needs_labels: bool
    higher_is_better: bool
    perfect: float | None = None


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1.0 where the argmax over the last axis equals the label, else 0.0 (averaged over any
    extra axes, e.g. tokens)."""
    outputs, labels = np.asarray(outputs), np.asarray(labels)
    if outputs.ndim < 1 or outputs.shape[:-1] != labels.shape:
        raise HastenError(
            f"accuracy: outputs of shape {list(outputs.shape)} do not fit labels of shape {list(labels.shape)}",
            hint="accuracy takes class scores [N, ..., classes] and integer labels [N, ...]",
        )
    correct = (outputs.argmax(axis=-1) == labels).astype(np.float64)
    return correct.reshape(len(correct), -1).mean(axis=1)


def cosine(outputs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of each example's flattened output with the baseline's (1 = same
    direction). Two all-zero vectors count as identical (1), one all-zero vector as 0."""
    a, b = _flat_pair(outputs, reference, "cosine")
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = np.einsum("ij,ij->i", a, b) / (na * nb)
    sim = np.where((na == 0) & (nb == 0), 1.0, np.where((na == 0) | (nb == 0), 0.0, sim))
    return np.clip(sim, -1.0, 1.0)


def max_abs(outputs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Largest absolute difference from the baseline, per example."""
    a, b = _flat_pair(outputs, reference, "max_abs")
    return np.abs(a - b).max(axis=1) if a.shape[1] else np.zeros(len(a))


def mean_abs(outputs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mean absolute difference from the baseline, per example."""
    a, b = _flat_pair(outputs, reference, "mean_abs")
    return np.abs(a - b).mean(axis=1) if a.shape[1] else np.zeros(len(a))


def nn_agreement(outputs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """1.0 where example i's nearest neighbour (cosine, excluding i) among all examples is the
    same for the variant as for the baseline: retrieval fidelity, scored per example."""
    a, b = _flat_pair(outputs, reference, "nn_agreement")
    if len(a) < 2:
        raise HastenError("nn_agreement needs at least 2 examples", hint="evaluate on a larger data set")
    return (_nearest(a) == _nearest(b)).astype(np.float64)


def _nearest(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms == 0, 1.0, norms)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(axis=1)


def _flat_pair(outputs: np.ndarray, reference: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(outputs), np.asarray(reference)
    if a.shape != b.shape or a.ndim < 1:
        raise HastenError(
            f"{name}: the variant's outputs have shape {list(a.shape)} but the baseline's have {list(b.shape)}",
            hint="compare the same output of both models, on the same examples",
        )
    return a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)


def builtin_metrics() -> dict[str, Metric]:
    """The built-in metrics by name (a fresh dict on each call)."""
    return {
        "accuracy": Metric("accuracy", accuracy, needs_labels=True, higher_is_better=True),
        "cosine": Metric("cosine", cosine, needs_labels=False, higher_is_better=True, perfect=1.0),
        "max_abs": Metric("max_abs", max_abs, needs_labels=False, higher_is_better=False, perfect=0.0),
        "mean_abs": Metric("mean_abs", mean_abs, needs_labels=False, higher_is_better=False, perfect=0.0),
        "nn_agreement": Metric("nn_agreement", nn_agreement, needs_labels=False, higher_is_better=True, perfect=1.0),
    }


def get_metric(name: str) -> Metric:
    """The metric called ``name``: a built-in, or a user function given as "package.module:function".

    A user function is called as ``fn(outputs, labels_or_reference)`` and returns per-example scores
    (1-D, one per example) or one scalar. It is compared with labels unless it sets the attribute
    ``fn.needs_labels = False`` (then with the baseline's outputs); ``fn.higher_is_better = False``
    marks an error metric.
    """
    known = builtin_metrics()
    if name in known:
        return known[name]
    if not isinstance(name, str) or not _USER_FORM.match(name):
        raise HastenError(
            f"unknown metric {name!r}",
            hint="use one of " + ", ".join(known) + ", or your own function as 'package.module:function'",
        )
    return _user_metric(name)


def _user_metric(name: str) -> Metric:
    module_name, fn_name = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HastenError(
            f"metric '{name}': cannot import module '{module_name}' ({exc})",
            hint="make sure the module is importable (installed, or its folder on PYTHONPATH)",
        ) from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        found = "not found" if fn is None else f"a {type(fn).__name__}, not a function"
        raise HastenError(
            f"metric '{name}': '{fn_name}' in module '{module_name}' is {found}",
            hint=f"define def {fn_name}(outputs, labels_or_reference) -> per-example scores in {module_name}",
        )
    return Metric(name, _checked(name, fn), needs_labels=bool(getattr(fn, "needs_labels", True)),
                  higher_is_better=bool(getattr(fn, "higher_is_better", True)))


def _checked(name: str, fn: Callable[..., object]) -> MetricFn:
    """Wrap a user function so that a wrong return shape fails with a clear message."""

    def call(outputs: np.ndarray, target: np.ndarray) -> np.ndarray:
        result = fn(outputs, target)
        try:
            scores = np.asarray(result, dtype=np.float64)
        except (TypeError, ValueError):
            scores = None
        if scores is None or not (scores.ndim == 0 or scores.shape == (len(outputs),)):
            got = f"shape {list(scores.shape)}" if scores is not None else type(result).__name__
            raise HastenError(
                f"metric '{name}' returned {got} for {len(outputs)} examples",
                hint=f"return one score per example (a 1-D array of length {len(outputs)}) or a single number",
            )
        return scores

    return call
