"""Distillation: the loss on hand-made logits, students derived from the teacher, resuming, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hasten
from hasten.compress import DynamicInt8, quantize
from hasten.compress.distill import DistillConfig, distill
from hasten.compress.distill_losses import HiddenMatch, kd_loss
from hasten.compress.students import keep_indices, parse_student
from hasten.compress.training import as_tuple
from hasten.core import HastenError
from hasten.runtime import compile
from tests.compress.test_prune import Killed, _cnn_model, _images, _tiny_bert, _weights, killed_at

torch = pytest.importorskip("torch")


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_loss_is_kl_of_softened_distributions_times_t_squared(temperature: float) -> None:
    student = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    teacher = np.array([[1.5, 1.0, -2.0], [0.5, -0.5, 2.0]])
    p = _softmax(teacher / temperature)
    q = _softmax(student / temperature)
    by_hand = float(np.mean(np.sum(p * (np.log(p) - np.log(q)), -1))) * temperature ** 2
    got = float(kd_loss(torch.tensor(student), torch.tensor(teacher), temperature))
    assert got == pytest.approx(by_hand, rel=1e-9)
    assert float(kd_loss(torch.tensor(teacher), torch.tensor(teacher), temperature)) == pytest.approx(0, abs=1e-12)


def test_student_specs_are_read_or_refused_clearly() -> None:
    assert parse_student("layers=3") == ("layers", 3)
    assert parse_student("layers=4,0,2") == ("layers", (0, 2, 4))
    assert parse_student("width=0.5") == ("width", 0.5)
    assert parse_student("my_pkg.students:small") == ("module", "my_pkg.students:small")
    for bad, message in (("layers=0", "layers=N"), ("layers=1,1", "distinct"), ("width=2", "between 0 and 1"),
                         ("tiny", "cannot read --student")):
        with pytest.raises(HastenError, match=message):
            parse_student(bad)
    assert keep_indices(6, 3) == (0, 2, 4)
    assert keep_indices(12, 4) == (0, 3, 6, 9)
    with pytest.raises(HastenError, match="has only 6 blocks"):
        keep_indices(6, (0, 6))
    with pytest.raises(HastenError, match="needs fewer"):
        keep_indices(6, 6)
    with pytest.raises(HastenError, match="alpha"):
        DistillConfig(alpha=1.5)


def test_each_student_block_learns_the_teacher_block_it_replaces() -> None:
    torch.nn.Module()
    blocks = torch.nn.ModuleList([torch.nn.Identity() for _ in range(6)])
    teacher = torch.nn.Module()
    teacher.layers = blocks
    student = torch.nn.Module()
    student.layers = torch.nn.ModuleList([blocks[i] for i in (0, 4, 5)])
    match = HiddenMatch(teacher, student, {"kept_blocks": [0, 4, 5], "teacher_blocks": 6, "blocks": "layers"}, torch)
    assert match.pairs == [(0, 3), (1, 4), (2, 5)]
    match.close()


def test_a_transformer_student_keeps_fewer_blocks_and_runs(tmp_path: Path) -> None:
    teacher = _tiny_bert(tmp_path)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 100, (64, 10)).astype(np.int64)
    data = hasten.Dataset({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    student = distill(teacher, DistillConfig("layers=1", steps=30, lr=1e-3, batch_size=16), data, tmp_path / "s.onnx")
    man = student.info.extra["manifest"]
    assert man["student"]["teacher_blocks"] == 2 and len(man["student"]["kept_blocks"]) == 1
    assert man["student"]["chosen"] == "least output change on training data"
    assert man["loss"].startswith("mse+cosine + 10 x block-output")
    assert man["frozen_embeddings"] is True and man["augment_spans"] == 0  # auto: an embedding student; no texts
    assert man["training"]["steps"] == 30
    assert man["parameters"]["after"]["total"] < man["parameters"]["before"]["total"]
    assert len(student.torch_module().bert.encoder.layer) == 1
    out = compile(student, "ort-cpu").run({"input_ids": ids[:3], "attention_mask": np.ones_like(ids[:3])})
    assert next(iter(out.values())).shape == (3, 64)
    evenly = distill(teacher, DistillConfig("layers=1", steps=1, batch_size=16, hidden_weight=0), data,
                     tmp_path / "e.onnx")
    assert "block-output" not in evenly.info.extra["manifest"]["loss"]


def test_the_student_trains_without_dropout_unless_asked(tmp_path: Path) -> None:
    teacher = _tiny_bert(tmp_path)
    before = [m.p for m in teacher.torch_module().modules() if isinstance(m, torch.nn.Dropout)]
    assert before and max(before) > 0
    ids = np.random.default_rng(0).integers(1, 100, (32, 8)).astype(np.int64)
    data = hasten.Dataset({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    off = distill(teacher, DistillConfig("layers=1", steps=2, batch_size=16), data, tmp_path / "off.onnx")
    assert off.info.extra["manifest"]["config"]["dropout"] is None  # auto: off for an embedding student
    assert off.info.extra["manifest"]["dropout"] is False
    assert all(m.p == 0 for m in off.torch_module().modules() if isinstance(m, torch.nn.Dropout))
    on = distill(teacher, DistillConfig("layers=1", steps=2, batch_size=16, dropout=True), data, tmp_path / "on.onnx")
    assert max(m.p for m in on.torch_module().modules() if isinstance(m, torch.nn.Dropout)) > 0
    assert [m.p for m in teacher.torch_module().modules() if isinstance(m, torch.nn.Dropout)] == before


def test_a_classifier_student_learns_soft_targets_and_a_stopped_run_resumes(tmp_path: Path) -> None:
    teacher = _cnn_model(tmp_path)
    data = _images(128)
    config = DistillConfig("width=0.5", steps=100, lr=1e-3, batch_size=16)
    whole = distill(teacher, config, data, tmp_path / "whole.onnx")
    man = whole.info.extra["manifest"]
    assert man["loss"] == "kl" and man["temperature"] == 4.0 and man["alpha"] == 0.7
    assert man["dropout"] is True  # auto: a classifier student keeps its dropout
    assert man["frozen_embeddings"] is False and man["augment_spans"] == 0  # auto: a classifier trains its tables
    assert man["student"]["kind"] == "width"
    assert man["parameters"]["after"]["total"] < man["parameters"]["before"]["total"] / 2

    with pytest.raises(Killed):  # at step 75, after the checkpoint of step 50
        distill(teacher, config, data, tmp_path / "a.onnx", checkpoint=tmp_path / "ck", monitor=killed_at(75))
    resumed = distill(teacher, config, data, tmp_path / "b.onnx", checkpoint=tmp_path / "ck")
    training = resumed.info.extra["manifest"]["training"]
    assert training["resumed_from"] == 50 and training["steps"] == 100
    a, b = _weights(whole.path), _weights(resumed.path)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)


def small_student() -> Any:  # a module:function student for the next test
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))


def wrong_student() -> Any:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 7))


def test_a_given_student_is_checked_against_the_teacher(tmp_path: Path) -> None:
    teacher = _cnn_model(tmp_path)
    data = _images(32)
    student = distill(teacher, DistillConfig(f"{__name__}:small_student", steps=5, batch_size=16), data,
                      tmp_path / "s.onnx")
    assert student.info.extra["manifest"]["student"] == {"kind": "module", "function": f"{__name__}:small_student"}
    with pytest.raises(HastenError, match="returns shapes"):
        distill(teacher, DistillConfig(f"{__name__}:wrong_student", steps=5), data)
    with pytest.raises(HastenError, match="cannot load the student"):
        distill(teacher, DistillConfig("no_such_module_here:f", steps=5), data)
    with pytest.raises(HastenError, match="needs a transformer"):
        distill(teacher, DistillConfig("layers=1", steps=5), data)
    with pytest.raises(HastenError, match="at least 2 examples"):
        distill(teacher, DistillConfig("width=0.5", steps=5), _images(1))
    assert not math.isnan(student.info.extra["manifest"]["training"]["final_loss"])


def test_the_training_device_is_checked_and_recorded(tmp_path: Path) -> None:
    from hasten.compress.training import training_device

    for bad in ("gpu", "cuda:x", "tpu", ""):
        with pytest.raises(HastenError, match="unknown training device"):
            DistillConfig(device=bad)
    assert training_device("cpu", torch).type == "cpu"
    if not torch.cuda.is_available():
        assert training_device("auto", torch).type == "cpu"
        with pytest.raises(HastenError, match="sees no CUDA GPU"):
            training_device("cuda", torch)
    teacher = _tiny_bert(tmp_path)
    ids = np.random.default_rng(0).integers(1, 100, (32, 8)).astype(np.int64)
    data = hasten.Dataset({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    student = distill(teacher, DistillConfig("layers=1", steps=2, batch_size=16, device="cpu"), data, tmp_path / "s.onnx")
    assert student.info.extra["manifest"]["training"]["device"] == "cpu"


def test_a_time_limit_stops_training_and_the_run_resumes_without_it(tmp_path: Path) -> None:
    teacher = _tiny_bert(tmp_path)
    ids = np.random.default_rng(0).integers(1, 100, (32, 8)).astype(np.int64)
    data = hasten.Dataset({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    with pytest.raises(HastenError, match="time_limit_s must be > 0"):
        DistillConfig(time_limit_s=0)
    cut = distill(teacher, DistillConfig("layers=1", steps=20, batch_size=16, time_limit_s=1e-9), data,
                  tmp_path / "cut.onnx", checkpoint=tmp_path / "ck")
    training = cut.info.extra["manifest"]["training"]
    assert training["steps"] == 1 and training["stopped_at_time_limit"] is True  # every step outlasts 1 ns
    whole = distill(teacher, DistillConfig("layers=1", steps=20, batch_size=16), data, tmp_path / "w.onnx",
                    checkpoint=tmp_path / "ck")  # the limit is not part of the run: its checkpoint resumes
    training = whole.info.extra["manifest"]["training"]
    assert training["resumed_from"] == 1 and training["steps"] == 20 and training["stopped_at_time_limit"] is False


def test_frozen_embeddings_stay_the_teachers_and_spans_are_pieces_of_the_texts(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from hasten.compress.distill import _augmented

    teacher = _tiny_bert(tmp_path)
    ids = np.random.default_rng(0).integers(1, 100, (32, 8)).astype(np.int64)
    data = hasten.Dataset({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    frozen = distill(teacher, DistillConfig("layers=1", steps=5, lr=1e-2, batch_size=16, freeze_embeddings=True), data,
                     tmp_path / "f.onnx")
    moved = distill(teacher, DistillConfig("layers=1", steps=5, lr=1e-2, batch_size=16, freeze_embeddings=False), data,
                    tmp_path / "m.onnx")
    table = teacher.torch_module().bert.embeddings.word_embeddings.weight
    assert torch.equal(frozen.torch_module().bert.embeddings.word_embeddings.weight, table)
    assert not torch.equal(moved.torch_module().bert.embeddings.word_embeddings.weight, table)

    texts = ["the cat sat on the mat", "hello", "where are you now"]
    encoder = SimpleNamespace(encode=lambda t: {"input_ids": np.zeros((len(t), 4), np.int64)})
    fake = SimpleNamespace(text_encoder=encoder)
    got = _augmented(fake, hasten.Dataset(encoder.encode(texts), None, "t", texts=texts), 3, 0, seed=0)
    assert got.texts[:3] == texts and got.name == "t+3-spans" and len(got) == len(got.texts)
    spans = got.texts[3:]
    assert 0 < len(spans) <= 6 and len(set(spans)) == len(spans)  # "hello" has no shorter span
    for span in spans:
        words = span.split()
        assert any(words == t.split()[i:i + len(words)] and len(words) < len(t.split())
                   for t in texts for i in range(len(t.split())))
    assert _augmented(fake, hasten.Dataset(encoder.encode(texts), None, "t", texts=texts), 3, 0, seed=0).texts == got.texts
    with pytest.raises(HastenError, match="need text data"):
        _augmented(fake, data, 1, 0, seed=0)
    labelled = hasten.Dataset(encoder.encode(texts), np.array([0, 1, 0]), "t", texts=texts)
    with pytest.raises(HastenError, match="has labels of its own"):
        _augmented(fake, labelled, 0, 1, seed=0)


def test_swapped_copies_replace_words_by_words_that_follow_the_previous_one_in_the_text() -> None:
    from types import SimpleNamespace

    from hasten.compress.distill import _augmented

    rng = np.random.default_rng(1)
    vocab = [f"w{i}" for i in range(40)]
    texts = [" ".join(rng.choice(vocab, 12)) for _ in range(60)]
    encoder = SimpleNamespace(encode=lambda t: {"input_ids": np.zeros((len(t), 4), np.int64)})
    fake = SimpleNamespace(text_encoder=encoder)
    got = _augmented(fake, hasten.Dataset(encoder.encode(texts), None, "t", texts=texts), 0, 2, seed=0)
    assert got.texts[:60] == texts and got.name == "t+2-swaps" and len(got) == len(got.texts)
    copies = got.texts[60:]
    assert 100 <= len(copies) <= 120 and len(set(copies)) == len(copies) and not set(copies) & set(texts)
    pairs = {(a, b) for t in texts for a, b in zip(t.split(), t.split()[1:])}
    for copy in copies:
        words = copy.split()
        assert len(words) == 12
        source = max(texts, key=lambda t: sum(a == b for a, b in zip(t.split(), words))).split()
        swapped = [i for i in range(12) if words[i] != source[i]]
        assert swapped and swapped[0] > 0 and len(swapped) <= 9  # the first word stays; about a quarter change
        assert all((words[i - 1], words[i]) in pairs for i in swapped)  # each new word follows its neighbour somewhere
    both = _augmented(fake, hasten.Dataset(encoder.encode(texts), None, "t", texts=texts), 1, 1, seed=0)
    assert both.name == "t+1-spans+1-swaps" and len(both) > 60


def test_attention_transfer_loss_is_zero_for_the_teacher_itself_and_trains_the_student(tmp_path: Path) -> None:
    import copy

    from hasten.compress.distill_losses import AttentionMatch

    teacher = _tiny_bert(tmp_path)
    module = teacher.torch_module().eval()
    how = {"blocks": "bert.encoder.layer", "kept_blocks": [0, 1], "teacher_blocks": 2}
    ids = torch.from_numpy(np.random.default_rng(0).integers(1, 100, (4, 7)))
    mask = torch.ones(4, 7, dtype=torch.int64)
    mask[0, 5:] = 0
    twin = copy.deepcopy(module)
    match = AttentionMatch(module, twin, how, torch)
    with torch.no_grad():
        module(input_ids=ids, attention_mask=mask)
        twin(input_ids=ids, attention_mask=mask)
        assert float(match.loss(mask)) == pytest.approx(0.0, abs=1e-6)
        twin.bert.encoder.layer[-1].attention.self.key.weight.normal_(0, 0.1)
        twin.bert.encoder.layer[-1].attention.self.value.weight.normal_(0, 0.1)
        twin(input_ids=ids, attention_mask=mask)
        got = float(match.loss(mask))
        # the reference: the attention maps the model itself returns, and value relations by hand
        ref = {}
        for who, m in (("t", module), ("s", twin)):
            out = m.bert(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
            v = m.bert.encoder.layer[-1].attention.self.value(out.hidden_states[-2])
            v = v.view(4, 7, 4, 16).transpose(1, 2)
            rel = (v @ v.transpose(-1, -2) / 4.0).masked_fill(mask[:, None, None, :] == 0, -1e9).softmax(-1)
            ref[who] = (out.attentions[-1], rel)
        want = 0.0
        for k in range(2):
            t, s_ = ref["t"][k], ref["s"][k]
            kl = (t * (t.clamp_min(1e-12).log() - s_.clamp_min(1e-12).log())).sum(-1).mean(1)
            want += float((kl * mask).sum() / mask.sum())
        assert want > 1e-2 and got == pytest.approx(want, rel=1e-4)
    match.close()
    data = hasten.Dataset({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    student = distill(teacher, DistillConfig("layers=1", steps=3, batch_size=4, attention_weight=1.0), data,
                      tmp_path / "a.onnx")
    assert student.info.extra["manifest"]["config"]["attention_weight"] == 1.0
    assert student.info.extra["manifest"]["loss"].endswith("+ 1 x last-block attention kl")
    with pytest.raises(HastenError, match="works on layers=N students"):
        DistillConfig("width=0.5", attention_weight=1.0)
    with pytest.raises(HastenError, match="not the kl loss"):
        distill(teacher, DistillConfig("layers=1", steps=1, batch_size=4, loss="kl", attention_weight=1.0), data,
                tmp_path / "k.onnx")
    with pytest.raises(HastenError, match="attention_weight must be >= 0"):
        DistillConfig(attention_weight=-1)
    with pytest.raises(HastenError, match="augment_swaps must be an integer"):
        DistillConfig(augment_swaps=-1)


def test_unlabeled_text_gets_spans_and_a_frozen_table_by_default(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    from hasten.models.corpus import text_dataset

    teacher = hasten.load_model("minilm")
    texts = [f"line {i} says something about the weather today" for i in range(24)]
    student = distill(teacher, DistillConfig("layers=2", steps=1, batch_size=8, max_length=16),
                      text_dataset(teacher, texts, "t"), tmp_path / "s.onnx")
    man = student.info.extra["manifest"]
    assert man["augment_spans"] == 2 and man["frozen_embeddings"] is True
    assert man["training"]["data"]["name"] == "t+2-spans" and 24 < man["training"]["data"]["examples"] <= 72
    # the student file, loaded on its own, takes text with the teacher's tokenizer; so does its INT8 copy
    alone = hasten.load_model(tmp_path / "s.onnx")
    assert alone.text_encoder is not None and man["text_encoder"]["inputs"] == [s.name for s in teacher.inputs]
    assert np.array_equal(alone.text_encoder.encode(texts[:3])["input_ids"], teacher.text_encoder.encode(texts[:3])["input_ids"])
    q = quantize(alone, DynamicInt8(), None, tmp_path / "q.onnx")
    assert hasten.load_model(q.path).text_encoder is not None and len(hasten.load_dataset("everyday", q)) > 1000


def test_a_tokenizer_named_by_a_manifest_is_used_only_when_it_fits(tmp_path: Path, caplog) -> None:
    from tests.conftest import make_linear_onnx

    make_linear_onnx(tmp_path / "m.onnx")  # one input, "x"
    manifest = tmp_path / "m.manifest.json"
    assert hasten.load_model(tmp_path / "m.onnx").text_encoder is None  # no manifest
    manifest.write_text("[1, 2]")
    assert hasten.load_model(tmp_path / "m.onnx").text_encoder is None  # not one of ours
    manifest.write_text(json.dumps({"text_encoder": {"tokenizer": str(tmp_path / "gone.json"), "max_length": 8,
                                                     "inputs": ["x"]}}))
    with caplog.at_level("WARNING"):
        assert hasten.load_model(tmp_path / "m.onnx").text_encoder is None
    assert "gone.json, which cannot be read" in caplog.text and "pass a .npz" in caplog.text
    manifest.write_text(json.dumps({"text_encoder": {"tokenizer": str(tmp_path / "gone.json"), "max_length": 8,
                                                     "inputs": ["input_ids", "attention_mask"]}}))
    with caplog.at_level("WARNING"):
        assert hasten.load_model(tmp_path / "m.onnx").text_encoder is None
    assert "not this model's ['x']" in caplog.text


@pytest.mark.gpu
def test_a_student_trains_on_the_gpu_and_its_checkpoint_resumes_on_the_cpu(tmp_path: Path) -> None:
    teacher = _tiny_bert(tmp_path)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 100, (64, 10)).astype(np.int64)
    data = hasten.Dataset({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    config = DistillConfig("layers=1", steps=100, lr=1e-3, batch_size=16, device="cuda")
    with pytest.raises(Killed):  # at step 75, after the checkpoint of step 50, written from the GPU
        distill(teacher, config, data, tmp_path / "a.onnx", checkpoint=tmp_path / "ck", monitor=killed_at(75))
    assert all(p.device.type == "cpu" for p in teacher.torch_module().parameters())  # the teacher came back
    on_gpu = distill(teacher, config, data, tmp_path / "g.onnx")
    man = on_gpu.info.extra["manifest"]
    assert man["training"]["device"].startswith("cuda:0 (") and man["training"]["steps"] == 100
    resumed = distill(teacher, DistillConfig("layers=1", steps=100, lr=1e-3, batch_size=16, device="cpu"), data,
                      tmp_path / "b.onnx", checkpoint=tmp_path / "ck")
    assert resumed.info.extra["manifest"]["training"]["resumed_from"] == 50
    feed = {"input_ids": ids[:16], "attention_mask": np.ones_like(ids[:16])}
    want = as_tuple(teacher.torch_module()(*(torch.from_numpy(v) for v in feed.values())))[0].detach().numpy()

    def cosine(model: hasten.Model) -> float:
        got = next(iter(compile(model, "ort-cpu").run(feed).values()))
        return float(np.mean(np.sum(got * want, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))))

    one_step = distill(teacher, DistillConfig("layers=1", steps=1, batch_size=16, device="cuda"), data, tmp_path / "o.onnx")
    assert cosine(on_gpu) > cosine(one_step)  # 100 GPU steps brought the exported student closer to the teacher
    torch_out = as_tuple(on_gpu.torch_module()(*(torch.from_numpy(v) for v in feed.values())))[0].detach().numpy()
    np.testing.assert_allclose(next(iter(compile(on_gpu, "ort-cpu").run(feed).values())), torch_out, rtol=1e-4, atol=1e-4)


class Gadget:  # an object a checkpoint must not smuggle in (weights_only refuses to build it)
    pass


def test_a_finished_student_trains_further_from_its_checkpoint(tmp_path: Path) -> None:
    teacher = _tiny_bert(tmp_path)
    ids = np.random.default_rng(0).integers(1, 100, (64, 10)).astype(np.int64)
    data = hasten.Dataset({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    first = distill(teacher, DistillConfig("layers=1", steps=30, lr=1e-3, batch_size=16), data, tmp_path / "a.onnx",
                    checkpoint=tmp_path / "ck")
    kept = first.info.extra["manifest"]["student"]["kept_blocks"]
    assert len(kept) == 1
    # the checkpoint says which teacher block its student kept; a run started from it keeps that one,
    # whatever its own probe would choose (here the record is changed to the other block to show it)
    meta = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    assert meta["student"]["kept_blocks"] == kept
    other = [1 - kept[0]]
    meta["student"]["kept_blocks"] = other
    (tmp_path / "ck" / "checkpoint.json").write_text(json.dumps(meta))
    config = DistillConfig("layers=1", steps=1, lr=1e-12, batch_size=16, seed=1, init=str(tmp_path / "ck"))
    further = distill(teacher, config, data, tmp_path / "b.onnx", checkpoint=tmp_path / "ck2")
    man = further.info.extra["manifest"]
    assert man["init"] == {"path": str(tmp_path / "ck" / "checkpoint.pt"), "step": 30}
    assert man["student"]["kept_blocks"] == other
    assert man["student"]["chosen"] == "those of the init checkpoint's student"
    a, b = _weights(first.path), _weights(further.path)  # one step at lr 1e-12: the first run's weights
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)
    fresh = _weights(distill(teacher, DistillConfig("layers=1", steps=1, lr=1e-12, batch_size=16), data,
                             tmp_path / "c.onnx").path)  # from the teacher's weights instead: they differ
    assert any(not np.allclose(a[name], fresh[name], atol=1e-4) for name in a)


def test_init_checkpoints_that_cannot_serve_are_refused_clearly(tmp_path: Path) -> None:
    teacher = _tiny_bert(tmp_path)
    ids = np.random.default_rng(0).integers(1, 100, (32, 8)).astype(np.int64)
    data = hasten.Dataset({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    with pytest.raises(HastenError, match="no checkpoint at"):
        DistillConfig("layers=1", init=str(tmp_path / "missing"))
    (tmp_path / "other").mkdir()
    torch.save({"module": {"weight": torch.zeros(3)}}, tmp_path / "other" / "checkpoint.pt")
    with pytest.raises(HastenError, match="do not fit the student layers=1"):
        distill(teacher, DistillConfig("layers=1", steps=1, batch_size=16, init=str(tmp_path / "other")), data,
                tmp_path / "s.onnx")
    (tmp_path / "code").mkdir()
    torch.save({"module": Gadget()}, tmp_path / "code" / "checkpoint.pt")
    with pytest.raises(HastenError, match="do not fit the student"):  # never unpickled into an object
        distill(teacher, DistillConfig("layers=1", steps=1, batch_size=16, init=str(tmp_path / "code" / "checkpoint.pt")),
                data, tmp_path / "s.onnx")
    with pytest.raises(HastenError, match="same folder"):
        distill(teacher, DistillConfig("layers=1", steps=1, batch_size=16, init=str(tmp_path / "other")), data,
                tmp_path / "s.onnx", checkpoint=tmp_path / "other")
    (tmp_path / "other" / "checkpoint.json").write_text(
        json.dumps({"step": 5, "student": {"kind": "layers", "kept_blocks": [0, 1]}}))
    with pytest.raises(HastenError, match="does not match the init checkpoint's student"):
        distill(teacher, DistillConfig("layers=1", steps=1, batch_size=16, init=str(tmp_path / "other")), data,
                tmp_path / "s.onnx")


def test_the_report_says_where_a_student_started() -> None:
    from rich.console import Console

    from rich.table import Table

    from hasten.plan.report import _print_layers

    def shown(m: dict[str, Any]) -> str:
        con = Console(record=True, width=200)
        _print_layers(con, {"method": "distill", **m}, Table)
        return con.export_text()

    blocks = {"kind": "layers", "kept_blocks": [0, 4, 5], "teacher_blocks": 6, "blocks": "encoder.layer"}
    assert "[0, 4, 5] of the teacher's 6 (encoder.layer), initialised from the teacher" in shown({"student": blocks})
    resumed = shown({"student": blocks, "init": {"path": "ck/checkpoint.pt", "step": 30}})
    assert "(encoder.layer), started from ck/checkpoint.pt (step 30)" in resumed and "from the teacher" not in resumed
    assert "student: started from ck/checkpoint.pt" in shown({"student": {"kind": "width"}, "init": {"path": "ck/checkpoint.pt", "step": None}})
