"""The `hasten` command as a user runs it: real output, and a clear message for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from hasten.cli import app

runner = CliRunner()


def hasten(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hasten.cli", *args], capture_output=True, text=True)


def test_backends_lists_each_backend_with_availability() -> None:
    out = runner.invoke(app, ["backends"])
    assert out.exit_code == 0
    assert "ort-cpu" in out.stdout and "torch-eager" in out.stdout and "ort-cuda" in out.stdout


def test_info_shows_specs(linear_onnx) -> None:
    out = runner.invoke(app, ["info", str(linear_onnx[0])])
    assert out.exit_code == 0
    assert "float32" in out.stdout and "[?, 4]" in out.stdout and "[?, 3]" in out.stdout


def test_bench_prints_a_table_and_writes_json(linear_onnx, tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    out = runner.invoke(app, ["bench", str(linear_onnx[0]), "--batch-sizes", "1,4", "--time-budget-s", "0.2",
                              "--threads", "1", "--json", str(out_json)])
    assert out.exit_code == 0, out.output
    assert "p99" in out.stdout and "samples/s" in out.stdout and "cold start" in out.stdout
    data = json.loads(out_json.read_text())["ort-cpu"]
    assert [r["batch_size"] for r in data["results"]] == [1, 4]
    assert data["runner"]["threads"] == 1 and data["runner"]["providers"] == ["CPUExecutionProvider"]
    for r in data["results"]:
        s = r["stats"]
        assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
        assert r["input_shapes"]["x"] == [r["batch_size"], 4]


def test_bench_with_user_data(linear_onnx, tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((10, 4), np.float32))
    out = runner.invoke(app, ["bench", str(linear_onnx[0]), "--data", str(tmp_path / "d.npz"),
                              "--batch-sizes", "2", "--time-budget-s", "0.1"])
    assert out.exit_code == 0, out.output
    assert "d data" in out.stdout


def test_bad_inputs_exit_2_with_a_message(linear_onnx, tmp_path: Path) -> None:
    cases = [
        (["bench", str(tmp_path / "missing.onnx")], "model file not found"),
        (["bench", "not-a-model"], "neither a file nor a built-in example"),
        (["bench", str(linear_onnx[0]), "--batch-sizes", "1,x"], "comma-separated integers"),
        (["bench", str(linear_onnx[0]), "--backend", "tpu"], "unknown backend 'tpu'"),
        (["bench", str(linear_onnx[0]), "--backend", "torch-eager"], "cannot run 'linear'"),
    ]
    for args, message in cases:
        proc = hasten(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert proc.stdout == ""


def test_model_with_a_fixed_batch_dimension(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"])], "fixed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    proc = hasten("bench", str(tmp_path / "fixed.onnx"), "--time-budget-s", "0.1")
    assert proc.returncode == 0, proc.stderr
    assert "fixed batch dimension of 3" in proc.stderr and "3×4" in proc.stdout
    proc = hasten("bench", str(tmp_path / "fixed.onnx"), "--batch-sizes", "1,8")
    assert proc.returncode == 2 and "only takes batches of 3" in proc.stderr


def test_backends_pick_names_the_fastest_with_the_table(tmp_path: Path) -> None:
    torch = __import__("pytest").importorskip("torch")
    import hasten

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    path = tmp_path / "mlp.onnx"
    hasten.load_model(module, example_input=torch.randn(2, 16), path=path)
    out = runner.invoke(app, ["backends", "--pick", str(path), "--batch-size", "4", "--time-budget-s", "0.2",
                              "--threads", "1"])
    assert out.exit_code == 0, out.output
    assert "fastest at batch 4: " in out.stdout and "samples/s" in out.stdout
    assert "ort-cpu" in out.stdout and "openvino" in out.stdout


def test_quantize_refuses_sq_alpha_outside_nncf(linear_onnx, tmp_path: Path) -> None:
    out = hasten("quantize", str(linear_onnx[0]), "--method", "dynamic", "--sq-alpha", "0.5", "-o", str(tmp_path / "q.onnx"))
    assert out.returncode == 2 and "--sq-alpha applies to --method nncf only" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_bench_ort_disable_measures_with_and_without(linear_onnx, tmp_path: Path) -> None:
    out_json = tmp_path / "b.json"
    out = runner.invoke(app, ["bench", str(linear_onnx[0]), "--batch-sizes", "4", "--time-budget-s", "0.2", "--threads", "1",
                              "--ort-disable", "GemmActivationFusion", "--json", str(out_json)])
    assert out.exit_code == 0, out.output
    assert set(json.loads(out_json.read_text())) == {"ort-cpu", "ort-cpu -GemmActivationFusion"}
    bad = hasten("bench", str(linear_onnx[0]), "--ort-disable", "GemmFusion")
    assert bad.returncode == 2 and "unknown ONNX Runtime optimizer(s) to disable: GemmFusion" in bad.stderr


def test_help_shows_what_each_default_is() -> None:
    """Help strings say "[default: …]"; rich must print it, not read it as a markup tag."""
    import re

    for command, wanted in ((["bench"], "default: 1,8,32"), (["distill"], "default: frozen for embedding"),
                            (["distill"], "default: 2 for unlabeled text"), (["prune"], "default: the example's")):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "400"}, terminal_width=400)
        assert result.exit_code == 0
        assert wanted in re.sub(r"\s+", " ", result.stdout), (command, wanted)
