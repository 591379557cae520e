"""`distill()`: train a smaller student to imitate a teacher.

Classifiers learn the teacher's temperature-softened logits (KL divergence × T², Hinton et al.)
plus the hard labels when there are any; sentence encoders learn the teacher's embeddings (MSE
and/or cosine) from unlabeled text. The student is given (``module:function``) or derived from
the teacher: ``layers=3`` keeps evenly spaced transformer blocks (``layers=0,2,4`` names them),
``width=0.5`` keeps the most important half of the channels; either way it starts from the
teacher's weights. Runs resume from checkpoints. torch is imported lazily.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hasten.compress.training import (Checkpoint, as_tuple, check_device, device_name, fingerprint, fit,
                                      is_classifier, shuffled_batches, training_device, watching)
from hasten.core import HastenError

if TYPE_CHECKING:
    from hasten.compress.training import Monitor
    from hasten.models import Dataset, Model

LOSSES = ("auto", "kl", "mse", "cosine", "mse+cosine")
AUTO_SPANS = 2  # random word spans per text that augment_spans=None adds to unlabeled text
SWAP_RATE = 0.25  # the share of words an augment_swaps copy replaces
PROBE_EXAMPLES = 128  # training examples used to choose which blocks a layers=N student keeps
BLOCK_LISTS = ("layer", "layers", "h", "blocks", "block")


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
    weight 1 (within a run's noise)."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_student(text: str) -> tuple[str, Any]:
    """('layers', count or index tuple) | ('width', fraction) | ('module', 'pkg.mod:function')."""
    text = str(text).strip()
    kind, sep, value = text.partition("=")
    if sep and kind == "layers":
        try:
            if "," in value:
                idx = tuple(int(v) for v in value.split(","))
                if len(set(idx)) != len(idx) or min(idx) < 0:
                    raise ValueError
                return "layers", tuple(sorted(idx))
            count = int(value)
            if count < 1:
                raise ValueError
            return "layers", count
        except ValueError:
            raise HastenError(f"--student {text}: want layers=N (N >= 1) or layers=i,j,k (distinct indices)",
                              hint="e.g. layers=3 or layers=0,2,4") from None
    if sep and kind == "width":
        try:
            fraction = float(value)
        except ValueError:
            fraction = -1.0
        if not 0 < fraction < 1:
            raise HastenError(f"--student {text}: width is the fraction of channels kept, between 0 and 1",
                              hint="e.g. width=0.5")
        return "width", fraction
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", text):
        return "module", text
    raise HastenError(f"cannot read --student '{text}'",
                      hint="use layers=N, layers=0,2,4, width=0.5 or module:function (a function returning a torch module)")


def kd_loss(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """KL(teacher ‖ student) on temperature-softened distributions, × T² so its gradients keep
    their size as T changes (Hinton et al., 2015); averaged over the batch."""
    import torch.nn.functional as F

    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)


def embedding_loss(student: Any, teacher: Any, kind: str) -> Any:
    import torch.nn.functional as F

    parts = []
    if "mse" in kind:
        parts.append(F.mse_loss(student, teacher) * student.shape[-1])  # per-dimension MSE × width: O(1)
    if "cosine" in kind:
        parts.append((1 - F.cosine_similarity(student, teacher, dim=-1)).mean())
    return sum(parts)


# ---------------------------------------------------------------------------- students

def block_list(module: Any, torch: Any) -> tuple[str, Any]:
    """The transformer's list of blocks: the longest nn.ModuleList named like one."""
    best = None
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in BLOCK_LISTS and len(sub) >= 2:
            if best is None or len(sub) > len(best[1]):
                best = (name, sub)
    if best is None:
        raise HastenError("layers=N needs a transformer (a ModuleList of blocks named layer/layers/h/blocks); "
                          "this model has none", hint="use --student width=0.5, or module:function for your own student")
    return best


def keep_indices(total: int, want: int | tuple[int, ...]) -> tuple[int, ...]:
    """Evenly spaced blocks, first one included: 3 of 6 -> (0, 2, 4)."""
    if isinstance(want, tuple):
        if max(want) >= total:
            raise HastenError(f"layers={','.join(map(str, want))}: the teacher has only {total} blocks (0..{total - 1})")
        return want
    if want >= total:
        raise HastenError(f"layers={want}: the teacher has {total} blocks; a student needs fewer",
                          hint=f"e.g. layers={max(1, total // 2)}")
    return tuple(sorted({int(i * total / want) for i in range(want)}))


def choose_blocks(teacher: Any, name: str, want: int, probe: list[tuple[Any, ...]], torch: Any) -> tuple[int, ...]:
    """Which ``want`` blocks to keep: drop, one at a time, the block whose removal changes the
    teacher's output least on ``probe`` inputs (training data), by mean cosine similarity."""
    model = copy.deepcopy(teacher).eval()
    blocks = list(model.get_submodule(name))
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    with torch.no_grad():
        reference = [as_tuple(teacher(*feed))[0].flatten(1) for feed in probe]

        def score(keep: list[int]) -> float:
            setattr(parent, attr, torch.nn.ModuleList([blocks[i] for i in keep]))
            got = [as_tuple(model(*feed))[0].flatten(1) for feed in probe]
            return float(torch.cat([torch.nn.functional.cosine_similarity(g, r, dim=1)
                                    for g, r in zip(got, reference)]).mean())

        keep = list(range(len(blocks)))
        while len(keep) > want:
            best = max(keep, key=lambda drop: score([i for i in keep if i != drop]))
            keep.remove(best)
    return tuple(keep)


def derive_student(teacher: Model, spec: str, torch: Any, probe: list[tuple[Any, ...]] | None = None
                   ) -> tuple[Any, dict[str, Any]]:
    """The student and how it was made. For ``layers=N`` with ``probe`` inputs the blocks are
    chosen by `choose_blocks`; without, evenly spaced."""
    kind, value = parse_student(spec)
    if kind == "layers":
        student = copy.deepcopy(teacher.torch_module())
        name, blocks = block_list(student, torch)
        if isinstance(value, int) and probe:
            keep_indices(len(blocks), value)  # validates the count
            keep, how = choose_blocks(teacher.torch_module(), name, value, probe, torch), "least output change on training data"
        else:
            keep, how = keep_indices(len(blocks), value), "evenly spaced" if isinstance(value, int) else "as given"
        parent_name, _, attr = name.rpartition(".")
        setattr(student.get_submodule(parent_name) if parent_name else student, attr,
                torch.nn.ModuleList([blocks[i] for i in keep]))
        for sub in student.modules():
            cfg = getattr(sub, "config", None)
            if cfg is not None and hasattr(cfg, "num_hidden_layers"):
                cfg.num_hidden_layers = len(keep)
        for new, i in enumerate(keep):  # blocks that know their index (caches, logging) get the new one
            for sub in student.get_submodule(name)[new].modules():
                if isinstance(getattr(sub, "layer_idx", None), int):
                    sub.layer_idx = new
        return student, {"kind": "layers", "kept_blocks": list(keep), "teacher_blocks": len(blocks), "blocks": name,
                         "chosen": how}
    if kind == "width":
        from hasten.compress.prune import PruneConfig, prune

        narrowed = prune(teacher, PruneConfig("channel", amount=round(1 - value, 6), importance="l2"))
        return copy.deepcopy(narrowed.torch_module()), {"kind": "width", "kept_fraction": value,
                                                       "channels": narrowed.info.extra["manifest"]["channels_per_layer"]}
    return _user_student(teacher, value, torch), {"kind": "module", "function": value}


def _user_student(teacher: Model, target: str, torch: Any) -> Any:
    mod_name, fn_name = target.split(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise HastenError(f"cannot load the student function {target}: {exc}",
                          hint="the module must be importable (on PYTHONPATH) and define the function") from exc
    takes_teacher = len(inspect.signature(fn).parameters) >= 1
    student = fn(teacher.torch_module()) if takes_teacher else fn()
    if not isinstance(student, torch.nn.Module):
        raise HastenError(f"{target} returned {type(student).__name__}, not a torch.nn.Module")
    with torch.no_grad():
        want = [tuple(t.shape) for t in as_tuple(teacher.torch_module()(*teacher.example_input()))]
        try:
            got = [tuple(t.shape) for t in as_tuple(student.eval()(*teacher.example_input()))]
        except Exception as exc:  # noqa: BLE001 - the user's module; say what failed
            raise HastenError(f"the student from {target} fails on the teacher's example input: {exc}") from exc
    if got != want:
        raise HastenError(f"the student from {target} returns shapes {got}; the teacher returns {want}",
                          hint="a student must take the same inputs and give outputs of the same shape")
    return student


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
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="hasten-distill-")) / f"{teacher.name}.student.onnx"
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
    student, how = derive_student(teacher, config.student, torch, probe)
    with _on_device(device, torch, teacher_module, student):
        fitted, kind, dropout, hidden, frozen = _train(teacher, teacher_module, student, how, config, batches, data, device,
                                               torch, monitor, checkpoint)
    facts = {"student": how, "teacher": {"name": teacher.name, "path": str(teacher.path)},
             "loss": kind + (f" + {config.hidden_weight:g} x block-output mse" if hidden else "")
             + (f" + {config.attention_weight:g} x last-block attention kl" if config.attention_weight else ""), "temperature": config.temperature if kind == "kl" else None,
             "alpha": config.alpha if kind == "kl" else None, "optimizer": "AdamW, cosine decay", "dropout": dropout,
             "frozen_embeddings": frozen, "augment_spans": spans, "augment_swaps": config.augment_swaps,
             "training": {**fitted.to_dict(), "data": {"name": data.name, "examples": len(data)},
                          "distinct_batches": len(batches), "device": device_name(device, torch)}}
    keep = {"num_heads": teacher.info.extra["num_heads"]} if "num_heads" in teacher.info.extra else {}
    return export_derived(teacher, student, out, "distill", config.to_dict(), facts, started, "student", keep)


def _train(teacher: Model, teacher_module: Any, student: Any, how: dict[str, Any], config: DistillConfig,
           batches: list[Any], data: Dataset, device: Any, torch: Any, monitor: Monitor | None,
           checkpoint: str | Path | None) -> tuple[Any, str, bool, bool, bool]:
    """The training loop of `distill` on ``device`` (both modules are there already): returns
    (fit result, loss kind, dropout kept, block outputs matched, embeddings frozen)."""
    hidden = _HiddenMatch(teacher_module, student, how, torch) if how["kind"] == "layers" and config.hidden_weight else None
    attention = _AttentionMatch(teacher_module, student, how, torch) if config.attention_weight else None

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
            if hidden is not None:
                loss = loss + config.hidden_weight * hidden.loss(_mask(teacher, feed))
            if attention is not None:
                loss = loss + config.attention_weight * attention.loss(_mask(teacher, feed))
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
                     checkpoint=Checkpoint(checkpoint, run) if checkpoint else None, schedule=schedule,
                     checkpoint_every=max(50, config.steps // 20), time_limit_s=config.time_limit_s,
                     **watching(monitor, student))
    finally:
        for matcher in (hidden, attention):
            if matcher is not None:
                matcher.close()
    return fitted, kind, dropout, hidden is not None, frozen


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


class _HiddenMatch:
    """Forward hooks that keep each block's output, and the MSE (over real tokens) between each
    student block and the teacher block it replaces: student block j, started from teacher block
    keep[j], learns to output what teacher block keep[j+1] - 1 outputs (the last: the last one)."""

    def __init__(self, teacher: Any, student: Any, how: dict[str, Any], torch: Any) -> None:
        keep, total = how["kept_blocks"], how["teacher_blocks"]
        self.pairs = [(j, keep[j + 1] - 1 if j + 1 < len(keep) else total - 1) for j in range(len(keep))]
        self.seen: dict[str, dict[int, Any]] = {"t": {}, "s": {}}
        self.handles = []
        for who, module in (("t", teacher), ("s", student)):
            for i, block in enumerate(module.get_submodule(how["blocks"])):
                self.handles.append(block.register_forward_hook(self._keeper(who, i)))

    def _keeper(self, who: str, i: int) -> Any:
        def hook(module: Any, args: Any, out: Any) -> None:
            self.seen[who][i] = out[0] if isinstance(out, (tuple, list)) else out
        return hook

    def loss(self, mask: Any) -> Any:
        total = 0
        for j, t in self.pairs:
            s, ref = self.seen["s"][j], self.seen["t"][t].detach()
            err = (s - ref).pow(2).mean(-1)
            if mask is not None and err.shape == mask.shape:
                total = total + (err * mask).sum() / mask.sum().clamp(min=1)
            else:
                total = total + err.mean()
        return total

    def close(self) -> None:
        for h in self.handles:
            h.remove()


class _AttentionMatch:
    """MiniLM's self-attention transfer (Wang et al., 2020) for the last block: KL divergence from
    the teacher's attention distributions (softmax(QKᵀ/√d) per head) and value relations
    (softmax(VVᵀ/√d)) in its last block to the student's in its last block, over real tokens."""

    def __init__(self, teacher: Any, student: Any, how: dict[str, Any], torch: Any) -> None:
        from hasten.compress.prune import attention_modules

        self.torch, self.seen, self.handles = torch, {}, []
        for who, module in (("t", teacher), ("s", student)):
            found = attention_modules(module.get_submodule(how["blocks"])[-1], torch)
            if not found:
                raise HastenError("attention_weight needs self-attention blocks with query/key/value projections "
                                  "(the BERT family's layout); this model's last block has none",
                                  hint="leave --attention-weight at 0")
            attn = found[0]
            for name in ("query", "key", "value"):
                self.handles.append(getattr(attn, name).register_forward_hook(self._keeper(who, name)))
            self.seen[who + "heads"] = attn.num_attention_heads

    def _keeper(self, who: str, name: str) -> Any:
        def hook(module: Any, args: Any, out: Any) -> None:
            self.seen[who + name] = out
        return hook

    def _relation(self, who: str, a: str, b: str, bias: Any) -> Any:
        x, y, heads = self.seen[who + a], self.seen[who + b], self.seen[who + "heads"]
        n, length, width = x.shape
        x = x.view(n, length, heads, width // heads).transpose(1, 2)
        y = y.view(n, length, heads, width // heads).transpose(1, 2)
        scores = x @ y.transpose(-1, -2) / (width // heads) ** 0.5
        return self.torch.log_softmax(scores + bias, dim=-1)

    def loss(self, mask: Any) -> Any:
        torch = self.torch
        n, length = self.seen["squery"].shape[:2]
        real = mask if mask is not None and tuple(mask.shape) == (n, length) else torch.ones(n, length)
        real = real.to(self.seen["squery"].dtype)
        bias = ((1 - real) * -1e4)[:, None, None, :]  # padded keys get no attention
        total = 0
        for a, b in (("query", "key"), ("value", "value")):
            t = self._relation("t", a, b, bias).detach()
            s = self._relation("s", a, b, bias)
            kl = (t.exp() * (t - s)).sum(-1).mean(1)  # per query token, averaged over heads
            total = total + (kl * real).sum() / real.sum().clamp(min=1)
        return total

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _truncated(data: Dataset, max_length: int) -> Dataset:
    """Token inputs cut to ``max_length`` (training cost grows with length; the teacher sees the same)."""
    from hasten.models.dataset import Dataset

    mask = data.inputs.get("attention_mask")
    if mask is None or mask.ndim != 2 or mask.shape[1] <= max_length:
        return data
    return Dataset({k: (v[:, :max_length] if v.ndim == 2 and v.shape == mask.shape else v) for k, v in data.inputs.items()},
                   data.labels, data.name, data.texts)
