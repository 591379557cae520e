from __future__ import annotations

import numpy as np
import pytest

import hasten
from hasten.core import HastenError
from hasten.runtime import BackendConfig, available_backends, backend_names, backends_for
from hasten.runtime.registry import gpu_present


def test_cpu_backend_is_always_available() -> None:
    names = [s.name for s in available_backends()]
    assert "ort-cpu" in names
    every = available_backends(include_unavailable=True)
    assert [s.name for s in every] == backend_names()
    assert all(s.reason for s in every if not s.available)  # each missing one says why


def test_torch_backends_only_for_torch_models(linear_onnx) -> None:
    assert "torch-eager" not in backends_for(hasten.load_model(linear_onnx[0]))


def test_unknown_backend() -> None:
    with pytest.raises(HastenError, match="unknown backend 'tensorflow'"):
        hasten.compile(object(), "tensorflow")


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_are_set_and_reported(linear_onnx, threads) -> None:
    runner = hasten.compile(hasten.load_model(linear_onnx[0]), "ort-cpu", BackendConfig(threads=threads))
    assert runner.info.threads == threads
    assert runner.info.cold_start_s > 0
    assert runner.info.extra["spinning"] is False


def test_bad_backend_config() -> None:
    with pytest.raises(HastenError, match="threads must be a positive integer"):
        BackendConfig(threads=0)
    with pytest.raises(HastenError, match="unknown graph optimisation level"):
        BackendConfig(graph_optimization="max")


@pytest.mark.skipif(gpu_present(), reason="checks the no-GPU answer")
def test_gpu_backend_without_gpu_is_a_clear_error(linear_onnx) -> None:
    with pytest.raises(HastenError, match="CUDAExecutionProvider"):
        hasten.compile(hasten.load_model(linear_onnx[0]), "ort-cuda")


@pytest.mark.gpu
@pytest.mark.skipif("ort-cuda" not in [s.name for s in available_backends()], reason="onnxruntime has no CUDA EP here")
def test_ort_cuda_runs_on_the_gpu(linear_onnx) -> None:
    path, w, b = linear_onnx
    runner = hasten.compile(hasten.load_model(path), "ort-cuda")
    assert runner.info.providers[0] == "CUDAExecutionProvider" and runner.info.device == "cuda"
    x = np.ones((3, 4), np.float32)
    np.testing.assert_allclose(runner.run({"x": x})["y"], x @ w + b, rtol=1e-4)
