"""`distill()`: train a smaller student to imitate a teacher.

Classifiers learn the teacher's temperature-softened logits (KL divergence × T², Hinton et al.)
plus the hard labels when there are any; sentence encoders learn the teacher's embeddings (MSE
and/or cosine) from unlabeled text. The student is given (``module:function``) or derived from
the teacher: ``layers=3`` keeps evenly spaced transformer blocks (``layers=0,2,4`` names them),
``width=0.5`` keeps the most important half of the channels; either way it starts from the
teacher's weights (`hasten.compress.students`); the losses and the block-output and attention
matching live in `hasten.compress.distill_losses`. Runs resume from checkpoints. torch is
imported lazily.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hasten.compress.distill_losses import AttentionMatch, HiddenMatch, embedding_loss, kd_loss
from hasten.compress.students import derive_student, parse_student
from hasten.compress.training import (Checkpoint, as_tuple, check_device, device_name, fingerprint, fit,
                                      is_classifier, shuffled_batches, training_device, watching)
from hasten.core import HastenError

if TYPE_CHECKING:
    from hasten.compress.training import Monitor
    from hasten.models import Dataset, Model

log = logging.getLogger(__name__)
LOSSES = ("auto", "kl", "mse", "cosine", "mse+cosine")
AUTO_SPANS = 2  # random word spans per text that augment_spans=None adds to unlabeled text
SWAP_RATE = 0.25  # the share of words an augment_swaps copy replaces
PROBE_EXAMPLES = 128  # training examples used to choose which blocks a layers=N student keeps


@dataclass(frozen=True)
class DistillConfig:
    """``student``: ``layers=N`` | ``layers=i,j,k`` | ``width=F`` | ``module:function``.
    ``alpha`` weighs the soft-target loss against the hard-label loss (classifiers with labels);
    ``temperature`` softens both distributions; ``loss`` ``auto`` is ``kl`` for classifiers and
    ``mse+cosine`` for embeddings. The learning rate follows a cosine decay over ``steps``.
    ``hidden_weight`` adds, for ``layers=`` students, an MSE between each student block's output
    and the teacher block it stands in for (every token: far more signal per sentence than the
    pooled embedding alone); 0 turns it off. ``dropout``: whether the student's dropout layers stay
    active while it trains; ``None`` (auto) turns them off for embedding losses, where the student
    imitates a deterministic teacher (minilm, 3 blocks, 400 steps: mean cosine 0.903 without, 0.893
    with), and keeps them for classifiers, where they regularise (digits-cnn, width 0.5, 400 steps:
    accuracy 0.983 with, 0.978 without); batch-norm layers train either way. ``device``: where
    the student trains, ``auto`` (a CUDA GPU when torch sees one, else the CPU), ``cpu``, ``cuda`` or
    ``cuda:N``; on a GPU, float32 matrix products use TF32 while training. The result is exported
    and checked on the CPU either way, and a checkpoint resumes on another device. ``time_limit_s``
    stops training after that many seconds in the loop (the student so far is exported and checked,
    with its learning-rate schedule cut short; the manifest says so). ``freeze_embeddings`` keeps
    the student's embedding tables (``nn.Embedding``) as the teacher's: only tokens in the training
    text would move, and the rest would no longer match; ``None`` (auto) freezes them for embedding
    losses. ``augment_spans`` adds that many random word spans of each training text (one word up
    to all but one), labelled by the teacher like the rest: short inputs the text alone holds few
    of; ``None`` (auto) is 2 for unlabeled text, 0 otherwise (spans have no labels). minilm, 3
    blocks, trained on a GPU for ~9,000 steps of 64: 0.9435 frozen, 0.9443 with 2 spans, 0.9450
    both; the same text without either levelled off at 0.933 (20,700 steps): the student had learnt
    its training text (0.992 there). ``augment_swaps`` adds that many copies of each text with about
    a quarter of its words replaced by words that follow the previous word elsewhere in the text
    (new contexts that stay locally plausible). ``attention_weight`` adds, for ``layers=`` students
    of BERT-like teachers, MiniLM's self-attention transfer on the last block (KL divergence of the
    attention maps and of the value relations). Both are off by default: minilm, 3 blocks, 6,000
    steps of 32 on the CPU, 0.9404 without either, 0.9418 with 2 swaps, 0.9408 with attention
    weight 1 (within a run's noise). ``init``: a checkpoint of an earlier run (its ``--checkpoint``
    folder, or the ``checkpoint.pt`` in it) whose student weights this one starts from instead of
    the teacher's, with a fresh optimizer and learning-rate schedule: a finished student trained
    further (a warm restart; the same teacher and ``student`` spec, so the shapes fit). Read with
    ``weights_only``: a checkpoint can never run code (what restarts gained on minilm:
    BENCHMARKS.md)."""

    student: str = "layers=3"
    steps: int = 1000
    temperature: float = 4.0
    alpha: float = 0.7
    loss: str = "auto"
    lr: float = 5e-4
    batch_size: int = 32
    max_length: int = 64
    hidden_weight: float = 10.0
    dropout: bool | None = None
    seed: int = 0
    device: str = "auto"
    time_limit_s: float | None = None
    freeze_embeddings: bool | None = None
    augment_spans: int | None = None
    augment_swaps: int = 0
    attention_weight: float = 0.0
    init: str | None = None

    def __post_init__(self) -> None:
        parse_student(self.student)
        if self.loss not in LOSSES:
            raise HastenError(f"unknown distillation loss '{self.loss}'", hint="use one of: " + ", ".join(LOSSES))
        if not 0 <= self.alpha <= 1:
            raise HastenError(f"alpha must be within [0, 1], got {self.alpha}", hint="1 = soft targets only")
        if not self.temperature > 0:
            raise HastenError(f"temperature must be > 0, got {self.temperature}", hint="typical values: 2 to 8")
        for name, value in (("steps", self.steps), ("batch_size", self.batch_size), ("max_length", self.max_length)):
            if not isinstance(value, int) or value < 1:
                raise HastenError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise HastenError(f"lr must be > 0, got {self.lr!r}")
        if not self.hidden_weight >= 0:
            raise HastenError(f"hidden_weight must be >= 0, got {self.hidden_weight!r}")
        check_device(self.device)
        if self.augment_spans is not None and (not isinstance(self.augment_spans, int) or self.augment_spans < 0):
            raise HastenError(f"augment_spans must be an integer >= 0, got {self.augment_spans!r}")
        if not isinstance(self.augment_swaps, int) or self.augment_swaps < 0:
            raise HastenError(f"augment_swaps must be an integer >= 0, got {self.augment_swaps!r}")
        if not self.attention_weight >= 0:
            raise HastenError(f"attention_weight must be >= 0, got {self.attention_weight!r}")
        if self.attention_weight and parse_student(self.student)[0] != "layers":
            raise HastenError(f"attention_weight works on layers=N students (their blocks are the teacher's); "
                              f"--student {self.student} is not one", hint="leave --attention-weight at 0")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise HastenError(f"time_limit_s must be > 0 seconds, got {self.time_limit_s!r}")
        if self.init is not None:
            init_weights(self.init)  # a missing file is an error now, not after the data is read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- training

def distill(teacher: Model, config: DistillConfig, data: Dataset, out: str | Path | None = None, *,
            monitor: Monitor | None = None, checkpoint: str | Path | None = None) -> Model:
    """Distil ``teacher`` into the student ``config.student`` on ``data``; export to ``out``;
    return the student `Model` (``info.extra["manifest"]`` says how)."""
    import tempfile

    from hasten.compress.derived import export_derived
    from hasten.models.torch_export import import_torch

    if not teacher.has_torch:
        raise HastenError(f"distillation needs the PyTorch module of '{teacher.name}', which was loaded from "
                          f"{teacher.info.source}",
                          hint="load it from torch, a sentence-transformers folder or a built-in example")
    if data is None or len(data) < 2:
        raise HastenError("distillation needs training data (at least 2 examples)",
                          hint="pass --data file.npz, or text: --data sentences.txt, --data pydoc or --data pydoc+markov-wiki")
    torch = import_torch()
    device = training_device(config.device, torch)  # checked before any work
    started = time.perf_counter()
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    spans = config.augment_spans
    if spans is None:  # auto: unlabeled text gets spans (labelled data would lose its labels)
        spans = AUTO_SPANS if data.texts is not None and data.labels is None and teacher.text_encoder is not None else 0
    if spans or config.augment_swaps:
        data = _augmented(teacher, data, spans, config.augment_swaps, config.seed)
    teacher_module = teacher.torch_module().eval()
    names = [s.name for s in teacher.inputs]
    batches = shuffled_batches(names, _truncated(data, config.max_length), config.batch_size, config.steps, torch,
                               config.seed)
    probe = [feed for feed, _ in batches[: max(1, PROBE_EXAMPLES // config.batch_size)]]
    init = _init_facts(config, checkpoint) if config.init else None
    student, how = derive_student(teacher, config.student, torch, probe, _init_blocks(config.student, init))
    if init:
        _load_init(student, init["path"], config.student, torch)
        if init["kept_blocks"]:
            how["chosen"] = "those of the init checkpoint's student"
    with _on_device(device, torch, teacher_module, student):
        fitted, kind, dropout, hidden, frozen = _train(teacher, teacher_module, student, how, config, batches, data, device,
                                                       torch, monitor, checkpoint)
    facts = {"student": how, "teacher": {"name": teacher.name, "path": str(teacher.path)},
             "loss": kind + (f" + {config.hidden_weight:g} x block-output mse" if hidden else "")
             + (f" + {config.attention_weight:g} x last-block attention kl" if config.attention_weight else ""), "temperature": config.temperature if kind == "kl" else None,
             "alpha": config.alpha if kind == "kl" else None, "optimizer": "AdamW, cosine decay", "dropout": dropout,
             "frozen_embeddings": frozen, "augment_spans": spans, "augment_swaps": config.augment_swaps,
             "init": None if init is None else {"path": init["path"], "step": init["step"]},
             "training": {**fitted.to_dict(), "data": {"name": data.name, "examples": len(data)},
                          "distinct_batches": len(batches), "device": device_name(device, torch)}}
    keep = {"num_heads": teacher.info.extra["num_heads"]} if "num_heads" in teacher.info.extra else {}
    if out is None:  # made only now: a run refused on the way leaves no empty folder behind
        out = Path(tempfile.mkdtemp(prefix="hasten-distill-")) / f"{teacher.name}.student.onnx"
    return export_derived(teacher, student, out, "distill", config.to_dict(), facts, started, "student", keep)


def _train(teacher: Model, teacher_module: Any, student: Any, how: dict[str, Any], config: DistillConfig,
           batches: list[Any], data: Dataset, device: Any, torch: Any, monitor: Monitor | None,
           checkpoint: str | Path | None) -> tuple[Any, str, bool, bool, bool]:
    """The training loop of `distill` on ``device`` (both modules are there already): returns
    (fit result, loss kind, dropout kept, block outputs matched, embeddings frozen)."""
    hidden = HiddenMatch(teacher_module, student, how, torch) if how["kind"] == "layers" and config.hidden_weight else None
    attention = AttentionMatch(teacher_module, student, how, torch) if config.attention_weight else None

    def on_device(feed: tuple[Any, ...]) -> tuple[Any, ...]:
        return feed if device.type == "cpu" else tuple(t.to(device, non_blocking=True) for t in feed)

    with torch.no_grad():
        first = as_tuple(teacher_module(*on_device(batches[0][0])))
    classifier = is_classifier(first, batches[0][1]) or (config.loss == "kl" and first[0].ndim == 2)
    kind = config.loss if config.loss != "auto" else ("kl" if classifier else "mse+cosine")
    if kind == "kl" and attention is not None:
        raise HastenError("attention_weight is for sentence encoders' students (embedding losses), not the kl loss",
                          hint="leave --attention-weight at 0")
    if kind == "kl" and not (first[0].ndim == 2 and first[0].shape[1] > 1):
        raise HastenError("the kl loss needs a teacher that outputs logits [batch, classes]",
                          hint="use --loss mse or cosine for embedding models")
    frozen = config.freeze_embeddings if config.freeze_embeddings is not None else kind != "kl"
    if frozen:
        for sub in student.modules():
            if isinstance(sub, torch.nn.Embedding):
                sub.weight.requires_grad_(False)
    dropout = config.dropout if config.dropout is not None else kind == "kl"
    if not dropout:  # batch-norm still trains; transformers' attention dropout reads these p too
        for sub in student.modules():
            if isinstance(sub, torch.nn.modules.dropout._DropoutNd):
                sub.p = 0.0
    cache: dict[int, Any] = {}

    def teacher_out(i: int, feed: tuple[Any, ...]) -> Any:  # each distinct batch's teacher outputs, computed once
        if hidden is not None or attention is not None:  # block outputs are too big to keep: the teacher runs every step
            with torch.no_grad():
                return as_tuple(teacher_module(*feed))[0]
        if i not in cache:
            with torch.no_grad():
                cache[i] = as_tuple(teacher_module(*feed))[0]
        return cache[i]

    hard = torch.nn.functional.cross_entropy

    def step_loss(step: int) -> Any:
        i = step % len(batches)
        feed, labels = on_device(batches[i][0]), batches[i][1]
        s = as_tuple(student(*feed))[0]
        t = teacher_out(i, feed)
        if kind != "kl":
            loss = embedding_loss(s, t, kind)
            mask = _mask(teacher, feed)
            if hidden is not None:
                loss = loss + config.hidden_weight * hidden.loss(mask)
            if attention is not None:
                loss = loss + config.attention_weight * attention.loss(mask)
            return loss
        loss = kd_loss(s, t, config.temperature)
        if labels is not None and config.alpha < 1:
            target = torch.from_numpy(labels.astype(np.int64)).to(device)
            loss = config.alpha * loss + (1 - config.alpha) * hard(s, target)
        return loss

    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    settings = {k: v for k, v in config.to_dict().items()  # a checkpoint resumes on any device, with any limit
                if k not in ("device", "time_limit_s")}
    run = fingerprint("distill", teacher.name, str(teacher.path), settings, data.name, len(data))
    try:
        fitted = fit(student, step_loss, config.steps, optimizer, torch, label=f"distilling ({config.student}) on {device}",
                     checkpoint=Checkpoint(checkpoint, run, extra={"student": how}) if checkpoint else None, schedule=schedule,
                     checkpoint_every=max(50, config.steps // 20), time_limit_s=config.time_limit_s,
                     **watching(monitor, student))
    finally:
        for matcher in (hidden, attention):
            if matcher is not None:
                matcher.close()
    return fitted, kind, dropout, hidden is not None, frozen


def init_weights(spec: str | Path) -> Path:
    """The ``checkpoint.pt`` that ``init`` names (the file, or the checkpoint folder holding it)."""
    path = Path(spec)
    if path.is_dir():
        path = path / Checkpoint.WEIGHTS  # a folder: the file a run's checkpoints write
    if not path.is_file():
        raise HastenError(f"init: no checkpoint at {spec} (a distillation's --checkpoint folder, or the "
                          f"checkpoint.pt in it)", hint="pass the --checkpoint folder of an earlier run of the same student")
    return path


def _init_facts(config: DistillConfig, checkpoint: str | Path | None) -> dict[str, Any]:
    """What ``config.init`` names: its ``checkpoint.pt``, the step it was saved at and, for
    ``layers=`` students, the teacher blocks its student kept (from the ``checkpoint.json`` beside
    it, when that says), which this run keeps too, so that block matching pairs the same blocks."""
    import json

    path = init_weights(config.init)
    if checkpoint is not None and path.parent.resolve() == Path(checkpoint).resolve():
        raise HastenError(f"init and checkpoint are the same folder ({path.parent}): this run's checkpoints would "
                          f"overwrite the weights it starts from", hint="give this run its own --checkpoint folder")
    try:
        meta = json.loads((path.parent / Checkpoint.META).read_text())  # whichever run wrote it
    except (OSError, ValueError):
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    student = meta.get("student") if isinstance(meta.get("student"), dict) else {}
    kept = student.get("kept_blocks") if student.get("kind") == "layers" else None
    return {"path": str(path), "step": meta.get("step"), "kept_blocks": kept}


def _init_blocks(spec: str, init: dict[str, Any] | None) -> tuple[int, ...] | None:
    """For a ``layers=`` student started from a checkpoint that names its teacher blocks, those
    blocks (the weights stand in for them, and block matching must pair them alike); else None."""
    kind, value = parse_student(spec)
    if not init or kind != "layers":
        return None
    if not init["kept_blocks"]:
        log.warning("init: %s does not record which teacher blocks its student kept; they are chosen afresh "
                    "(pass --student layers=i,j,k to name them)", init["path"])
        return None
    kept = tuple(init["kept_blocks"])
    if (isinstance(value, int) and value != len(kept)) or (isinstance(value, tuple) and value != kept):
        raise HastenError(f"--student {spec} does not match the init checkpoint's student (teacher blocks "
                          f"{','.join(map(str, kept))})", hint=f"use --student layers={len(kept)}")
    return kept


def _load_init(student: Any, path: str, spec: str, torch: Any) -> None:
    """The student weights saved at ``path`` (read with ``weights_only``) loaded into ``student``."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # anything but tensors is refused
        student.load_state_dict(state["module"] if isinstance(state, dict) and "module" in state else state)
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, AttributeError, pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HastenError(f"the weights in {path} do not fit the student {spec}: {first}",
                          hint="init from a checkpoint of the same teacher and --student") from exc


class _on_device:
    """Moves the modules to ``device`` for training and back to the CPU afterwards (the teacher
    is the model's own module, used again for export and checks); on a GPU, float32 matrix
    products may use TF32 meanwhile."""

    def __init__(self, device: Any, torch: Any, *modules: Any) -> None:
        self.device, self.torch, self.modules = device, torch, modules

    def __enter__(self) -> None:
        if self.device.type == "cpu":
            return
        self.precision = self.torch.get_float32_matmul_precision()
        self.torch.set_float32_matmul_precision("high")
        for m in self.modules:
            m.to(self.device)

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cpu":
            return
        for m in self.modules:
            m.to("cpu")
        self.torch.set_float32_matmul_precision(self.precision)


def _augmented(teacher: Model, data: Dataset, spans: int, swaps: int, seed: int) -> Dataset:
    """``data`` plus, per text, ``spans`` random word spans (distinct, shorter than the text) and
    ``swaps`` copies with about `SWAP_RATE` of the words replaced by a word that follows the
    previous word somewhere in the text (new contexts, still locally plausible), tokenized alike;
    the teacher labels them like the rest."""
    from hasten.models.corpus import text_dataset

    if data.texts is None or teacher.text_encoder is None:
        raise HastenError("augment_spans / augment_swaps need text data and a teacher with a tokenizer",
                          hint="pass text (--data everyday, a .txt file), or leave --augment-spans and --augment-swaps at 0")
    if data.labels is not None:
        raise HastenError("augmenting adds texts the teacher labels, but this data has labels of its own, "
                          "which the new texts would not have", hint="use --augment-spans 0 --augment-swaps 0 with labelled data")
    rng = np.random.default_rng(seed)
    followers: dict[str, list[str]] = {}
    if swaps:
        for text in data.texts:
            words = text.split()
            for a, b in zip(words, words[1:]):
                followers.setdefault(a, []).append(b)
    seen, added = set(data.texts), []

    def add(text: str) -> None:
        if text not in seen:
            seen.add(text)
            added.append(text)

    for text in data.texts:
        words = text.split()
        if len(words) < 2:
            continue
        for _ in range(spans):
            size = int(rng.integers(1, len(words)))
            start = int(rng.integers(0, len(words) - size + 1))
            add(" ".join(words[start:start + size]))
        for _ in range(swaps):
            new = list(words)
            for i in range(1, len(new)):
                choices = followers.get(new[i - 1])
                if choices and rng.random() < SWAP_RATE:
                    new[i] = choices[int(rng.integers(len(choices)))]
            add(" ".join(new))
    name = data.name + (f"+{spans}-spans" if spans else "") + (f"+{swaps}-swaps" if swaps else "")
    return text_dataset(teacher, list(data.texts) + added, name)


def _mask(model: Model, feed: tuple[Any, ...]) -> Any:
    names = [s.name for s in model.inputs]
    return feed[names.index("attention_mask")] if "attention_mask" in names else None


def _truncated(data: Dataset, max_length: int) -> Dataset:
    """Token inputs cut to ``max_length`` (training cost grows with length; the teacher sees the same)."""
    from hasten.models.dataset import Dataset

    mask = data.inputs.get("attention_mask")
    if mask is None or mask.ndim != 2 or mask.shape[1] <= max_length:
        return data
    return Dataset({k: (v[:, :max_length] if v.ndim == 2 and v.shape == mask.shape else v) for k, v in data.inputs.items()},
                   data.labels, data.name, data.texts)
