"""profile(): attribution adds up, verdicts name the dominant op, fallback is caught."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

import hasten
from hasten.cli import app
from hasten.core import HastenError
from hasten.measure.advice import advise
from hasten.measure.profile import ProfileConfig, _audit, profile
from hasten.measure.roofline import Roofs, classify
from hasten.models import synthetic_dataset

ROOFS = Roofs(fp32_gflops=100.0, int8_gops=400.0, mem_gbps=10.0)


def _check_attribution(result) -> None:
    """Σ node time accounts for the unprofiled wall time minus the reported overhead. The 10 %
    acceptance figure is measured on a quiet machine by benchmarks/bench_profile.py; here the
    bound is loose enough for a shared CI machine yet catches lost or double-counted nodes."""
    assert result.node_sum_us == pytest.approx(result.wall_us - result.overhead_us, rel=0.30)
    assert sum(result.shares.values()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_digits_cnn_batch_256() -> None:
    model = hasten.load_model("digits-cnn")
    result = profile(model, hasten.load_dataset("digits-cnn", model), ProfileConfig(batch_size=256, runs=20, threads=1))
    _check_attribution(result)
    assert result.input_shapes == {"input": [256, 1, 8, 8]}
    assert result.op_types[0].op_type == "Conv" and result.op_types[0].bound == "compute"
    assert "Conv" in result.advice[1]
    conv_flops = sum(n.flops for n in result.nodes if n.op_type == "Conv")
    # hand count: conv1 2*256*32*64*9 + bias, conv2 2*256*64*64*(32*9) + bias (nchwc fuses ReLU: +1/elem)
    expected = 2 * 256 * 32 * 64 * 9 + 2 * 256 * 64 * 64 * 32 * 9
    assert conv_flops == pytest.approx(expected, rel=0.02)


@pytest.mark.slow
def test_minilm_batch_8_seq_128() -> None:
    model = hasten.load_model("minilm")
    data = hasten.load_dataset("minilm", model)
    result = profile(model, data, ProfileConfig(batch_size=8, seq_len=128, runs=10, warmup_runs=2, threads=1))
    _check_attribution(result)
    assert result.op_types[0].op_type == "MatMul"
    assert "MatMul" in result.advice[1] and "compute-bound" in result.advice[1]
    assert not result.fallback_nodes


def test_cli_profile_json_and_plot(linear_onnx, tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["profile", str(linear_onnx[0]), "--batch-size", "64", "--runs", "5",
                                   "--json", str(tmp_path / "p.json"), "--plot", str(tmp_path / "r.png")])
    assert out.exit_code == 0, out.output
    assert "Time by op type" in out.stdout and "Gemm" in out.stdout
    data = json.loads((tmp_path / "p.json").read_text())
    gemm = next(n for n in data["nodes"] if n["op_type"] == "Gemm")  # ORT fuses MatMul + Add into Gemm
    assert gemm["flops"] == 2 * 64 * 4 * 3 + 64 * 3
    assert data["input_shapes"] == {"x": [64, 4]}
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _verdicts(provider: str):
    return (classify("a", "MatMul", provider, 100.0, 10**6, 10**5, False, ROOFS),
            classify("b", "Add", "CPUExecutionProvider", 10.0, 10, 100, False, ROOFS))


def test_placement_audit_flags_nodes_that_fell_back() -> None:
    config = ProfileConfig(backend="ort-openvino")
    with pytest.raises(HastenError) as err:
        _audit(_verdicts("OpenVINOExecutionProvider"), config)
    assert "1 of 2 nodes did not run on OpenVINOExecutionProvider" in str(err.value)
    assert "b (Add) on CPUExecutionProvider" in str(err.value)
    allowed = _audit(_verdicts("OpenVINOExecutionProvider"), replace(config, allow_fallback=True))
    assert allowed == ("b (Add) on CPUExecutionProvider",)
    assert _audit(_verdicts("CPUExecutionProvider"), ProfileConfig()) == ()


def test_runner_refuses_a_session_that_fell_back_to_cpu(linear_onnx, monkeypatch) -> None:
    import onnxruntime as ort

    real = ort.InferenceSession

    class FellBack(real):  # a CUDA request that ONNX Runtime quietly served on the CPU
        def __init__(self, path, opts, providers):  # noqa: ANN001
            super().__init__(path, opts, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", FellBack)
    model = hasten.load_model(linear_onnx[0])
    with pytest.raises(HastenError, match="fell back from CUDAExecutionProvider to CPUExecutionProvider"):
        hasten.compile(model, "ort-cuda")
    runner = hasten.compile(model, "ort-cuda", hasten.BackendConfig(allow_fallback=True))
    assert runner.info.device == "cpu"


class _Result:
    def __init__(self, shares, op_types, overhead_us=5.0) -> None:  # noqa: ANN001
        self.shares, self.op_types, self.overhead_us = shares, op_types, overhead_us
        self.wall_us, self.fallback_nodes = 1000.0, ()


def _op(op_type, bound, frac, share=0.7):  # noqa: ANN001, ANN202
    from hasten.measure.profile import OpTypeShare

    return OpTypeShare(op_type, 3, 700.0, share, 10**9, bound, frac)


def test_advice_follows_the_numbers() -> None:
    shares = {"compute": 0.7, "memory": 0.1, "overhead_nodes": 0.05, "framework": 0.15}
    lines = advise(_Result(shares, (_op("MatMul", "compute", 0.31),)), ROOFS)
    assert "70% of the time is in MatMul" in lines[1] and "31% of the compute peak" in lines[1]
    assert "INT8 quantization is the lever" in lines[2] and "4.0×" in lines[2]
    # a CPU whose INT8 peak is no better: no INT8 advice
    flat = advise(_Result(shares, (_op("MatMul", "compute", 0.9),)), Roofs(100.0, 110.0, 10.0))
    assert not any("INT8" in line for line in flat) and "fewer FLOPs" in flat[2]
    mem = advise(_Result({"compute": 0.1, "memory": 0.6, "overhead_nodes": 0.0, "framework": 0.3},
                         (_op("Softmax", "memory", 0.2),)), ROOFS)
    assert any("memory-bound" in line for line in mem) and any("batch requests" in line for line in mem)


@pytest.mark.gpu
@pytest.mark.skipif("ort-cuda" not in [s.name for s in hasten.available_backends()], reason="no CUDA EP")
def test_profile_on_cuda(linear_onnx) -> None:
    model = hasten.load_model(linear_onnx[0])
    result = profile(model, synthetic_dataset(model.inputs), ProfileConfig(backend="ort-cuda", batch_size=64, runs=5))
    assert result.backend == "ort-cuda"


def _skip_ln_onnx(path: Path, hidden: int = 16) -> Path:
    """MatMul + bias + residual Add + LayerNormalization: ONNX Runtime fuses it into SkipLayerNormalization."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((hidden, hidden)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "b"),
             numpy_helper.from_array(np.ones(hidden, np.float32), "g"),
             numpy_helper.from_array(np.zeros(hidden, np.float32), "beta")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Add", ["a", "x"], ["r"]),
             helper.make_node("LayerNormalization", ["r", "g", "beta"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, "skip_ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, hidden])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, hidden])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_disabled_fusion_is_not_applied_and_the_answer_is_the_same(tmp_path: Path) -> None:
    import numpy as np

    from hasten.runtime import BackendConfig

    model = hasten.load_model(_skip_ln_onnx(tmp_path / "sln.onnx"))
    data = synthetic_dataset(model.inputs)
    fused = profile(model, data, ProfileConfig(batch_size=8, runs=3, warmup_runs=1, threads=1))
    plain = profile(model, data, ProfileConfig(batch_size=8, runs=3, warmup_runs=1, threads=1,
                                               disabled_optimizers=("SkipLayerNormFusion",)))
    assert "SkipLayerNormalization" in {o.op_type for o in fused.op_types}
    assert {"SkipLayerNormalization"}.isdisjoint(o.op_type for o in plain.op_types)
    assert {"Add", "LayerNormalization"} <= {o.op_type for o in plain.op_types}
    assert fused.extra["source_op_types"] == ["Add", "LayerNormalization", "MatMul"]
    feed = data.batch(0, 8)
    a = hasten.compile(model, "ort-cpu", BackendConfig(threads=1)).run(feed)["y"]
    runner = hasten.compile(model, "ort-cpu", BackendConfig(threads=1, disabled_optimizers=("SkipLayerNormFusion",)))
    np.testing.assert_allclose(runner.run(feed)["y"], a, atol=1e-5)
    assert runner.info.extra["disabled_optimizers"] == ["SkipLayerNormFusion"]
    with pytest.raises(HastenError, match="unknown ONNX Runtime optimizer.*SkipLayerNorm\\b") as info:
        BackendConfig(disabled_optimizers=("SkipLayerNorm",))
    assert "SkipLayerNormFusion" in info.value.hint
    with pytest.raises(HastenError, match="unknown ONNX Runtime optimizer"):
        ProfileConfig(disabled_optimizers=("NoSuchFusion",))


def test_advice_points_at_a_slow_fusion_made_at_load_time() -> None:
    shares = {"compute": 0.6, "memory": 0.35, "overhead_nodes": 0.0, "framework": 0.05}
    ops = (_op("DynamicQuantizeMatMul", "compute", 0.9, 0.6), _op("SkipLayerNormalization", "memory", 0.09, 0.12))
    made_by_ort = _Result(shares, ops)
    made_by_ort.extra = {"source_op_types": ["Add", "DynamicQuantizeLinear", "LayerNormalization", "MatMulInteger"]}
    lines = advise(made_by_ort, ROOFS)
    assert any("--ort-disable SkipLayerNormFusion" in line and "9% of the memory bandwidth" in line for line in lines)
    assert "INT8 already" in lines[2] and not any("INT8 quantization is the lever" in line for line in lines)
    in_the_file = _Result(shares, ops)  # the model file has the fused op itself: turning ORT's fusion off changes nothing
    in_the_file.extra = {"source_op_types": ["DynamicQuantizeMatMul", "SkipLayerNormalization"]}
    assert not any("--ort-disable" in line for line in advise(in_the_file, ROOFS))
    fast = _Result(shares, (ops[0], _op("SkipLayerNormalization", "memory", 0.6, 0.12)))
    fast.extra = made_by_ort.extra
    assert not any("--ort-disable" in line for line in advise(fast, ROOFS))
