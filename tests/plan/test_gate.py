"""The quantization gate: structure of what it produces, the fallback trail, the speed guard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import hasten
from hasten.cli import app
from hasten.compress import DynamicInt8, StaticInt8, config_from_dict, quantize
from hasten.core import HastenError
from hasten.models import Dataset
from hasten.plan import GateConfig, quantize_under_budget

torch = pytest.importorskip("torch")


def mlp(tmp_path: Path, outlier: float = 0.0, width: int = 64, seed: int = 0) -> hasten.Model:
    """Three Linear layers; ``outlier`` plants one huge weight in the middle layer, which makes
    per-tensor INT8 crush that layer's other weights."""
    torch.manual_seed(seed)
    module = torch.nn.Sequential(torch.nn.Linear(32, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                                 torch.nn.ReLU(), torch.nn.Linear(width, 8)).eval()
    if outlier:
        with torch.no_grad():
            module[2].weight[0, 0] = outlier
    return hasten.load_model(module, example_input=torch.randn(2, 32), path=tmp_path / "mlp.onnx")


def data(n: int = 256, seed: int = 1) -> Dataset:
    x = np.random.default_rng(seed).standard_normal((n, 32)).astype(np.float32)
    return Dataset({"input": x}, name="synthetic")


def test_dynamic_quantizes_every_linear_and_writes_a_manifest(tmp_path: Path) -> None:
    model = mlp(tmp_path)
    q = quantize(model, DynamicInt8(), data(), tmp_path / "q.onnx")
    man = json.loads((tmp_path / "q.manifest.json").read_text())
    assert man == q.info.extra["manifest"]
    assert man["method"] == "dynamic" and man["config"]["per_channel"] is True
    assert len(man["quantized_nodes"]) == 3 and man["float_nodes"] == []
    assert man["op_counts"].get("MatMulInteger") == 3
    assert man["source"]["sha256"] != man["output"]["sha256"] and man["output"]["bytes"] < man["size_before_bytes"]
    assert {"onnx", "onnxruntime"} <= set(man["versions"])
    assert model.path.exists() and q.path != model.path  # the input is untouched


def test_excluded_nodes_stay_float(tmp_path: Path) -> None:
    model = mlp(tmp_path)
    first = quantize(model, DynamicInt8(), data(), tmp_path / "a.onnx").info.extra["manifest"]["quantized_nodes"][0]
    man = quantize(model, DynamicInt8(nodes_to_exclude=(first,)), data(), tmp_path / "b.onnx").info.extra["manifest"]
    assert man["float_nodes"] == [first] and first not in man["quantized_nodes"]


def test_a_node_to_keep_in_float_that_is_not_in_the_graph_is_refused(tmp_path: Path) -> None:
    """The quantizers would skip an unknown name silently and quantize the node the user meant."""
    model = mlp(tmp_path)
    with pytest.raises(HastenError, match=r"not in the graph being quantized: /2/Gem \(close: /2/Gemm") as err:
        quantize(model, DynamicInt8(nodes_to_exclude=("/2/Gem",)), data(), tmp_path / "q.onnx")
    assert "manifest lists its names" in err.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx"]  # no result, no prepared graph left


def _activation_scales(path: Path) -> list[float]:
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    return [float(inits[n.input[1]]) for n in g.node if n.op_type == "QuantizeLinear" and inits[n.input[1]].size == 1]


def test_calibration_methods_give_different_scales(tmp_path: Path) -> None:
    model = mlp(tmp_path)
    heavy = data()
    heavy.inputs["input"][::50] *= 40.0  # rare large activations: MinMax stretches, entropy/percentile clip
    scales = {c: _activation_scales(quantize(model, StaticInt8(calibration=c), heavy, tmp_path / f"{c}.onnx").path)
              for c in ("minmax", "entropy", "percentile")}
    assert len(scales["minmax"]) >= 3
    assert scales["minmax"] != scales["entropy"] and scales["entropy"] != scales["percentile"]
    assert max(scales["percentile"]) < max(scales["minmax"])  # the clipped range gives a finer step


def test_fallback_puts_the_sensitive_layer_back_in_float(tmp_path: Path) -> None:
    model = mlp(tmp_path, outlier=60.0)
    gate = GateConfig(budget="3%", metric="cosine", batch_sizes=(64,), time_budget_s=0.2, keep_if_slower=True,
                      threads=1)
    result = quantize_under_budget(model, DynamicInt8(per_channel=False), data(), gate, tmp_path / "out.onnx")
    assert result.trail, "the per-tensor model (cosine ~0.88) should miss a 3 % budget and fall back"
    assert result.sensitivities[0].node == "/2/Gemm"  # the layer with the planted outlier
    assert len(result.trail) == 1 and result.trail[0].excluded == ("/2/Gemm",)
    assert result.verdict.passed and result.accepted
    assert result.sensitivities[0].node in result.manifest["float_nodes"]
    assert (tmp_path / "out.onnx").exists() and (tmp_path / "out.manifest.json").exists()


def test_the_gate_leaves_no_trial_files_behind(tmp_path: Path, monkeypatch) -> None:
    """Every trial is a whole model (90 MB each for minilm): they go when the gate is done, as they
    go during the fallback; a result that was not written to `out` is what stays."""
    import tempfile

    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    model = mlp(tmp_path, outlier=60.0)
    gate = GateConfig(budget="3%", metric="cosine", batch_sizes=(64,), time_budget_s=0.2, keep_if_slower=True, threads=1)
    result = quantize_under_budget(model, DynamicInt8(per_channel=False), data(), gate, tmp_path / "out.onnx")
    assert result.trail and result.accepted  # several trials ran
    assert not list(work.glob("hasten-gate-*")) and (tmp_path / "out.onnx").exists()
    refused = quantize_under_budget(model, DynamicInt8(), data(), GateConfig(budget="0", metric="max_abs", batch_sizes=(8,)))
    assert not refused.accepted and not list(work.glob("hasten-gate-*"))
    kept = quantize_under_budget(model, DynamicInt8(per_channel=False), data(), gate)  # no out: its file is kept
    left = [p for p in work.glob("hasten-gate-*/*")]
    assert kept.accepted and sorted(p.name for p in left) == sorted([Path(kept.model.path).name,
                                                                     Path(kept.model.path).with_suffix(".manifest.json").name])
    assert hasten.compile(kept.model, "ort-cpu").run(data().batch(0, 4))


def test_gives_up_when_even_all_float_but_one_misses(tmp_path: Path) -> None:
    model = mlp(tmp_path)
    gate = GateConfig(budget="0", metric="max_abs", batch_sizes=(8,), time_budget_s=0.2)
    result = quantize_under_budget(model, DynamicInt8(), data(), gate, tmp_path / "never.onnx")
    assert not result.accepted and "all-float-but-one" in result.refused
    assert len(result.trail) == 2  # three quantized nodes: at most two go back to float
    assert not (tmp_path / "never.onnx").exists()


def test_the_guard_refuses_what_it_measured_as_not_faster(tmp_path: Path) -> None:
    """A tiny graph at batch 1 is all per-call overhead: quantizing it only adds (de)quantize
    work. Whatever the noisy machine measured, the gate acts on it consistently: refused, with
    reasons and nothing written, unless measured faster beyond noise; kept with keep_if_slower."""
    model = mlp(tmp_path, width=16)
    gate = GateConfig(budget="5%", metric="cosine", batch_sizes=(1,), time_budget_s=0.5, threads=1)
    result = quantize_under_budget(model, StaticInt8(), data(), gate, tmp_path / "slow.onnx")
    assert result.verdict.passed and result.guard is not None
    assert result.accepted == result.guard.faster == (tmp_path / "slow.onnx").exists()
    if not result.accepted:
        assert result.refused.startswith("speed: not faster") and result.guard.reasons
        assert any("tiny" in r for r in result.guard.reasons)
    kept = quantize_under_budget(model, StaticInt8(), data(), GateConfig(
        budget="5%", metric="cosine", batch_sizes=(1,), time_budget_s=0.2, threads=1, keep_if_slower=True),
        tmp_path / "kept.onnx")
    assert kept.accepted and (tmp_path / "kept.onnx").exists()


def test_the_guard_calls_a_clearly_slower_model_not_faster(tmp_path: Path) -> None:
    """Deterministic: the variant does the baseline's work plus a chain of 30 extra 256×256
    MatMuls, far beyond any noise."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from hasten.plan.guard import speed_check
    from hasten.runtime import BackendConfig, compile

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((256, 256)).astype(np.float32) / 16, "w")

    def chain(n: int, path: Path) -> hasten.Model:
        nodes, prev = [], "x"
        for i in range(n):
            nodes.append(helper.make_node("MatMul", [prev, "w"], [f"h{i}"]))
            prev = f"h{i}"
        nodes.append(helper.make_node("Identity", [prev], ["y"]))
        graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 256])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 256])], [w])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return hasten.load_model(path)

    feed = Dataset({"x": rng.standard_normal((64, 256)).astype(np.float32)})
    cfg = BackendConfig(threads=1)
    base, slow = compile(chain(1, tmp_path / "a.onnx"), "ort-cpu", cfg), compile(chain(31, tmp_path / "b.onnx"), "ort-cpu", cfg)
    verdict = speed_check(base, slow, feed, (32,), None, 0.3)
    assert not verdict.faster and verdict.rows[0].slower_beyond_noise and verdict.rows[0].speedup < 0.5


def test_bad_configs_and_missing_data(tmp_path: Path) -> None:
    with pytest.raises(HastenError, match="unknown calibration method 'kl'"):
        StaticInt8(calibration="kl")
    with pytest.raises(HastenError, match="unknown quantization method 'int4'"):
        config_from_dict({"method": "int4"})
    with pytest.raises(HastenError, match=r"unknown field\(s\) \['bits'\]"):
        config_from_dict({"method": "dynamic", "bits": 4})
    with pytest.raises(HastenError, match="needs calibration data"):
        quantize(mlp(tmp_path), StaticInt8(), None, tmp_path / "x.onnx")
    with pytest.raises(HastenError):
        GateConfig(budget="lots")
    with pytest.raises(HastenError, match="unknown metric"):
        GateConfig(metric="bleu")


def test_cli_quantize(tmp_path: Path) -> None:
    model = mlp(tmp_path)
    data().save_npz(tmp_path / "d.npz")
    out = tmp_path / "q.onnx"
    res = CliRunner().invoke(app, ["quantize", str(model.path), "--method", "dynamic", "--data", str(tmp_path / "d.npz"),
                                   "--metric", "cosine", "--budget", "5%", "--batch-sizes", "32", "--time-budget-s",
                                   "0.2", "--keep-if-slower", "-o", str(out), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "speed-up" in res.stdout and "quality (cosine)" in res.stdout and "nodes quantized: 3" in res.stdout
    assert out.exists() and json.loads((tmp_path / "r.json").read_text())["accepted"] is True
    bad = CliRunner().invoke(app, ["quantize", str(model.path), "--method", "static", "-o", str(out)])
    assert bad.exit_code != 0 and "needs calibration data" in str(bad.exception)


def test_cli_keep_float(tmp_path: Path) -> None:
    model = mlp(tmp_path)
    data().save_npz(tmp_path / "d.npz")
    out = tmp_path / "q.onnx"
    res = CliRunner().invoke(app, ["quantize", str(model.path), "--method", "dynamic", "--data", str(tmp_path / "d.npz"),
                                   "--keep-float", "/2/Gemm", "--budget", "50%", "--batch-sizes", "32",
                                   "--time-budget-s", "0.2", "--keep-if-slower", "-o", str(out)])
    assert res.exit_code == 0, res.output
    man = json.loads(out.with_suffix(".manifest.json").read_text())
    assert man["float_nodes"] == ["/2/Gemm"] and man["config"]["nodes_to_exclude"] == ["/2/Gemm"]
    bad = CliRunner().invoke(app, ["quantize", str(model.path), "--method", "dynamic", "--keep-float", "/2/gemm",
                                   "-o", str(tmp_path / "x.onnx")])
    assert bad.exit_code != 0 and "not in the graph being quantized: /2/gemm (close: /2/Gemm" in str(bad.exception)


def test_cli_require_and_bad_flags(tmp_path: Path) -> None:
    model = mlp(tmp_path)
    bad = CliRunner().invoke(app, ["quantize", str(model.path), "--method", "dynamic", "--require", "nn_agreement=0.9",
                                   "-o", str(tmp_path / "x.onnx")])
    assert bad.exit_code != 0 and "METRIC>=VALUE" in str(bad.exception)
    bad = CliRunner().invoke(app, ["quantize", str(model.path), "--method", "int3", "-o", str(tmp_path / "x.onnx")])
    assert "unknown quantization method 'int3'" in str(bad.exception)


def test_extra_bars_are_checked(tmp_path: Path) -> None:
    model = mlp(tmp_path)
    gate = GateConfig(budget="50%", metric="cosine", require=(("nn_agreement", 1.01),), batch_sizes=(8,),
                      time_budget_s=0.2, fallback=False)
    result = quantize_under_budget(model, DynamicInt8(), data(), gate)
    assert not result.accepted and "nn_agreement" in result.refused and "misses 1.01" in result.refused
    assert 0.0 <= result.quality.extra["nn_agreement"] <= 1.0
