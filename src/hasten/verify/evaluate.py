"""`evaluate()`: run a model over a data set and score it, with a bootstrap confidence interval."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Union

import numpy as np

from hasten.core.errors import HastenError
from hasten.core.quality import Quality
from hasten.verify.metrics import Metric, builtin_metrics, get_metric

if TYPE_CHECKING:  # only for hints: verify talks to any object with .run() and .outputs
    from hasten.models.dataset import Dataset
    from hasten.runtime.base import Runner

# progress(label, fraction_done) — fraction in [0, 1], as in hasten.measure
ProgressHook = Callable[[str, float], None]
Baseline = Union["Runner", np.ndarray, None]
_BOOT_CHUNK = 4_000_000  # resampled indices held at once, to bound memory on large data sets


def collect_outputs(runner: "Runner", dataset: "Dataset", output: str | None = None, batch_size: int = 32,
                    progress: ProgressHook | None = None) -> np.ndarray:
    """One output of ``runner`` (default: its first) for every example of ``dataset``, in order.

    Token-level outputs ([N, T, ...] matching the batch's ``attention_mask``) are zeroed at padded
    positions and padded with zeros to the longest batch, so results do not depend on batching.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise HastenError(f"batch_size must be a positive integer, got {batch_size!r}")
    name = _output_name(runner, output)
    n, parts = len(dataset), []
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        feed = dataset.batch(start, size)
        result = runner.run(feed)
        if name not in result:
            raise HastenError(f"the runner returned no output '{name}'", hint="it returned: " + ", ".join(result))
        array = np.asarray(result[name])
        if array.ndim == 0 or array.shape[0] != size:
            raise HastenError(
                f"output '{name}' has shape {list(array.shape)} for a batch of {size}",
                hint="evaluate needs outputs with the batch on axis 0",
            )
        parts.append(_mask_padding(array, feed.get("attention_mask")))
        if progress is not None:
            progress("evaluating", (start + size) / n)
    return _stack(parts)


def evaluate(runner: "Runner", dataset: "Dataset", metric: str = "accuracy", *, baseline: Baseline = None,
             output: str | None = None, batch_size: int = 32, n_boot: int = 1000, seed: int = 0) -> Quality:
    """Score ``runner`` on ``dataset`` with ``metric``: against the labels (task metrics such as
    accuracy) or against ``baseline`` (a Runner run on the same data, or its collected outputs)."""
    return evaluate_scores(runner, dataset, metric, baseline=baseline, output=output, batch_size=batch_size,
                           n_boot=n_boot, seed=seed)[0]


def evaluate_scores(runner: "Runner", dataset: "Dataset", metric: str = "accuracy", *, baseline: Baseline = None,
                    output: str | None = None, batch_size: int = 32, n_boot: int = 1000,
                    seed: int = 0) -> tuple[Quality, np.ndarray]:
    """Like `evaluate`, and also the per-example scores (for paired comparisons with
    `hasten.verify.paired_drop`). A metric that returns one scalar gives a one-element array."""
    m = get_metric(metric)
    _check_target_available(m, dataset, baseline)
    outputs = collect_outputs(runner, dataset, output, batch_size)
    target = dataset.labels if m.needs_labels else _reference(baseline, dataset, output, batch_size)
    scores = m.fn(outputs, target)
    return summarize(m, scores, len(dataset), n_boot, seed), np.atleast_1d(scores)


def summarize(metric: Metric, scores: np.ndarray, n: int, n_boot: int = 1000, seed: int = 0) -> Quality:
    """The Quality of per-example ``scores`` (or of one scalar score, then without a CI)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 0:
        value = float(scores)
        return Quality(metric.name, value, value, value, n, metric.higher_is_better)
    lo, hi = bootstrap_ci(scores, n_boot, seed)
    if metric.higher_is_better:
        extra = {"min": float(scores.min()), "p05": float(np.percentile(scores, 5))}
    else:
        extra = {"max": float(scores.max()), "p95": float(np.percentile(scores, 95))}
    return Quality(metric.name, float(scores.mean()), lo, hi, n, metric.higher_is_better, extra)


def perfect(metric_name: str, n: int = 0) -> Quality:
    """The baseline's own score on a fidelity metric (cosine 1, nn_agreement 1, errors 0), exact."""
    m = get_metric(metric_name)
    if m.perfect is None:
        raise HastenError(
            f"metric '{metric_name}' has no perfect score: it compares with labels",
            hint="evaluate the baseline model with it too, e.g. evaluate(baseline_runner, dataset, metric)",
        )
    return Quality(m.name, m.perfect, m.perfect, m.perfect, n, m.higher_is_better)


def bootstrap_ci(per_example: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 stat: Callable[..., np.ndarray] = np.mean) -> tuple[float, float]:
    """95 % percentile-bootstrap CI of ``stat`` (which must take ``axis=``) over the examples,
    resampled with replacement ``n_boot`` times; the same seed gives the same interval."""
    x = np.asarray(per_example, dtype=np.float64).ravel()
    if x.size == 0:
        raise HastenError("cannot bootstrap zero examples")
    if n_boot < 1:
        raise HastenError(f"n_boot must be at least 1, got {n_boot}")
    if x.size == 1:
        v = float(stat(x))
        return v, v
    rng = np.random.default_rng(seed)
    rows = max(_BOOT_CHUNK // x.size, 1)
    stats = [stat(x[rng.integers(0, x.size, (min(rows, n_boot - i), x.size))], axis=1)
             for i in range(0, n_boot, rows)]
    lo, hi = np.percentile(np.concatenate(stats), [2.5, 97.5])
    return float(lo), float(hi)


def _output_name(runner: "Runner", output: str | None) -> str:
    names = [spec.name for spec in getattr(runner, "outputs", ())]
    if output is None:
        if not names:
            raise HastenError("the runner declares no outputs", hint="pass output='name' explicitly")
        return names[0]
    if names and output not in names:
        raise HastenError(f"the model has no output '{output}'", hint="its outputs are: " + ", ".join(names))
    return output


def _check_target_available(m: Metric, dataset: "Dataset", baseline: Baseline) -> None:
    fidelity = [k for k, v in builtin_metrics().items() if not v.needs_labels]
    if m.needs_labels and dataset.labels is None:
        raise HastenError(
            f"metric '{m.name}' needs labels, but dataset '{dataset.name}' has none",
            hint="add a 'labels' array to the data set, or compare with the baseline using a metric that "
                 "needs no labels: " + ", ".join(fidelity),
        )
    if not m.needs_labels and baseline is None:
        raise HastenError(
            f"metric '{m.name}' compares with the baseline model's outputs, but no baseline was given",
            hint="pass baseline=<the original model's Runner> or its outputs from collect_outputs()",
        )


def _reference(baseline: Baseline, dataset: "Dataset", output: str | None, batch_size: int) -> np.ndarray:
    if isinstance(baseline, np.ndarray):
        if baseline.ndim == 0 or len(baseline) != len(dataset):
            raise HastenError(
                f"baseline outputs have shape {list(baseline.shape)} but the data set has {len(dataset)} examples",
                hint="collect them with collect_outputs(baseline_runner, dataset) on the same data",
            )
        return baseline
    return collect_outputs(baseline, dataset, output, batch_size)  # type: ignore[arg-type]


def _mask_padding(array: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    # Outputs at padded token positions depend on how examples were batched; zero them.
    if mask is None or mask.ndim != 2 or array.ndim < 2 or array.shape[:2] != mask.shape:
        return array
    keep = (mask != 0).reshape(mask.shape + (1,) * (array.ndim - 2))
    return np.where(keep, array, np.zeros((), dtype=array.dtype))


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    shapes = {p.shape[1:] for p in parts}
    if len(shapes) == 1:
        return np.concatenate(parts)
    ranks = {len(s) for s in shapes}
    if len(ranks) != 1:
        raise HastenError(f"batches returned outputs of different ranks: {sorted(shapes)}")
    target = tuple(max(dims) for dims in zip(*shapes))
    out = np.zeros((sum(len(p) for p in parts),) + target, dtype=np.result_type(*parts))
    row = 0
    for p in parts:
        out[(slice(row, row + len(p)),) + tuple(slice(0, d) for d in p.shape[1:])] = p
        row += len(p)
    return out
