"""`prune_under_budget()` and `distill_under_budget()`: make the smaller model, check it with the
same gate as quantization (quality against the budget with its interval, then the interleaved
"not faster" guard), and write it only when it passes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hasten.core import HastenError
from hasten.models import Dataset, Model
from hasten.plan.gate import GateConfig, GateResult, Judge, guard_and_save
from hasten.plan.guard import GuardVerdict
from hasten.runtime import BackendConfig, compile

log = logging.getLogger(__name__)


@dataclass
class DerivedResult(GateResult):
    """A gate result plus the source model it was compared with, and the candidate that was
    judged (kept in a temporary folder even when refused, for inspection)."""

    source: Model | None = None
    candidate: Model | None = None
    workdir: Path | None = None  # the temporary folder a refused candidate was left in

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "kind": self.manifest.get("method")}

    def discard_candidate(self) -> None:
        """Remove the temporary folder a refused candidate was kept in (the CLI, which says that
        nothing was written, does; API callers may look at the candidate first)."""
        if self.workdir is not None:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir, self.candidate = None, None


def prune_under_budget(model: Model, config: Any, train: Dataset | None, evaluation: Dataset,
                       gate: GateConfig = GateConfig(), out: str | Path | None = None,
                       checkpoint: str | Path | None = None, early_stop: bool = True) -> DerivedResult:
    """Prune (``hasten.compress.prune``), fine-tuning on ``train`` until the budget holds on
    ``evaluation`` (checked every so many steps), then gate the result."""
    from hasten.compress.prune import prune

    def make(monitor: Any, tmp: Path) -> Model:
        return prune(model, config, train, tmp, monitor=monitor if early_stop else None, checkpoint=checkpoint)

    return _gated(model, make, evaluation, gate, out, every=max(10, config.finetune_steps // 10))


def distill_under_budget(teacher: Model, config: Any, train: Dataset, evaluation: Dataset,
                         gate: GateConfig = GateConfig(), out: str | Path | None = None,
                         checkpoint: str | Path | None = None, early_stop: bool = False) -> DerivedResult:
    """Distil (``hasten.compress.distill``) on ``train``, watching quality on ``evaluation``
    (stopping early at the budget only when asked: a student usually gains from every step)."""
    from hasten.compress.distill import distill

    def make(monitor: Any, tmp: Path) -> Model:
        if not early_stop:
            monitor.done = lambda seen: False
        return distill(teacher, config, train, tmp, monitor=monitor, checkpoint=checkpoint)

    return _gated(teacher, make, evaluation, gate, out, every=max(25, config.steps // 10))


def _gated(model: Model, make: Callable[[Any, Path], Model], evaluation: Dataset, gate: GateConfig,
           out: str | Path | None, every: int) -> DerivedResult:
    import tempfile

    from hasten.compress.training import Monitor

    backend = gate.backend or "ort-cpu"
    bcfg = BackendConfig(threads=gate.threads)
    baseline = compile(model, backend, bcfg)
    judge = Judge(baseline, evaluation, gate)

    def evaluate(module: Any) -> dict[str, Any]:
        quality, verdict = judge.judge(judge.outputs(_ModuleRunner(module, model)))
        return {quality.metric: float(quality.value), "passed": verdict.passed}

    monitor = Monitor(evaluate=evaluate, done=lambda seen: bool(seen.get("passed")), every=every)
    tmp = Path(tempfile.mkdtemp(prefix="hasten-derive-")) / f"{model.name}.onnx"
    variant = make(monitor, tmp)
    manifest = dict(variant.info.extra["manifest"])
    runner = compile(variant, backend, bcfg)  # judged and timed: compiled once
    quality, verdict = judge.judge(judge.outputs(runner))
    result = DerivedResult(False, None, backend, judge.base_quality, quality, verdict, None, manifest,
                           split={"evaluation": len(evaluation)}, source=model, candidate=variant,
                           workdir=tmp.parent)
    if not verdict.passed:
        result.refused = "quality: " + verdict.message
        return result
    result = guard_and_save(result, baseline, runner, variant, evaluation, gate, out, "the source model",
                            lambda guard: _why_not_faster(manifest, guard))
    if result.model is not None:  # saved: no refused candidate is left to discard
        result.workdir = None
        if Path(result.model.path).resolve() != tmp.resolve():
            import shutil

            shutil.rmtree(tmp.parent, ignore_errors=True)  # written to `out`: the working copy goes (a refused
            result.candidate = result.model                # candidate stays, for the caller to look at)
    return result


def _why_not_faster(manifest: dict[str, Any], guard: GuardVerdict) -> list[str]:
    reasons = []
    if manifest.get("speed_note"):
        reasons.append(manifest["speed_note"])
    macs = manifest.get("macs", {})
    if macs.get("before") and macs.get("after") is not None:
        ratio = macs["before"] / max(macs["after"], 1)
        if ratio < 1.05:
            reasons.append(f"the MACs did not change ({macs['before']:,} → {macs['after']:,}): nothing was removed "
                           "from the dense computation")
        else:
            best = max((r.speedup for r in guard.rows), default=1.0)
            reasons.append(f"{ratio:.1f}× fewer MACs gave {best:.2f}× at best: at these batch sizes the time goes "
                           "to work that did not shrink (memory traffic, per-op overhead, layers left alone)")
    return reasons or ["the measured latency did not drop beyond noise"]


class _ModuleRunner:
    """A torch module seen as a Runner, for evaluating during training (no export needed), on
    whichever device the module is on."""

    def __init__(self, module: Any, model: Model) -> None:
        self.module, self.outputs, self.inputs = module, model.outputs, model.inputs

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from hasten.compress.training import as_tuple

        device = next(self.module.parameters(), torch.empty(0)).device  # where it trains (a GPU, maybe)
        with torch.no_grad():
            outs = as_tuple(self.module(*(torch.from_numpy(np.ascontiguousarray(feed[s.name])).to(device)
                                          for s in self.inputs)))
        if len(outs) < len(self.outputs):
            raise HastenError(f"the module returned {len(outs)} outputs, the model declares {len(self.outputs)}")
        return {spec.name: t.detach().cpu().numpy() for spec, t in zip(self.outputs, outs)}
