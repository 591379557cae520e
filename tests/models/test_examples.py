"""The built-in examples load offline and compute what their source framework computes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import hasten
from hasten.models.examples import digits, minilm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm_model() -> hasten.Model:
    return hasten.load_model("minilm")


def test_minilm_specs(minilm_model) -> None:
    assert [s.name for s in minilm_model.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(s.dtype == "int64" and s.shape == (-1, -1) for s in minilm_model.inputs)
    assert minilm_model.outputs[0].name == "sentence_embedding" and minilm_model.outputs[0].shape == (-1, 384)


def test_evaluation_sentences_are_many_varied_and_unique() -> None:
    texts = minilm.sentences()
    assert len(texts) >= 500 and len(set(texts)) == len(texts)
    words = np.array([len(t.split()) for t in texts])
    assert (words <= 4).sum() >= 40 and (words >= 40).sum() >= 40  # short and long ones


def test_minilm_onnx_matches_sentence_transformers(minilm_model) -> None:
    from sentence_transformers import SentenceTransformer

    texts = minilm.sentences()
    ref = SentenceTransformer(str(minilm.package_folder()), device="cpu").encode(texts, batch_size=32)
    runner = hasten.compile(minilm_model, "ort-cpu")
    data = hasten.load_dataset("minilm", minilm_model)
    got = np.concatenate([runner.run(data.batch(i, min(32, len(data) - i)))["sentence_embedding"]
                          for i in range(0, len(data), 32)])
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999, f"worst cosine {cos.min():.6f} on: {texts[int(cos.argmin())]!r}"
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # normalised in-graph


def test_minilm_torch_eager_matches_onnx(minilm_model) -> None:
    feed = minilm_model.text_encoder.encode(["Thanks.", "A longer sentence, padded next to a short one."])
    onnx_out = hasten.compile(minilm_model, "ort-cpu").run(feed)["sentence_embedding"]
    torch_out = hasten.compile(minilm_model, "torch-eager").run(feed)["sentence_embedding"]
    np.testing.assert_allclose(onnx_out, torch_out, atol=1e-5)


def test_sentence_transformers_folder_loads(minilm_model, tmp_path: Path) -> None:
    folder = tmp_path / "my-encoder"
    shutil.copytree(minilm.package_folder(), folder)
    model = hasten.load_model(folder)
    assert model.info.source == "sentence-transformers" and model.name == "my-encoder"
    feed = model.text_encoder.encode(["How do I reset my password?"])
    a = hasten.compile(model, "ort-cpu").run(feed)["sentence_embedding"]
    b = hasten.compile(minilm_model, "ort-cpu").run(feed)["sentence_embedding"]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_sentence_transformers_folder_with_unsupported_modules(tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "x.Dense"}]))
    with pytest.raises(hasten.HastenError, match="supports Transformer"):
        hasten.load_model(folder)


def test_digits_cnn_is_accurate_deterministic_and_cached() -> None:
    model = hasten.load_model("digits-cnn")
    facts = json.loads((digits.folder() / "facts.json").read_text())
    data = hasten.load_dataset("digits-cnn", model)
    assert len(data) == 360 and data.labels is not None
    runner = hasten.compile(model, "ort-cpu")
    logits = runner.run(data.batch(0, len(data)))["logits"]
    accuracy = float((logits.argmax(1) == data.labels).mean())
    assert accuracy >= 0.97
    assert accuracy == pytest.approx(facts["test_accuracy"], abs=1 / 360)  # ONNX == torch, to one image
    # a second load uses the cache: nothing is retrained or rewritten
    stamp = (digits.folder() / "weights.npz").stat().st_mtime_ns
    again = hasten.load_model("digits-cnn")
    assert (digits.folder() / "weights.npz").stat().st_mtime_ns == stamp
    torch_logits = hasten.compile(again, "torch-eager").run(data.batch(0, 16))["logits"]
    np.testing.assert_allclose(torch_logits, logits[:16], atol=1e-4)


def test_digits_split_is_fixed() -> None:
    _, _, x_te, y_te = digits.split()
    _, _, x_te2, y_te2 = digits.split()
    np.testing.assert_array_equal(y_te, y_te2)
    np.testing.assert_array_equal(x_te, x_te2)
    assert x_te.shape == (360, 1, 8, 8) and x_te.dtype == np.float32
