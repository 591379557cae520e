"""The training pieces that QAT, pruning's fine-tuning and distillation share: deterministic
batches, targets (labels or the source model's outputs), a progress bar, resumable checkpoints,
and one loop with periodic evaluation and early stop. torch is imported lazily (callers pass it)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hasten.core import HastenError

if TYPE_CHECKING:
    from hasten.models import Dataset

Batch = tuple[tuple[Any, ...], "np.ndarray | None"]  # (input tensors in model input order, labels or None)


def as_tuple(out: Any) -> tuple:
    """A module's output as a tuple of tensors (dict values, list items, or the one tensor)."""
    if isinstance(out, dict):
        return tuple(out.values())
    if hasattr(out, "to_tuple"):  # transformers' ModelOutput
        return tuple(out.to_tuple())
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


DEVICE_HINT = "use --device auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N"


def check_device(spec: str) -> str:
    """``spec`` when it names a training device hasten knows: auto, cpu, cuda, cuda:N."""
    import re

    if not isinstance(spec, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", spec):
        raise HastenError(f"unknown training device {spec!r}", hint=DEVICE_HINT)
    return spec


def training_device(spec: str, torch: Any) -> Any:
    """The torch device a run trains on: ``auto`` is the first CUDA GPU when torch sees one, else
    the CPU; ``cuda`` without a usable GPU is an error (never a silent fall-back to the CPU)."""
    check_device(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HastenError(f"--device {spec}: this torch ({torch.__version__}) sees no CUDA GPU",
                              hint="train on the CPU (--device cpu), or install a CUDA build of torch on a GPU machine")
        index = int(spec.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise HastenError(f"--device {spec}: torch sees {torch.cuda.device_count()} GPU(s) (cuda:0 …)", hint=DEVICE_HINT)
    return torch.device(spec)


def device_name(device: Any, torch: Any) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``: what a manifest records."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def shuffled_batches(names: list[str], data: Dataset, batch_size: int, steps: int, torch: Any,
                     seed: int = 0) -> list[Batch]:
    """The distinct training batches of a seeded shuffle of ``data`` (a sorted data set would
    otherwise train on one class at a time); step ``i`` uses batch ``i % len(batches)``.

    Token data (an ``attention_mask`` input) is bucketed: examples of similar length share a batch,
    so batches carry little padding (2-3x less compute on real sentences); the batch order is
    shuffled again so lengths do not trend through training."""
    from hasten.models.dataset import Dataset

    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(data))
    size = min(batch_size, len(data))
    mask = data.inputs.get("attention_mask")
    if mask is not None and mask.ndim == 2 and len(data) > size:
        window = size * 50  # sort within windows: similar lengths together, still random across windows
        lengths = mask.sum(1)
        perm = np.concatenate([chunk[np.argsort(lengths[chunk], kind="stable")]
                               for chunk in np.array_split(perm, max(1, len(perm) // window))])
        starts = np.arange(0, len(perm) - size + 1, size)
        perm = np.concatenate([perm[s:s + size] for s in rng.permutation(starts)] + [perm[len(starts) * size:]])
    shuffled = Dataset({k: v[perm] for k, v in data.inputs.items()},
                       None if data.labels is None else data.labels[perm], data.name)
    count = max(1, min(steps, len(data) // math.gcd(len(data), size)))  # batch starts cycle after this many
    batches = []
    for i in range(count):
        feed = shuffled.batch(i * size, size)
        labels = shuffled.labels_for(i * size, size) if shuffled.labels is not None else None
        batches.append((tuple(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in names), labels))
    return batches


def is_classifier(outputs: tuple, labels: np.ndarray | None) -> bool:
    """Integer labels and a [batch, classes > 1] first output: train on the labels."""
    first = outputs[0]
    return (labels is not None and np.issubdtype(labels.dtype, np.integer) and first.ndim == 2
            and first.shape[1] > 1)


def fidelity_targets(reference: Any, batches: list[Batch], torch: Any) -> tuple[list[Any], str, Callable[[tuple, Any], Any]]:
    """Targets for fine-tuning a changed copy of ``reference``: the labels (cross-entropy) for
    classifiers, else the reference module's own outputs (MSE), computed once here so that the
    loop pays only for the model being trained."""
    functional = torch.nn.functional
    reference = reference.eval()
    with torch.no_grad():  # not inference_mode: its tensors cannot enter the autograd graph
        first = as_tuple(reference(*batches[0][0]))
        if is_classifier(first, batches[0][1]):
            return ([torch.from_numpy(y.astype(np.int64)) for _, y in batches], "cross_entropy",
                    lambda outs, y: functional.cross_entropy(outs[0], y))
        ref_outs = [as_tuple(reference(*feed)) for feed, _ in batches]
    return (ref_outs, "mse_to_fp32",  # the source module is the FP32 model
            lambda outs, ref: sum(functional.mse_loss(o, r) for o, r in zip(outs, ref) if o.is_floating_point()))


@contextlib.contextmanager
def progress(label: str, total: int, done: int = 0) -> Iterator[Callable[..., None]]:
    """A transient progress bar on stderr when it is a terminal; silent otherwise (a live bar in
    a log file is only noise). The callback takes the latest loss and, optionally, a status."""
    from hasten.core.console import stderr_console

    console = stderr_console()
    if not console.is_terminal:
        yield lambda loss, status="": None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4g}"),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(label, total=total, completed=done, loss=float("nan"), status="")
        yield lambda loss, status="": bar.update(task, advance=1, loss=loss, **({"status": status} if status else {}))


def fingerprint(*parts: Any) -> str:
    """A short hash of a run's defining facts, so a checkpoint is never resumed into another run."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Checkpoint:
    """``<folder>/checkpoint.pt`` (tensors only, read back with ``weights_only=True`` so loading
    it can never run code) plus ``<folder>/checkpoint.json`` (step, run fingerprint, stage,
    extras). Written atomically: a run stopped mid-write resumes from the previous checkpoint.
    ``stage`` names a part of a multi-stage run (e.g. a pruning phase) whose weights have their
    own shapes; a checkpoint of another stage of the same run is not restored into this one."""

    WEIGHTS, META = "checkpoint.pt", "checkpoint.json"  # file names inside the folder

    def __init__(self, folder: str | Path, run: str, stage: str = "", extra: dict[str, Any] | None = None) -> None:
        self.folder, self.run, self.stage = Path(folder), run, stage
        self.extra: dict[str, Any] = dict(extra or {})

    def at(self, stage: str) -> "Checkpoint":
        return Checkpoint(self.folder, self.run, stage, self.extra)

    @property
    def meta_path(self) -> Path:
        return self.folder / self.META

    @property
    def weights_path(self) -> Path:
        return self.folder / self.WEIGHTS

    def save(self, step: int, module: Any, optimizer: Any, torch: Any, schedule: Any = None, **extra: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = self.weights_path.with_name(self.WEIGHTS + ".tmp")
        state = {"module": module.state_dict(), "optimizer": optimizer.state_dict(),
                 "rng": torch.get_rng_state()}  # dropout continues as if never stopped
        if schedule is not None:
            state["schedule"] = schedule.state_dict()
        torch.save(state, tensors)
        os.replace(tensors, self.weights_path)
        meta = self.meta_path.with_name(self.META + ".tmp")
        meta.write_text(json.dumps({"step": step, "run": self.run, "stage": self.stage, **self.extra, **extra},
                                   indent=1))
        os.replace(meta, self.meta_path)

    def meta(self, any_stage: bool = False) -> dict[str, Any] | None:
        """The saved facts, or None when there is no checkpoint (of this stage, unless
        ``any_stage``); refuses another run's checkpoint."""
        if not self.meta_path.exists():
            return None
        try:
            meta = json.loads(self.meta_path.read_text())
            meta["step"] = int(meta["step"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise HastenError(f"{self.meta_path} is not a readable checkpoint ({exc})",
                              hint="delete the checkpoint folder to start over") from exc
        if meta.get("run") != self.run:
            raise HastenError(f"the checkpoint in {self.folder} belongs to a different run (other model, data or "
                              f"settings) and would not resume this one",
                              hint="pass another --checkpoint folder, or delete this one to start over")
        if not any_stage and meta.get("stage", "") != self.stage:
            return None
        return meta

    def restore(self, module: Any, optimizer: Any, torch: Any, schedule: Any = None) -> int:
        """Load the saved weights and optimizer state; returns the step to continue from (0: none)."""
        meta = self.meta()
        if meta is None:
            return 0
        try:
            state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
            module.load_state_dict(state["module"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
            if schedule is not None:
                schedule.load_state_dict(state["schedule"])
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise HastenError(f"cannot resume from {self.folder}: {exc}",
                              hint="delete the checkpoint folder to start over") from exc
        return meta["step"]


@dataclass
class Monitor:
    """How training watches quality: ``evaluate(module)`` every ``every`` steps (in eval mode,
    no gradients), stopping as soon as ``done(evaluation)`` says the budget holds."""

    evaluate: Callable[[Any], dict[str, Any]]
    done: Callable[[dict[str, Any]], bool]
    every: int = 50


def watching(monitor: Monitor | None, module: Any) -> dict[str, Any]:
    """`fit()`'s evaluation arguments for ``monitor`` watching ``module`` (none without one)."""
    if monitor is None:
        return {}
    return {"evaluate": lambda: monitor.evaluate(module), "evaluate_every": monitor.every, "done": monitor.done}


@dataclass
class FitResult:
    steps: int                      # the step reached (earlier stages and resumed steps included)
    resumed_from: int = 0           # the checkpoint's step, when this run resumed one
    started_at: int = 0             # the first step this run computed
    final_loss: float = float("nan")
    stopped_early: bool = False
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0            # this run's time in the loop (evaluations and checkpoints included)
    time_limited: bool = False      # stopped at its time limit, before ``steps``

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "resumed_from": self.resumed_from, "final_loss": round(self.final_loss, 6),
                "stopped_early": self.stopped_early, "evaluations": self.evaluations, "seconds": round(self.seconds, 2),
                "stopped_at_time_limit": self.time_limited}


def fit(module: Any, step_loss: Callable[[int], Any], steps: int, optimizer: Any, torch: Any, *, label: str,
        checkpoint: Checkpoint | None = None, checkpoint_every: int = 100,
        evaluate: Callable[[], dict[str, Any]] | None = None, evaluate_every: int = 0,
        done: Callable[[dict[str, Any]], bool] | None = None, schedule: Any = None,
        train_mode: bool = True, start: int = 0, time_limit_s: float | None = None) -> FitResult:
    """Run optimizer steps ``start`` … ``steps - 1`` of ``step_loss(step)`` on ``module`` (train
    mode), resuming from ``checkpoint`` when it holds a later step of this stage. Every ``evaluate_every`` steps ``evaluate()`` runs in
    eval mode; training stops early once ``done(evaluation)`` says so. ``train_mode=False`` keeps
    dropout off and batch-norm statistics frozen while training (as QAT wants). ``time_limit_s``
    stops the loop once this run has spent that long in it (checkpointed, ``time_limited`` set)."""
    restored = checkpoint.restore(module, optimizer, torch, schedule) if checkpoint is not None else 0
    resumed = restored > start
    start = max(start, restored)
    result = FitResult(steps=start, resumed_from=start if resumed else 0, started_at=start)
    if checkpoint is not None and resumed:
        result.evaluations = list((checkpoint.meta() or {}).get("evaluations", []))
    module.train(train_mode)
    began = time.perf_counter()
    with progress(label, steps, start) as advance:
        for step in range(start, steps):
            loss = step_loss(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            result.final_loss, result.steps = float(loss.detach()), step + 1
            status = ""
            if evaluate is not None and evaluate_every and result.steps % evaluate_every == 0:
                module.eval()
                with torch.no_grad():
                    seen = {"step": result.steps, **evaluate(),
                            "at_s": round(time.perf_counter() - began, 2)}  # this run's time at the check
                module.train(train_mode)
                result.evaluations.append(seen)
                status = " ".join(f"{k} {v:.4f}" for k, v in seen.items() if k not in ("step", "at_s") and isinstance(v, float))
                if done is not None and done(seen):
                    result.stopped_early = True
            if time_limit_s is not None and result.steps < steps and time.perf_counter() - began >= time_limit_s:
                result.time_limited = True
            if checkpoint is not None and (result.steps % checkpoint_every == 0 or result.stopped_early
                                           or result.time_limited or result.steps == steps):
                checkpoint.save(result.steps, module, optimizer, torch, schedule, evaluations=result.evaluations)
            advance(result.final_loss, status)
            if result.stopped_early or result.time_limited:
                break
    result.seconds = time.perf_counter() - began
    module.eval()
    return result
