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
