"""NNCF INT8, BF16 and QAT handlers, on tiny models built here."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import hasten
from hasten.compress import Bf16, NncfInt8, Qat, StaticInt8, quantize
from hasten.compress.nncf_quant import has_attention

needs_nncf = pytest.mark.skipif(
    importlib.util.find_spec("nncf") is None or importlib.util.find_spec("openvino") is None,
    reason="nncf and openvino are not installed (pip install 'hasten[openvino]')")


def _mlp(tmp_path: Path) -> tuple[hasten.Model, Any]:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                 torch.nn.Linear(64, 4)).eval()
    return hasten.load_model(module, example_input=torch.randn(1, 16), path=tmp_path / "m.onnx"), module


def _random_data(model: hasten.Model, n: int = 64, labels: np.ndarray | None = None) -> hasten.Dataset:
    spec = model.inputs[0]
    x = np.random.default_rng(0).standard_normal((n, *spec.shape[1:])).astype(np.float32)
    return hasten.Dataset({spec.name: x}, labels)


def _dq_fed(path: Path) -> dict[str, tuple[bool, bool]]:
    """Node name -> (activation input, weight input) produced by a DequantizeLinear."""
    graph = onnx.load(str(path)).graph
    dq = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name: (n.input[0] in dq, n.input[1] in dq) for n in graph.node if n.op_type in ("Gemm", "MatMul", "Conv")}


@needs_nncf
def test_nncf_int8_is_qdq_and_runs_on_openvino(tmp_path: Path) -> None:
    model, module = _mlp(tmp_path)
    data = _random_data(model)
    q = quantize(model, NncfInt8(subset_size=32), data, out=tmp_path / "q.onnx")
    assert all(fed == (True, True) for fed in _dq_fed(q.path).values()) and len(_dq_fed(q.path)) == 3
    manifest = q.info.extra["manifest"]
    assert q.info.extra["backend"] == "openvino" and manifest["facts"]["subset_size"] == 32
    assert manifest["facts"]["model_type"] == "default" and manifest["facts"]["nncf"]
    feed = data.batch(0, 16)
    got = hasten.compile(q, "openvino").run(feed)[q.outputs[0].name]
    ref = module(__import__("torch").from_numpy(feed[model.inputs[0].name])).detach().numpy()
    assert np.abs(got - ref).max() <= 0.05 * max(1.0, float(np.abs(ref).max()))


@needs_nncf
def test_nncf_ignored_scope_keeps_a_node_float(tmp_path: Path) -> None:
    model, _ = _mlp(tmp_path)
    q = quantize(model, NncfInt8(subset_size=16, nodes_to_exclude=("/2/Gemm",)), _random_data(model))
    fed = _dq_fed(q.path)
    assert fed["/2/Gemm"] == (False, False) and fed["/0/Gemm"] == (True, True)
    assert "/2/Gemm" in q.info.extra["manifest"]["float_nodes"]
    with pytest.raises(hasten.HastenError, match="not in the graph being quantized: no-such-node"):
        quantize(model, NncfInt8(subset_size=4, nodes_to_exclude=("no-such-node",)), _random_data(model))


def test_nncf_needs_data(linear_onnx: tuple[Path, np.ndarray, np.ndarray]) -> None:
    with pytest.raises(hasten.HastenError, match="calibration data"):
        quantize(hasten.load_model(linear_onnx[0]), NncfInt8())


def test_attention_detection() -> None:
    from onnx import helper

    def graph(ops: list[tuple[str, list[str], str]]) -> onnx.ModelProto:
        nodes = [helper.make_node(op, ins, [out]) for op, ins, out in ops]
        return helper.make_model(helper.make_graph(nodes, "g", [], []))

    attention = graph([("MatMul", ["q", "k"], "s"), ("Div", ["s", "d"], "t"), ("Add", ["t", "m"], "u"),
                       ("Softmax", ["u"], "p")])
    assert has_attention(attention)
    assert not has_attention(graph([("MatMul", ["x", "w"], "s"), ("Relu", ["s"], "r"), ("Softmax", ["r"], "p")]))


def test_bf16_refused_without_cpu_support(linear_onnx: tuple[Path, np.ndarray, np.ndarray],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hasten.runtime.openvino.cpu_capabilities", lambda: ["FP32", "INT8"])
    with pytest.raises(hasten.HastenError, match="no BF16") as info:
        quantize(hasten.load_model(linear_onnx[0]), Bf16())
    assert "nncf" in (info.value.hint or "")


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_bf16_on_this_cpu(linear_onnx: tuple[Path, np.ndarray, np.ndarray]) -> None:
    from hasten.runtime.openvino import cpu_capabilities

    if "BF16" in cpu_capabilities():
        pytest.skip("this CPU has BF16")
    with pytest.raises(hasten.HastenError, match="no BF16"):
        quantize(hasten.load_model(linear_onnx[0]), Bf16())


def test_bf16_copies_graph_and_recommends_backend(linear_onnx: tuple[Path, np.ndarray, np.ndarray],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hasten.runtime.openvino.cpu_capabilities", lambda: ["FP32", "INT8", "BF16"])
    q = quantize(hasten.load_model(linear_onnx[0]), Bf16())
    assert q.path.read_bytes() == linear_onnx[0].read_bytes()
    assert q.info.extra["backend"] == "openvino-bf16" and q.info.extra["manifest"]["facts"]["note"]


def _outlier_classifier(tmp_path: Path) -> tuple[hasten.Model, np.ndarray, np.ndarray]:
    """A trained 10-class MLP whose hidden layer has 2 of 64 channels 300x larger than the rest.

    Scaling fc1's rows up and fc2's columns down by the same factor leaves the FP32 function
    unchanged (ReLU is positively homogeneous), but a per-tensor uint8 range over fc2's input
    is then set by the outliers, and the other 62 channels fall into a bucket or two."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((10, 32)).astype(np.float32)
    y = rng.integers(0, 10, 2048)
    x = (centers[y] + rng.standard_normal((2048, 32))).astype(np.float32)
    module = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(module.parameters(), 1e-2)
    xt, yt = torch.from_numpy(x[:1024]), torch.from_numpy(y[:1024])
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(xt), yt).backward()
        opt.step()
    with torch.no_grad():
        module[0].weight[:2] *= 300.0
        module[0].bias[:2] *= 300.0
        module[2].weight[:, :2] /= 300.0
    model = hasten.load_model(module.eval(), example_input=xt[:1], path=tmp_path / "outlier.onnx")
    return model, x, y


def _accuracy(model: hasten.Model, x: np.ndarray, y: np.ndarray) -> float:
    runner = hasten.compile(model, "ort-cpu", hasten.BackendConfig(threads=1))
    return float((runner.run({model.inputs[0].name: x})[model.outputs[0].name].argmax(1) == y).mean())


def test_qat_beats_static_ptq_on_outlier_activations(tmp_path: Path) -> None:
    model, x, y = _outlier_classifier(tmp_path)
    train = hasten.Dataset({model.inputs[0].name: x[:1024]}, y[:1024])
    fp32 = _accuracy(model, x[1024:], y[1024:])
    ptq = _accuracy(quantize(model, StaticInt8(calibration="minmax", per_channel=True), train), x[1024:], y[1024:])
    q = quantize(model, Qat(steps=300, lr=1e-3), train)
    qat = _accuracy(q, x[1024:], y[1024:])
    print(f"outlier MLP accuracy: fp32 {fp32:.3f}  static minmax {ptq:.3f}  qat {qat:.3f}")
    assert fp32 > 0.95 and ptq < fp32 - 0.3  # the trap is real
    assert qat > ptq + 0.3 and qat > fp32 - 0.05
    facts = q.info.extra["manifest"]["facts"]
    assert facts["loss"] == "cross_entropy" and facts["layers_fake_quantized"] == ["0", "2"]
    assert _dq_fed(q.path) == {"/0/Gemm": (True, True), "/2/Gemm": (True, True)}
    weights = [i for i in onnx.load(str(q.path)).graph.initializer if i.name in ("0.weight", "2.weight")]
    assert not weights  # stored as int8, read by DequantizeLinear


def test_qat_without_labels_distils_fp32_through_conv(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 8 * 8, 3)).eval()
    model = hasten.load_model(module, example_input=torch.randn(1, 1, 8, 8), path=tmp_path / "cnn.onnx")
    data = _random_data(model, 64)
    q = quantize(model, Qat(steps=20, lr=1e-4, batch_size=16), data)
    facts = q.info.extra["manifest"]["facts"]
    assert facts["loss"] == "mse_to_fp32" and facts["layers_fake_quantized"] == ["0", "3"]
    assert all(fed == (True, True) for fed in _dq_fed(q.path).values())
    assert sorted(q.info.extra["manifest"]["quantized_nodes"]) == ["/0/Conv", "/3/Gemm"]
    feed = data.batch(0, 16)
    got = hasten.compile(q, "ort-cpu").run(feed)[q.outputs[0].name]
    ref = module(torch.from_numpy(feed[model.inputs[0].name])).detach().numpy()
    assert np.sqrt(np.mean((got - ref) ** 2)) < 0.1 * np.sqrt(np.mean(ref ** 2))


def test_qat_needs_a_torch_model(linear_onnx: tuple[Path, np.ndarray, np.ndarray]) -> None:
    model = hasten.load_model(linear_onnx[0])
    with pytest.raises(hasten.HastenError, match="PyTorch module") as info:
        quantize(model, Qat(steps=1), _random_data(model))
    assert "nncf" in (info.value.hint or "")


def test_qat_token_model_keeps_dynamic_axes(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Tagger(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.proj = torch.nn.Embedding(100, 16), torch.nn.Linear(16, 8)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.proj(self.emb(input_ids)) * attention_mask[..., None]

    example = (torch.randint(0, 100, (1, 6)), torch.ones(1, 6, dtype=torch.int64))
    model = hasten.load_model(Tagger().eval(), example_input=example, path=tmp_path / "tagger.onnx")
    rng = np.random.default_rng(0)
    mask = (np.arange(12)[None] < rng.integers(2, 13, (48, 1))).astype(np.int64)
    data = hasten.Dataset({"input_ids": rng.integers(0, 100, (48, 12)) * mask, "attention_mask": mask})
    q = quantize(model, Qat(steps=10, batch_size=8), data)
    assert _dq_fed(q.path) == {"/proj/MatMul": (True, True)}  # no Transpose between weight and MatMul
    runner = hasten.compile(q, "ort-cpu")
    for length in (3, 12):
        assert runner.run(data.batch(0, 5, seq_len=length))["output"].shape == (5, length, 8)


@needs_nncf
def test_nncf_smooth_quant_alpha_is_applied_and_recorded(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).eval()
    model = hasten.load_model(module, example_input=torch.randn(1, 5, 16), path=tmp_path / "seq.onnx")  # 3-D: MatMul
    x = np.random.default_rng(0).standard_normal((32, 5, 16)).astype(np.float32)
    x[:, :, 3] *= 40  # an outlier channel, what smoothing is for
    data = hasten.Dataset({model.inputs[0].name: x})

    def smoothing_nodes(alpha: float) -> tuple[int, dict]:
        q = quantize(model, NncfInt8(subset_size=16, transformer=True, smooth_quant_alpha=alpha), data,
                     out=tmp_path / f"q{alpha}.onnx")
        graph = onnx.load(str(q.path)).graph
        return sum("smooth_quant" in o for n in graph.node for o in n.output), q.info.extra["manifest"]["facts"]

    on, facts = smoothing_nodes(0.5)
    off, _ = smoothing_nodes(-1)
    assert on > 0 and off == 0 and facts["smooth_quant_alpha"] == 0.5
    with pytest.raises(hasten.HastenError, match="smooth_quant_alpha"):
        NncfInt8(smooth_quant_alpha=1.5)


@needs_nncf
def test_dynamic_quant_group_runs_only_the_float_matmuls_as_dynamic_int8(tmp_path: Path) -> None:
    from hasten.runtime import BackendConfig

    model, _ = _mlp(tmp_path)
    data = _random_data(model)
    q = quantize(model, NncfInt8(subset_size=16, nodes_to_exclude=("/2/Gemm",)), data, out=tmp_path / "q.onnx")
    dq = BackendConfig(threads=1, dynamic_quant_group=32)
    on_q = hasten.compile(q, "openvino-static", dq)
    assert on_q.info.extra["dynamic_int8_matmuls"] == 1 and on_q.info.extra["dynamic_quant_group"] == 32
    fp32 = hasten.compile(model, "openvino", BackendConfig(threads=1))
    all_dynamic = hasten.compile(model, "openvino", dq)
    assert all_dynamic.info.extra["dynamic_int8_matmuls"] == 3 and "dynamic_quant_group" not in fp32.info.extra
    feed = data.batch(0, 32)
    ref, got = fp32.run(feed)[model.outputs[0].name], all_dynamic.run(feed)[model.outputs[0].name]
    err = float(np.abs(got - ref).max())
    assert 0 < err <= 0.05 * max(1.0, float(np.abs(ref).max()))  # INT8: close to FP32, not equal to it
    with pytest.raises(hasten.HastenError, match="OpenVINO option"):
        hasten.compile(model, "ort-cpu", dq)
    with pytest.raises(hasten.HastenError, match="from 16 to 4096"):
        BackendConfig(dynamic_quant_group=8)


@needs_nncf
def test_the_gate_judges_dynamic_int8_variants_against_the_plain_fp32_baseline(tmp_path: Path, monkeypatch) -> None:
    import hasten.plan.gate as gate_module
    from hasten.plan import GateConfig, quantize_under_budget

    model, _ = _mlp(tmp_path)
    seen: list[tuple[str, int]] = []
    real = gate_module.compile

    def recording(m: Any, backend: str, cfg: Any) -> Any:
        seen.append((str(m.path), cfg.dynamic_quant_group))
        return real(m, backend, cfg)

    monkeypatch.setattr(gate_module, "compile", recording)
    gate = GateConfig(budget="5%", metric="cosine", backend="openvino", threads=1, batch_sizes=(16,), time_budget_s=0.2,
                      fallback=False, keep_if_slower=True, dynamic_quant_group=32)
    result = quantize_under_budget(model, NncfInt8(subset_size=16, nodes_to_exclude=("/2/Gemm",)), _random_data(model),
                                   gate, tmp_path / "out.onnx")
    assert seen[0] == (str(model.path), 0)  # the FP32 reference: no dynamic INT8
    assert all(group == 32 for path, group in seen[1:]) and len(seen) >= 2
    run_with = result.manifest["run_with"]
    assert run_with == {"backend": "openvino", "dynamic_quant_group": 32, "dynamic_int8_matmuls": 1}
    import json

    assert json.loads((tmp_path / "out.manifest.json").read_text())["run_with"] == run_with
