"""Loading a torch.nn.Module: exported with dynamic batch (and sequence) axes; outputs match torch."""

from __future__ import annotations

import numpy as np
import pytest

import hasten
from hasten.core import HastenError

torch = pytest.importorskip("torch")


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))

    def forward(self, features):  # noqa: ANN001
        return self.net(features)


class TokenPooler(torch.nn.Module):
    """Token ids + mask -> masked mean of embeddings, like a tiny text encoder."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(50, 8)

    def forward(self, input_ids, attention_mask):  # noqa: ANN001
        m = attention_mask.unsqueeze(-1).float()
        return (self.emb(input_ids) * m).sum(1) / m.sum(1).clamp(min=1.0)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_mlp_exports_with_dynamic_batch_and_matches_torch(tmp_path, exporter) -> None:
    module = Mlp().eval()
    model = hasten.load_model(module, example_input=torch.randn(2, 6), exporter=exporter, path=tmp_path / "m.onnx")
    assert model.info.source == "torch" and model.has_torch
    assert model.inputs[0].name == "features" and model.inputs[0].shape == (-1, 6)
    assert model.outputs[0].shape == (-1, 2)
    x = np.random.default_rng(0).standard_normal((7, 6)).astype(np.float32)  # batch 7 != example's 2
    with torch.inference_mode():
        ref = module(torch.from_numpy(x)).numpy()
    for backend in ("ort-cpu", "torch-eager"):
        got = hasten.compile(model, backend, hasten.BackendConfig(threads=1)).run({"features": x})["output"]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_token_inputs_get_a_dynamic_sequence_axis(tmp_path) -> None:
    module = TokenPooler().eval()
    ids = torch.randint(0, 50, (2, 5))
    model = hasten.load_model(module, example_input={"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                              path=tmp_path / "t.onnx", output_names=("pooled",))
    assert [s.shape for s in model.inputs] == [(-1, -1), (-1, -1)]
    assert model.outputs[0].name == "pooled" and model.outputs[0].shape == (-1, 8)
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(0, 50, (3, 11)), "attention_mask": np.ones((3, 11), np.int64)}
    feed["attention_mask"][1, 4:] = 0
    with torch.inference_mode():
        ref = module(*(torch.from_numpy(v) for v in feed.values())).numpy()
    got = hasten.compile(model, "ort-cpu").run(feed)["pooled"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_module_without_example_input_is_a_clear_error() -> None:
    with pytest.raises(HastenError, match="needs an example input"):
        hasten.load_model(Mlp())


def test_torch_eager_refuses_a_model_that_did_not_come_from_torch(linear_onnx) -> None:
    with pytest.raises(HastenError, match="needs a model that came from PyTorch"):
        hasten.compile(hasten.load_model(linear_onnx[0]), "torch-eager")
