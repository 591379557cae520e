"""Shared fixtures: a private cache folder and tiny models built in the test."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from hasten.runtime.registry import gpu_present


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Examples are exported/trained into a fresh cache, as on a new machine."""
    os.environ["HASTEN_CACHE"] = str(tmp_path_factory.mktemp("hasten-cache"))


@pytest.fixture(scope="session", autouse=True)
def _private_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Outputs written to a temporary folder when no path is given (`prune`, `quantize`, ...) land
    under pytest's own folder, which pytest clears, instead of piling up in the machine's /tmp."""
    folder = str(tmp_path_factory.mktemp("tmp"))
    tempfile.tempdir = folder
    os.environ["TMPDIR"] = folder  # and the servers and CLIs that tests start as processes


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if gpu_present():
        return
    skip = pytest.mark.skip(reason="no NVIDIA GPU on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def make_linear_onnx(path: Path, in_dim: int = 4, out_dim: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """y = x @ W + b with a dynamic batch axis; returns (W, b)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((in_dim, out_dim)).astype(np.float32)
    b = rng.standard_normal(out_dim).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_dim])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return w, b


@pytest.fixture
def linear_onnx(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    path = tmp_path / "linear.onnx"
    w, b = make_linear_onnx(path)
    return path, w, b
