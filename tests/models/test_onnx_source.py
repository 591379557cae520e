"""Loading ONNX files: specs from the graph, and a clear error for each bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hasten
from hasten.core import HastenError, TensorSpec


def test_specs_are_read_from_the_graph(linear_onnx) -> None:
    path, _, _ = linear_onnx
    model = hasten.load_model(path)
    assert model.inputs == (TensorSpec("x", "float32", (-1, 4)),)
    assert model.outputs == (TensorSpec("y", "float32", (-1, 3)),)
    assert model.info.source == "onnx" and model.name == "linear"
    assert model.info.extra["opset"] == 17
    assert not model.has_torch


def test_runs_and_matches_numpy(linear_onnx) -> None:
    path, w, b = linear_onnx
    runner = hasten.compile(hasten.load_model(path), "ort-cpu", hasten.BackendConfig(threads=1))
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(runner.run({"x": x})["y"], x @ w + b, rtol=1e-5, atol=1e-5)
    assert runner.info.threads == 1 and runner.info.providers[0] == "CPUExecutionProvider"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HastenError, match="model file not found"):
        hasten.load_model(tmp_path / "nope.onnx")


def test_unknown_name_lists_examples() -> None:
    with pytest.raises(HastenError, match="neither a file nor a built-in example") as err:
        hasten.load_model("resnet-9000")
    assert "minilm" in str(err.value)


def test_file_that_is_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_text("this is not a protobuf, just some words\n" * 50)
    with pytest.raises(HastenError, match="is not an ONNX model"):
        hasten.load_model(bad)


def test_empty_file_is_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "empty.onnx"
    bad.write_bytes(b"")
    with pytest.raises(HastenError, match="is not an ONNX model"):
        hasten.load_model(bad)


def test_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(HastenError, match="is a folder"):
        hasten.load_model(tmp_path)


def test_wrong_type_of_source() -> None:
    with pytest.raises(HastenError, match="cannot load a model from a int"):
        hasten.load_model(42)


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ({"X": np.zeros((1, 4), np.float32)}, "missing x; unknown X"),
        ({"x": np.zeros((1, 4), np.float64)}, "expected dtype float32, got float64"),
        ({"x": np.zeros(4, np.float32)}, "expected rank 2"),
        ({"x": np.zeros((1, 5), np.float32)}, "dimension 1 must be 4"),
    ],
)
def test_bad_inputs_at_run_time(linear_onnx, feed, message) -> None:
    runner = hasten.compile(hasten.load_model(linear_onnx[0]), "ort-cpu")
    with pytest.raises(HastenError, match=message):
        runner.run(feed)
