"""Edge bundles: the runner gives the source model's outputs, the reduced-build operator config
lists exactly the operators of the optimised graph, a tampered or incomplete bundle is refused,
the pre-flight flags what a target lacks, and ExecuTorch is skipped cleanly when absent."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hasten
from hasten.core import HastenError
from hasten.edge.bundle import OPS_CONFIG, BundleError, export_bundle, load_bundle, verify_bundle
from hasten.edge.preflight import ort_optimized_ops, preflight
from tests.conftest import make_linear_onnx


def _small_cnn(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    g = numpy_helper.from_array(rng.standard_normal((64, 3)).astype(np.float32), "g")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("MatMul", ["f", "g"], ["y"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [w, b, g])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture()
def cnn(tmp_path: Path) -> hasten.Model:
    _small_cnn(tmp_path / "cnn.onnx")
    return hasten.load_model(tmp_path / "cnn.onnx")


def test_the_bundle_runner_gives_the_source_models_outputs(cnn: hasten.Model, tmp_path: Path) -> None:
    bundle = export_bundle(cnn, tmp_path / "b")
    assert set(bundle.manifest["files"]) == {"model.ort", OPS_CONFIG, "io.json", "run.py"}
    x = np.random.default_rng(1).standard_normal((5, 1, 4, 4)).astype(np.float32)
    want = hasten.compile(cnn, "ort-cpu").run({"x": x})["y"]
    got = load_bundle(tmp_path / "b").run({"x": x})["y"]
    assert np.abs(got - want).max() <= 1e-5  # float32 (measured here: 0.0; fused kernels may round differently elsewhere)
    # the shipped run.py, in a fresh interpreter, needs only onnxruntime and numpy
    np.savez(tmp_path / "in.npz", x=x)
    done = subprocess.run([sys.executable, str(tmp_path / "b" / "run.py"), "--input", str(tmp_path / "in.npz"),
                           "--output", str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "out.npz") as out:
        assert np.abs(out["y"] - want).max() <= 1e-5
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["source"]["sha256"] and manifest["versions"]["onnxruntime"] and manifest["recipe"]["optimization"] == "all"


def test_the_reduced_build_config_lists_exactly_the_ops_of_the_optimised_graph(cnn: hasten.Model, tmp_path: Path) -> None:
    export_bundle(cnn, tmp_path / "b", optimization="all")
    listed = set()
    for line in (tmp_path / "b" / OPS_CONFIG).read_text().splitlines():
        if line and not line.startswith("#"):
            domain, _, ops = line.split(";")
            listed |= {(domain, op) for op in ops.split(",")}
    executed, error = ort_optimized_ops(cnn.path, "all")
    assert error is None and listed == set(executed)
    assert ("com.microsoft", "FusedConv") in listed and ("ai.onnx", "Relu") not in listed  # the graph ORT runs, not the input graph
    export_bundle(cnn, tmp_path / "basic", optimization="basic")
    basic = (tmp_path / "basic" / OPS_CONFIG).read_text()
    assert "Conv" in basic and "Relu" in basic and "FusedConv" not in basic


def test_a_tampered_or_incomplete_bundle_is_refused(cnn: hasten.Model, tmp_path: Path) -> None:
    export_bundle(cnn, tmp_path / "b")
    verify_bundle(tmp_path / "b")
    model_file = tmp_path / "b" / "model.ort"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.ort does not match its checksum"):
        load_bundle(tmp_path / "b")
    done = subprocess.run([sys.executable, str(tmp_path / "b" / "run.py"), "--check"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 3 and "tampered" in done.stderr
    export_bundle(cnn, tmp_path / "b", force=True)
    (tmp_path / "b" / "io.json").unlink()
    with pytest.raises(BundleError, match="io.json is missing"):
        verify_bundle(tmp_path / "b")
    with pytest.raises(BundleError, match="not a hasten bundle"):
        verify_bundle(tmp_path)
    with pytest.raises(HastenError, match="exists and is not empty"):
        export_bundle(cnn, tmp_path / "b")


def test_the_preflight_flags_an_operator_a_target_lacks(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    # Einsum: ONNX Runtime's CPU provider runs it, NNAPI's table lacks it (CPU fallback)
    nodes = [helper.make_node("Einsum", ["a", "b"], ["y"], equation="ij,jk->ik")]
    graph = helper.make_graph(nodes, "e", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
                                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "e.onnx"))
    report = preflight(tmp_path / "e.onnx")
    row = next(r for r in report.rows if r.op == "Einsum")
    assert row.status["ort"] == "ok" and row.status["nnapi"] == "fallback"
    assert "fall back" in report.verdict("nnapi")
    # an operator of a domain nobody implements fails everywhere, by name
    nodes = [helper.make_node("Frobnicate", ["a"], ["y"], domain="com.example")]
    graph = helper.make_graph(nodes, "f", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]),
              str(tmp_path / "f.onnx"))
    report = preflight(tmp_path / "f.onnx")
    row = next(r for r in report.rows if r.op == "Frobnicate")
    assert row.status["ort"] == "fails" and report.verdict("ort").startswith("fails")
    assert row.status["nnapi"] == "fallback"


def test_an_openvino_bundle_holds_ir_and_weights(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    make_linear_onnx(tmp_path / "lin.onnx")
    model = hasten.load_model(tmp_path / "lin.onnx")
    bundle = export_bundle(model, tmp_path / "b", fmt="openvino")
    assert {"model.xml", "model.bin"} <= set(bundle.manifest["files"])
    x = np.ones((2, 4), np.float32)
    want = hasten.compile(model, "ort-cpu").run({"x": x})["y"]
    assert np.abs(load_bundle(tmp_path / "b").run({"x": x})["y"] - want).max() <= 1e-5
    np.savez(tmp_path / "in.npz", x=x)  # and its own run.py runs it with OpenVINO
    done = subprocess.run([sys.executable, str(tmp_path / "b" / "run.py"), "--input", str(tmp_path / "in.npz"),
                           "--output", str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "out.npz") as out:
        assert np.abs(out["y"] - want).max() <= 1e-5


def test_executorch_is_skipped_cleanly_when_absent(cnn: hasten.Model, tmp_path: Path) -> None:
    if importlib.util.find_spec("executorch") is not None:
        pytest.skip("executorch is installed: its path is tested with it")
    with pytest.raises(HastenError, match="executorch"):
        export_bundle(cnn, tmp_path / "b", fmt="executorch")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())  # nothing half-written


def test_edge_vs_cloud_adds_the_round_trip_and_the_transfer_and_names_the_winner() -> None:
    from hasten.edge.compare import Comparison, Side

    c = Comparison(Side(3.0, 5.0, 100), Side(1.0, 2.0, 100), rtt_ms=20.0, bandwidth_mbps=8.0,
                   request_bytes=1000, response_bytes=1000)
    assert c.transfer_ms == pytest.approx(2.0)              # 2,000 bytes at 8 Mbit/s
    assert c.cloud("p50_ms") == pytest.approx(23.0) and c.cloud("p99_ms") == pytest.approx(24.0)
    assert c.verdict("p50_ms").startswith("edge wins by 20.00 ms")
    near = Comparison(Side(30.0, 50.0, 100), Side(1.0, 2.0, 100), 0.0, 1000.0, 10, 10)
    assert near.verdict("p99_ms").startswith("cloud wins")


@pytest.mark.slow
def test_compare_cloud_measures_both_sides_for_real(cnn: hasten.Model, tmp_path: Path) -> None:
    from hasten.edge.compare import compare

    export_bundle(cnn, tmp_path / "b")
    x = {"x": np.ones((1, 1, 4, 4), np.float32)}
    c = compare(str(tmp_path / "b"), str(cnn.path), x, ["y"], rtt_ms=40.0, seconds=0.3)
    assert c.edge.runs >= 20 and c.cloud_local.runs >= 20
    assert c.request_bytes > 64 and c.response_bytes > 12
    assert c.cloud("p50_ms") >= 40.0 and "edge wins" in c.verdict("p50_ms")


def test_executorch_bundle_reports_its_xnnpack_delegation(tmp_path: Path) -> None:
    pytest.importorskip("executorch")
    model = hasten.load_model("digits-cnn")
    bundle = export_bundle(model, tmp_path / "b", fmt="executorch")
    recipe = bundle.manifest["recipe"]
    assert "model.pte" in bundle.manifest["files"] and recipe["xnnpack_delegate_calls"] >= 1


def test_an_int8_bundle_gives_the_int8_models_outputs(cnn: hasten.Model, tmp_path: Path) -> None:
    from hasten.compress import DynamicInt8, quantize

    int8 = quantize(cnn, DynamicInt8(), out=tmp_path / "cnn.int8.onnx")
    export_bundle(int8, tmp_path / "b")
    x = np.random.default_rng(2).standard_normal((5, 1, 4, 4)).astype(np.float32)
    want = hasten.compile(int8, "ort-cpu").run({"x": x})["y"]
    got = load_bundle(tmp_path / "b").run({"x": x})["y"]
    # the same quantized kernels on the same activations (measured here: identical, max diff 0.0;
    # the bound leaves room for another CPU's kernel choice)
    assert np.abs(got - want).max() <= 1e-4


def test_initializers_listed_as_inputs_do_not_become_required_inputs(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # the IR < 4 style of old models: the weight is an initializer *and* a graph input
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    shape = numpy_helper.from_array(np.array([-1, 4], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
                                             helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3]),
                                             helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(w, "w"), shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    onnx.save(model, str(tmp_path / "old.onnx"))
    old = hasten.load_model(tmp_path / "old.onnx")
    export_bundle(old, tmp_path / "b")
    x = np.ones((2, 4), np.float32)
    assert np.allclose(load_bundle(tmp_path / "b").run({"x": x})["y"], x @ w)
    with pytest.raises(HastenError, match="refused the inputs"):
        load_bundle(tmp_path / "b").run({"x": np.ones((2, 5), np.float32)})  # a clear error, not a traceback
