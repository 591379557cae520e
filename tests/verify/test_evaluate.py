from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from hasten.core import HastenError, TensorSpec
from hasten.models.dataset import Dataset
from hasten.verify import bootstrap_ci, collect_outputs, evaluate, evaluate_scores, perfect


class LinearRunner:
    """y = x @ w; records every batch it saw."""

    def __init__(self, w: np.ndarray, noise: float = 0.0, seed: int = 0) -> None:
        self.w, self.noise, self.rng = w, noise, np.random.default_rng(seed)
        self.inputs = (TensorSpec("x", "float32", (-1, w.shape[0])),)
        self.outputs = (TensorSpec("y", "float32", (-1, w.shape[1])), TensorSpec("x_copy", "float32", (-1, w.shape[0])))
        self.seen: list[np.ndarray] = []

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed["x"]
        self.seen.append(x)
        y = x @ self.w + self.noise * self.rng.standard_normal((len(x), self.w.shape[1]))
        return {"y": y.astype(np.float32), "x_copy": x.copy()}


class TokenRunner:
    """Token-level output [B, T, 2]; padded positions get junk that depends on the batch."""

    outputs = (TensorSpec("hidden", "float32", (-1, -1, 2)),)

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = feed["input_ids"].astype(np.float32)
        hidden = np.stack([ids, ids * 2], axis=-1)
        hidden[feed["attention_mask"] == 0] = len(ids)  # junk: the batch size
        return {"hidden": hidden}


def data(n: int = 10, dim: int = 3, classes: int = 2, labels: bool = True, seed: int = 0) -> tuple[Dataset, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    w = rng.standard_normal((dim, classes)).astype(np.float32)
    y = (x @ w).argmax(axis=1) if labels else None
    return Dataset({"x": x}, y), w


def test_collect_covers_each_example_once_when_size_is_not_a_multiple_of_the_batch() -> None:
    dataset, w = data(n=10)
    runner = LinearRunner(w)
    out = collect_outputs(runner, dataset, output="x_copy", batch_size=4)
    assert [len(b) for b in runner.seen] == [4, 4, 2]
    np.testing.assert_array_equal(out, dataset.inputs["x"])
    np.testing.assert_allclose(collect_outputs(runner, dataset, batch_size=3), dataset.inputs["x"] @ w, rtol=1e-6)


def test_collect_reports_progress_and_refuses_unknown_outputs() -> None:
    dataset, w = data(n=5)
    seen: list[tuple[str, float]] = []
    collect_outputs(LinearRunner(w), dataset, batch_size=2, progress=lambda label, f: seen.append((label, f)))
    assert [f for _, f in seen] == [0.4, 0.8, 1.0]
    with pytest.raises(HastenError, match="no output 'logits'") as err:
        collect_outputs(LinearRunner(w), dataset, output="logits")
    assert "y, x_copy" in str(err.value)


def test_token_outputs_do_not_depend_on_batching() -> None:
    ids = np.array([[5, 6, 7, 0], [8, 9, 0, 0], [1, 2, 3, 4], [3, 0, 0, 0], [2, 2, 0, 0]], np.int64)
    dataset = Dataset({"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)})
    one = collect_outputs(TokenRunner(), dataset, batch_size=1)
    two = collect_outputs(TokenRunner(), dataset, batch_size=2)
    assert one.shape == two.shape == (5, 4, 2)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one[1, :, 1], [16, 18, 0, 0])


def test_accuracy_of_a_perfect_and_a_noisy_model() -> None:
    dataset, w = data(n=50)
    q = evaluate(LinearRunner(w), dataset, "accuracy", batch_size=7)
    assert (q.metric, q.value, q.ci_low, q.ci_high, q.n, q.higher_is_better) == ("accuracy", 1.0, 1.0, 1.0, 50, True)
    noisy = evaluate(LinearRunner(w, noise=2.0), dataset, "accuracy")
    assert noisy.ci_low <= noisy.value <= noisy.ci_high and noisy.value < 1.0


def test_fidelity_against_a_runner_or_its_outputs() -> None:
    dataset, w = data(n=20)
    base = LinearRunner(w)
    same = evaluate(LinearRunner(w), dataset, "cosine", baseline=base)
    assert same.value == pytest.approx(1.0) and same.extra["min"] == pytest.approx(1.0)
    ref = collect_outputs(base, dataset)
    err, scores = evaluate_scores(LinearRunner(w, noise=0.1), dataset, "max_abs", baseline=ref)
    assert not err.higher_is_better and err.value > 0 and set(err.extra) == {"max", "p95"}
    assert scores.shape == (20,) and err.extra["max"] == pytest.approx(scores.max())


def test_missing_labels_or_baseline_are_clear_errors() -> None:
    dataset, w = data(labels=False)
    with pytest.raises(HastenError, match="needs labels") as err:
        evaluate(LinearRunner(w), dataset, "accuracy")
    assert "cosine" in str(err.value) and "nn_agreement" in str(err.value)
    with pytest.raises(HastenError, match="no baseline was given"):
        evaluate(LinearRunner(w), dataset, "cosine")
    with pytest.raises(HastenError, match="unknown metric"):
        evaluate(LinearRunner(w), dataset, "bleu")
    with pytest.raises(HastenError, match="data set has 10 examples"):
        evaluate(LinearRunner(w), dataset, "cosine", baseline=np.zeros((3, 2)))


def test_scalar_user_metric_has_no_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "scalar_metric.py").write_text("def total(outputs, labels):\n    return 0.25\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "scalar_metric", raising=False)
    dataset, w = data(n=6)
    q, scores = evaluate_scores(LinearRunner(w), dataset, "scalar_metric:total")
    assert (q.value, q.ci_low, q.ci_high, q.n) == (0.25, 0.25, 0.25, 6)
    assert scores.shape == (1,)


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.random(50), rng.random(5000)
    lo, hi = bootstrap_ci(small)
    assert lo < small.mean() < hi
    lo2, hi2 = bootstrap_ci(large)
    assert lo2 < large.mean() < hi2 and (hi2 - lo2) < (hi - lo) / 5


def test_bootstrap_ci_is_reproducible_with_a_seed() -> None:
    x = np.random.default_rng(2).random(100)
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    assert bootstrap_ci(x, seed=7) != bootstrap_ci(x, seed=8)
    assert bootstrap_ci(np.array([0.5])) == (0.5, 0.5)
    with pytest.raises(HastenError, match="zero examples"):
        bootstrap_ci(np.array([]))


def test_perfect_scores_of_fidelity_metrics() -> None:
    assert perfect("cosine").value == 1.0 and perfect("nn_agreement", n=5).n == 5
    assert perfect("max_abs").value == 0.0 and not perfect("mean_abs").higher_is_better
    with pytest.raises(HastenError, match="no perfect score"):
        perfect("accuracy")
