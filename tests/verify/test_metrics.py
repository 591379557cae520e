from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from hasten.core import HastenError
from hasten.verify import get_metric
from hasten.verify.metrics import accuracy, builtin_metrics, cosine, max_abs, mean_abs, nn_agreement


def test_accuracy_is_argmax_over_the_last_axis() -> None:
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    np.testing.assert_array_equal(accuracy(logits, np.array([1, 1, 1])), [1.0, 0.0, 1.0])


def test_accuracy_averages_extra_axes_and_refuses_misfit_labels() -> None:
    tokens = np.zeros((1, 4, 3))
    tokens[0, :, 2] = 1.0  # every token predicts class 2
    np.testing.assert_array_equal(accuracy(tokens, np.array([[2, 2, 0, 1]])), [0.5])
    with pytest.raises(HastenError, match="do not fit labels"):
        accuracy(np.zeros((3, 2)), np.zeros(4))


def test_cosine_of_known_vectors() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosine(a, b), [1.0, 1 / np.sqrt(2), -1.0, 1.0, 0.0])


def test_cosine_flattens_each_example() -> None:
    a = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    np.testing.assert_allclose(cosine(a, 3 * a), [1.0, 1.0])


def test_errors_per_example() -> None:
    a = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    b = np.array([[1.0, 2.5, 1.0], [0.0, 0.0, -0.3]])
    np.testing.assert_allclose(max_abs(a, b), [2.0, 0.3])
    np.testing.assert_allclose(mean_abs(a, b), [2.5 / 3, 0.1])


def test_fidelity_metrics_refuse_mismatched_shapes() -> None:
    with pytest.raises(HastenError, match=r"shape \[2, 3\].*\[2, 4\]"):
        cosine(np.zeros((2, 3)), np.zeros((2, 4)))


def _at_angles(*degrees: float) -> np.ndarray:
    rad = np.deg2rad(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def test_nn_agreement_detects_a_flipped_neighbour() -> None:
    base = _at_angles(0, 10, 25, 90)  # nearest neighbours: 1, 0, 1, 2
    variant = _at_angles(0, 10, 18, 90)  # example 2 moves: example 1's neighbour becomes 2
    np.testing.assert_array_equal(nn_agreement(base, base), [1, 1, 1, 1])
    np.testing.assert_array_equal(nn_agreement(variant, base), [1, 0, 1, 1])
    np.testing.assert_array_equal(nn_agreement(3 * variant, variant), [1, 1, 1, 1])  # scale-free


def test_nn_agreement_needs_two_examples() -> None:
    with pytest.raises(HastenError, match="at least 2"):
        nn_agreement(np.ones((1, 3)), np.ones((1, 3)))


def test_get_metric_builtins_and_directions() -> None:
    assert get_metric("accuracy").needs_labels and get_metric("accuracy").higher_is_better
    assert not get_metric("max_abs").higher_is_better and get_metric("max_abs").perfect == 0.0
    assert get_metric("cosine").perfect == 1.0 and not get_metric("cosine").needs_labels
    builtin_metrics().clear()  # a fresh dict each call: no shared registry to corrupt
    assert "accuracy" in builtin_metrics()


def test_unknown_metric_lists_the_known_ones() -> None:
    with pytest.raises(HastenError, match="unknown metric 'f1'") as err:
        get_metric("f1")
    assert "accuracy" in str(err.value) and "module:function" in str(err.value)


def _write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_user_metric_from_a_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_module(tmp_path, monkeypatch, "my_metrics", (
        "import numpy as np\n"
        "def top2(outputs, labels):\n"
        "    return (np.argsort(-outputs, axis=1)[:, :2] == labels[:, None]).any(axis=1)\n"
        "def spread(outputs, reference):\n"
        "    return float(np.abs(outputs - reference).std())\n"
        "spread.needs_labels = False\n"
        "spread.higher_is_better = False\n"
    ))
    m = get_metric("my_metrics:top2")
    assert m.name == "my_metrics:top2" and m.needs_labels and m.higher_is_better
    scores = m.fn(np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]]), np.array([1, 0]))
    np.testing.assert_array_equal(scores, [1.0, 0.0])
    spread = get_metric("my_metrics:spread")
    assert not spread.needs_labels and not spread.higher_is_better
    assert spread.fn(np.zeros((3, 2)), np.zeros((3, 2))).ndim == 0


def test_bad_user_metrics_give_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_module(tmp_path, monkeypatch, "bad_metrics", (
        "import numpy as np\n"
        "def wrong_shape(outputs, labels):\n"
        "    return np.zeros((len(outputs), 2))\n"
        "not_a_function = 3\n"
    ))
    with pytest.raises(HastenError, match="cannot import module 'no_such_module_xyz'"):
        get_metric("no_such_module_xyz:f")
    with pytest.raises(HastenError, match="'missing' in module 'bad_metrics' is not found"):
        get_metric("bad_metrics:missing")
    with pytest.raises(HastenError, match="is a int, not a function"):
        get_metric("bad_metrics:not_a_function")
    with pytest.raises(HastenError, match=r"returned shape \[4, 2\] for 4 examples"):
        get_metric("bad_metrics:wrong_shape").fn(np.zeros((4, 3)), np.zeros(4))
