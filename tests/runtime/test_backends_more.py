"""OpenVINO, torch.compile and torch CUDA backends agree with ONNX Runtime on the same model."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import hasten
from hasten.core import HastenError
from hasten.runtime import BackendConfig, available_backends

torch = pytest.importorskip("torch")
AVAILABLE = {s.name for s in available_backends()}


@pytest.fixture(scope="module")
def mlp_model(tmp_path_factory):  # noqa: ANN001, ANN201
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 4)).eval()
    return hasten.load_model(module, example_input=torch.randn(2, 8), path=tmp_path_factory.mktemp("m") / "mlp.onnx")


def _feed() -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)}


def _reference(model) -> np.ndarray:  # noqa: ANN001
    return hasten.compile(model, "ort-cpu", BackendConfig(threads=1)).run(_feed())["output"]


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_openvino_fp32_matches_onnxruntime(mlp_model) -> None:
    runner = hasten.compile(mlp_model, "openvino", BackendConfig(threads=1))
    assert runner.info.extra["precision"] == "fp32" and "float32" in runner.info.extra["ov_inference_precision"]
    np.testing.assert_allclose(runner.run(_feed())["output"], _reference(mlp_model), atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_openvino_static_compiles_once_per_shape_and_keeps_the_last_few(mlp_model, monkeypatch) -> None:
    import hasten.runtime.openvino as ovr

    monkeypatch.setattr(ovr, "STATIC_SHAPES_KEPT", 2)
    runner = hasten.compile(mlp_model, "openvino-static", BackendConfig(threads=1))
    ref = hasten.compile(mlp_model, "ort-cpu", BackendConfig(threads=1))
    x = np.random.default_rng(1).standard_normal((7, 8)).astype(np.float32)
    for rows in (5, 5, 3, 7, 3):  # 5 compiled, then reused; 3 compiled; 7 pushes out 5 (least recent); 3 reused
        got = runner.run({"input": x[:rows]})["output"]
        np.testing.assert_allclose(got, ref.run({"input": x[:rows]})["output"], atol=1e-5)
        assert got.shape == (rows, 4)
    assert runner.static_compiles == 3 and [dict(k)["input"] for k in runner._by_shape] == [(7, 8), (3, 8)]
    runner.run({"input": x[:5]})  # 5 was pushed out: compiled again
    assert runner.static_compiles == 4


@pytest.mark.skipif("openvino-bf16" in AVAILABLE or importlib.util.find_spec("openvino") is None,
                    reason="checks the no-BF16 answer")
def test_openvino_bf16_refused_without_cpu_support(mlp_model) -> None:
    with pytest.raises(HastenError, match="no BF16"):
        hasten.compile(mlp_model, "openvino-bf16")


@pytest.mark.slow
def test_torch_compile_matches_and_records_compile_as_first_run(mlp_model) -> None:
    runner = hasten.compile(mlp_model, "torch-compile", BackendConfig(threads=1))
    np.testing.assert_allclose(runner.run(_feed())["output"], _reference(mlp_model), atol=1e-5)
    assert "inductor" in runner.info.extra["compile"]


def test_cuda_backends_are_unavailable_without_a_gpu() -> None:
    if hasten.runtime.registry.gpu_present():
        pytest.skip("a GPU is present")
    statuses = {s.name: s for s in available_backends(include_unavailable=True)}
    for name in ("torch-cuda", "torch-cuda-fp16", "torch-cuda-bf16", "torch-cuda-graphs"):
        assert not statuses[name].available and "GPU" in statuses[name].reason


@pytest.mark.gpu
@pytest.mark.parametrize(("backend", "atol"), [("torch-cuda", 1e-3), ("torch-cuda-fp16", 2e-2),
                                               ("torch-cuda-bf16", 1e-1), ("torch-cuda-graphs", 2e-2)])
def test_torch_cuda_variants_match(mlp_model, backend, atol) -> None:
    runner = hasten.compile(mlp_model, backend)
    for _ in range(2):  # the second run of a shape replays the captured graph
        np.testing.assert_allclose(runner.run(_feed())["output"], _reference(mlp_model), atol=atol)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_openvino_static_reuses_the_first_compile_for_a_model_that_is_static_already(tmp_path) -> None:  # noqa: ANN001
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "fixed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "fixed.onnx"))
    runner = hasten.compile(hasten.load_model(tmp_path / "fixed.onnx"), "openvino-static", BackendConfig(threads=1))
    x = np.array([[-1, 2, -3], [4, -5, 6]], dtype=np.float32)
    np.testing.assert_array_equal(runner.run({"x": x})["y"], np.maximum(x, 0))
    assert runner.static_compiles == 0
