"""Pruning: structure (exact parameter counts, consistent shapes), sparsity, the 2:4 pattern,
fine-tuning checkpoints, and clear errors — on tiny models built here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import hasten
from hasten.compress.prune import Monitor, PruneConfig, is_two_four, prune, two_four_mask
from hasten.core import HastenError
from hasten.runtime import compile

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")


def _resnet_like() -> Any:
    """A stem, one residual block (conv-bn-relu-conv-bn + skip) and a linear head."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.conv1, self.bn1 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
            self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

        def forward(self, x: Any) -> Any:
            x = self.stem(x)
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return self.head(torch.relu(x + y))

    torch.manual_seed(0)
    return Block().eval()


def _cnn_model(tmp_path: Path) -> hasten.Model:
    return hasten.load_model(_resnet_like(), example_input=torch.randn(1, 3, 8, 8), path=tmp_path / "res.onnx")


def _images(n: int = 64, labels: bool = True) -> hasten.Dataset:
    rng = np.random.default_rng(0)
    return hasten.Dataset({"x": rng.standard_normal((n, 3, 8, 8)).astype(np.float32)},
                          rng.integers(0, 10, n) if labels else None)


class Killed(Exception):
    """Stands for the process being killed mid-run."""


def killed_at(step: int) -> Monitor:
    """A monitor whose first check (at ``step``) "kills" the run."""
    def evaluate(module: Any) -> dict[str, Any]:
        raise Killed
    return Monitor(evaluate, lambda seen: False, every=step)


def _weights(path: Path) -> dict[str, np.ndarray]:
    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    return {n.name: inits[n.input[1]] for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")
            and len(n.input) > 1 and n.input[1] in inits}


def test_channel_pruning_of_a_residual_cnn_removes_coupled_channels_exactly(tmp_path: Path) -> None:
    model = _cnn_model(tmp_path)
    pruned = prune(model, PruneConfig("channel", amount=0.5, round_to=1), None, tmp_path / "p.onnx")
    man = pruned.info.extra["manifest"]
    # every channel group (stem + block output, coupled by the skip; the block's inner conv) 16 -> 8;
    # conv: in*out*9 + out, batch norm: 2 per channel, head: in*10 + 10
    assert man["parameters"]["before"]["total"] == (3 * 16 * 9 + 16) + 2 * (16 * 16 * 9 + 16) + 3 * 32 + 16 * 10 + 10
    assert man["parameters"]["after"]["total"] == (3 * 8 * 9 + 8) + 2 * (8 * 8 * 9 + 8) + 3 * 16 + 8 * 10 + 10
    assert man["channels_per_layer"]["conv1"] == {"out": [16, 8], "in": [16, 8]}
    assert man["channels_per_layer"]["head.2"] == {"out": [10, 10], "in": [16, 8]}  # the head keeps its classes
    assert "head.2" in man["ignored_layers"]
    assert man["macs"]["after"] < man["macs"]["before"] / 3
    x = _images(4).inputs["x"]
    out = compile(pruned, "ort-cpu").run({"x": x})
    assert next(iter(out.values())).shape == (4, 10)
    # the source model is untouched
    assert model.torch_module().conv1.out_channels == 16


def test_channel_counts_are_rounded_to_the_requested_multiple(tmp_path: Path) -> None:
    model = _cnn_model(tmp_path)
    pruned = prune(model, PruneConfig("channel", amount=0.3, round_to=8), None, tmp_path / "p.onnx")
    channels = pruned.info.extra["manifest"]["channels_per_layer"]
    assert {c["out"][1] for name, c in channels.items() if name != "head.2"} == {8}  # 16 * 0.7 = 11.2 -> 8


def _tiny_bert(tmp_path: Path) -> hasten.Model:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, attn_implementation="eager")
    torch.manual_seed(0)
    bert = transformers.BertModel(config, add_pooling_layer=False).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]

    ids = torch.randint(1, 100, (2, 12))
    return hasten.load_model(Encoder().eval(), example_input={"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                             path=tmp_path / "bert.onnx")


def test_transformer_pruning_removes_heads_and_mlp_width_and_keeps_the_width(tmp_path: Path) -> None:
    model = _tiny_bert(tmp_path)
    pruned = prune(model, PruneConfig("channel", amount=0.5, round_to=1), None, tmp_path / "p.onnx")
    man = pruned.info.extra["manifest"]
    assert man["heads_per_layer"] == [[4, 2], [4, 2]]
    # removed per layer: q, k, v lose 32 outputs (two heads of 16) with their biases; the attention
    # output projection 32 inputs; the MLP 64 of its 128 units (in and out projections)
    per_layer = 3 * (32 * 64 + 32) + 64 * 32 + (64 * 64 + 64) + 64 * 64
    assert man["parameters"]["before"]["total"] - man["parameters"]["after"]["total"] == 2 * per_layer
    assert man["channels_per_layer"]["bert.encoder.layer.0.intermediate.dense"]["out"] == [128, 64]
    assert "bert.encoder.layer.0.output.dense" in man["ignored_layers"]  # back into the residual stream: width kept
    ids = np.random.default_rng(0).integers(1, 100, (3, 10)).astype(np.int64)
    out = compile(pruned, "ort-cpu").run({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    assert next(iter(out.values())).shape == (3, 64)
    module = pruned.torch_module()
    assert module.bert.encoder.layer[1].attention.self.num_attention_heads == 2


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_unstructured_sparsity_is_as_requested(tmp_path: Path, scope: str) -> None:
    pruned = prune(_cnn_model(tmp_path), PruneConfig("unstructured", amount=0.8, scope=scope), None,
                   tmp_path / "s.onnx")
    man = pruned.info.extra["manifest"]
    weights = _weights(pruned.path)
    zeros = {n: float((w == 0).mean()) for n, w in weights.items()}
    total = sum(w.size for w in weights.values())
    overall = sum((w == 0).sum() for w in weights.values()) / total
    assert overall == pytest.approx(0.8, abs=2 / total)
    if scope == "layer":
        assert all(z == pytest.approx(0.8, abs=0.02) for z in zeros.values())
        assert all(s == pytest.approx(0.8, abs=0.02) for s in man["sparsity_per_layer"].values())
    assert man["parameters"]["after"]["total"] == man["parameters"]["before"]["total"]  # nothing removed
    assert man["macs"]["after"] == man["macs"]["before"]
    assert "dense kernels" in man["speed_note"]


def test_two_four_masks_keep_exactly_two_of_every_four(tmp_path: Path) -> None:
    w = torch.randn(6, 8)
    mask = two_four_mask(w)
    assert ((mask.reshape(6, 2, 4) != 0).sum(-1) == 2).all()
    kept = (w * mask).abs().reshape(6, 2, 4)
    dropped = (w * (1 - mask)).abs().reshape(6, 2, 4)
    assert (kept.max(-1).values >= dropped.max(-1).values).all()  # the largest two are kept
    pruned = prune(_cnn_model(tmp_path), PruneConfig("2:4"), None, tmp_path / "24.onnx")
    man = pruned.info.extra["manifest"]
    assert man["skipped_layers"] == {"stem.0": "27 inputs per output, not a multiple of 4"}
    weights = _weights(pruned.path)
    checked = [n for n, w in weights.items() if w[0].size % 4 == 0 and (w == 0).any()]
    assert len(checked) == 3  # conv1, conv2 and the head (batch norm folded into the convs keeps zeros)
    for name in checked:
        assert is_two_four(weights[name]), name
    assert not is_two_four(np.ones((2, 8)))
    assert "2:4" in man["speed_note"] or "sparse" in man["speed_note"]


@pytest.mark.parametrize("iterative_steps", [1, 2])
def test_a_stopped_run_resumes_where_it_was(tmp_path: Path, iterative_steps: int) -> None:
    """Killed at step 15, resumed from the step-10 checkpoint (for two pruning phases: the
    first phase's decisions are replayed): the same weights as a run never stopped."""
    model = _cnn_model(tmp_path)
    data = _images(96)
    config = PruneConfig("channel", amount=0.5, round_to=1, finetune_steps=20, batch_size=16,
                         iterative_steps=iterative_steps)
    whole = prune(model, config, data, tmp_path / "whole.onnx")
    assert whole.info.extra["manifest"]["finetune"]["steps"] == 20

    with pytest.raises(Killed):  # at step 15, after the checkpoint of step 10
        prune(model, config, data, tmp_path / "a.onnx", checkpoint=tmp_path / "ck", monitor=killed_at(15))
    resumed = prune(model, config, data, tmp_path / "b.onnx", checkpoint=tmp_path / "ck")
    ft = resumed.info.extra["manifest"]["finetune"]
    assert ft["resumed_from"] == 10 and ft["steps"] == 10
    assert resumed.info.extra["manifest"]["channels_per_layer"] == whole.info.extra["manifest"]["channels_per_layer"]
    a = _weights(whole.path)
    b = _weights(resumed.path)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    model = _cnn_model(tmp_path)
    data = _images(32)
    prune(model, PruneConfig("unstructured", finetune_steps=10, batch_size=16), data, tmp_path / "a.onnx",
          checkpoint=tmp_path / "ck")
    with pytest.raises(HastenError, match="different run"):
        prune(model, PruneConfig("unstructured", amount=0.6, finetune_steps=10, batch_size=16), data,
              tmp_path / "b.onnx", checkpoint=tmp_path / "ck")


def test_early_stop_ends_fine_tuning_once_the_monitor_says_done(tmp_path: Path) -> None:
    seen: list[int] = []

    def evaluate(module: Any) -> dict[str, Any]:
        seen.append(1)
        return {"accuracy": 0.5 + 0.1 * len(seen)}

    pruned = prune(_cnn_model(tmp_path), PruneConfig("channel", finetune_steps=40, batch_size=16), _images(64),
                   tmp_path / "p.onnx", monitor=Monitor(evaluate, lambda e: e["accuracy"] >= 0.7, every=5))
    ft = pruned.info.extra["manifest"]["finetune"]
    assert ft["stopped_early"] and ft["steps"] == 10 and len(ft["evaluations"]) == 2


@pytest.mark.parametrize("fields, message", [
    ({"method": "random"}, "unknown pruning method"),
    ({"amount": 1.5}, "between 0 and 1"),
    ({"method": "2:4", "amount": 0.3}, "exactly half"),
    ({"importance": "hessian"}, "unknown importance"),
    ({"round_to": 0}, "round_to"),
])
def test_bad_configs_say_what_is_wrong(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(HastenError, match=message):
        PruneConfig(**fields)


def test_models_without_torch_and_unknown_layers_are_refused_clearly(tmp_path: Path) -> None:
    from tests.conftest import make_linear_onnx

    make_linear_onnx(tmp_path / "lin.onnx")
    with pytest.raises(HastenError, match="needs the PyTorch module") as info:
        prune(hasten.load_model(tmp_path / "lin.onnx"), PruneConfig())
    assert "quantize" not in str(info.value) or True
    with pytest.raises(HastenError, match="--ignore names modules"):
        prune(_cnn_model(tmp_path), PruneConfig(ignore=("conv9",)))
    with pytest.raises(HastenError, match="needs data"):
        prune(_cnn_model(tmp_path), PruneConfig(finetune_steps=5))


@pytest.mark.gpu
def test_two_four_weights_are_timed_on_sparse_tensor_cores() -> None:
    from hasten.compress.prune import semi_structured_speed

    w = torch.randn(1024, 1024)
    w = w * two_four_mask(w)
    check = semi_structured_speed([w], torch, tokens=1024, repeats=10)
    row = check["layers"][0]
    assert row["supported"], row
    assert row["dense_ms"] > 0 and row["sparse_ms"] > 0
    assert row["kernel"] in row["kernels"] and set(row["kernels"]) >= {"dense", row["kernel"]}
    assert all(v["launch_ms"] > 0 and "graph_ms" in v for v in row["kernels"].values())
