"""`quantize_under_budget()`: quantize, check quality against the budget (falling back node by
node when it misses), then refuse the result unless it is measurably faster."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hasten.compress import QuantConfig, quantize
from hasten.compress.ort_quant import prepare_for_ort
from hasten.compress.qdq import QDQ_METHODS, with_float_nodes
from hasten.core import HastenError
from hasten.core.quality import Quality
from hasten.models import Dataset, Model
from hasten.plan.fallback import Sensitivity, TrailStep, greedy_fallback, sensitivities
from hasten.plan.guard import GuardVerdict, speed_check, why_not_faster
from hasten.runtime import BackendConfig, compile
from hasten.verify import Budget, BudgetVerdict, check_budget, collect_outputs, get_metric, paired_drop, perfect
from hasten.verify.evaluate import evaluate_scores, summarize

log = logging.getLogger(__name__)
CALIBRATING = ("static", "nncf", "qat")


@dataclass(frozen=True)
class GateConfig:
    """The accuracy budget, how quality is measured, and where speed is measured."""

    budget: str = "1%"
    metric: str | None = None          # None: accuracy when the data has labels, else cosine
    min_example: float | None = None   # optional floor on the worst example's score (e.g. min cosine)
    require: tuple[tuple[str, float], ...] = ()  # more bars: (metric, floor on its mean), e.g. ("nn_agreement", 0.95)
    backend: str | None = None         # None: the method's recommended backend, else ort-cpu
    threads: int | None = None
    batch_sizes: tuple[int, ...] = (1, 8)
    seq_len: int | None = None
    time_budget_s: float = 2.0
    fallback: bool = True
    max_fallback_steps: int | None = None
    keep_if_slower: bool = False
    eval_batch_size: int = 32
    dynamic_quant_group: int = 0       # OpenVINO: float MatMuls run as dynamic INT8 (BackendConfig.dynamic_quant_group)

    def __post_init__(self) -> None:
        Budget.parse(self.budget)  # validates
        if self.metric is not None:
            get_metric(self.metric)
        for name, _ in self.require:
            get_metric(name)


@dataclass
class GateResult:
    accepted: bool
    model: Model | None
    backend: str
    baseline_quality: Quality
    quality: Quality
    verdict: BudgetVerdict
    guard: GuardVerdict | None
    manifest: dict[str, Any]
    sensitivities: list[Sensitivity] = field(default_factory=list)
    trail: list[TrailStep] = field(default_factory=list)
    refused: str | None = None
    split: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "backend": self.backend, "refused": self.refused, "split": self.split,
                "baseline_quality": self.baseline_quality.to_dict(), "quality": self.quality.to_dict(),
                "verdict": self.verdict.to_dict(), "guard": self.guard.to_dict() if self.guard else None,
                "sensitivities": [s.to_dict() for s in self.sensitivities],
                "trail": [t.to_dict() for t in self.trail], "manifest": self.manifest}


def split(data: Dataset, config: QuantConfig) -> tuple[Dataset, Dataset]:
    """Disjoint calibration and evaluation parts (calibrating on the evaluation data flatters)."""
    if config.method not in CALIBRATING:
        return data, data
    want = getattr(config, "calibration_size", None) or getattr(config, "subset_size", None) or 128
    k = min(want, len(data) // 2)
    if k < 1:
        raise HastenError(f"{len(data)} examples are too few to calibrate and evaluate", hint="pass at least 2 examples")
    return data.take(k), data.select(slice(k, None), data.name + "-eval")


class Judge:
    """Scores a variant's outputs against the baseline's on the evaluation data: the budget on the
    main metric (paired CI when labels are used), the worst-example floor, the extra bars."""

    def __init__(self, baseline: Any, data: Dataset, gate: GateConfig) -> None:
        self.gate, self.eval = gate, data
        self.metric = get_metric(gate.metric or ("accuracy" if data.labels is not None else "cosine"))
        if self.metric.needs_labels and data.labels is None:
            raise HastenError(f"metric '{self.metric.name}' needs labels, and data set '{data.name}' has none",
                              hint="pass labelled data, or a fidelity metric such as --metric cosine")
        self.budget = Budget.parse(gate.budget)
        self.reference = collect_outputs(baseline, data, batch_size=gate.eval_batch_size)
        if self.metric.needs_labels:
            self.base_quality, self.base_scores = evaluate_scores(baseline, data, self.metric.name,
                                                                  batch_size=gate.eval_batch_size)
        else:
            self.base_quality, self.base_scores = perfect(self.metric.name, len(data)), None
        self.slack = 0.0

    def outputs(self, runner: Any) -> np.ndarray:
        return collect_outputs(runner, self.eval, batch_size=self.gate.eval_batch_size)

    def judge(self, outputs: np.ndarray) -> tuple[Quality, BudgetVerdict]:
        """Quality and verdict of ``outputs`` (the first output, every evaluation example);
        ``self.slack`` becomes the tightest bar's normalised margin (negative: missed)."""
        gate = self.gate
        target = self.eval.labels if self.metric.needs_labels else self.reference
        scores = self.metric.fn(outputs, target)
        quality = summarize(self.metric, scores, len(self.eval))
        paired = None
        if self.base_scores is not None:  # same examples on both sides: the paired CI is the honest one
            paired = paired_drop(self.base_scores, scores, higher_is_better=self.metric.higher_is_better)[1]
        verdict = check_budget(self.base_quality, quality, self.budget, paired_drop_ci=paired)
        slacks = [(verdict.allowed - verdict.drop) / max(verdict.allowed, 1e-9)]
        if gate.min_example is not None:
            worst = quality.extra.get("min", quality.value)
            slacks.append((worst - gate.min_example) / max(1.0 - gate.min_example, 1e-3))
            if worst < gate.min_example:
                verdict = _failed(verdict, f"worst example {worst:.4f} < floor {gate.min_example}")
        for name, floor in gate.require:
            other = get_metric(name)
            value = summarize(other, other.fn(outputs, self.eval.labels if other.needs_labels else self.reference),
                              len(self.eval)).value
            quality.extra[name] = value
            slacks.append(((value - floor) if other.higher_is_better else (floor - value)) / max(abs(1.0 - floor), 1e-3))
            if (value < floor) if other.higher_is_better else (value > floor):
                verdict = _failed(verdict, f"{name} {value:.4f} misses {floor}")
        self.slack = min(slacks)
        return quality, verdict


class _Gate:
    """Holds what every trial shares: the baseline outputs, the data split, the budget."""

    def __init__(self, model: Model, qconfig: QuantConfig, data: Dataset, gate: GateConfig, backend: str) -> None:
        self.model, self.qconfig, self.gate, self.backend = model, qconfig, gate, backend
        self.calib, self.eval = split(data, qconfig)
        # variants run with the backend options; the baseline is the plain FP32 model, always
        self.bcfg = BackendConfig(threads=gate.threads, dynamic_quant_group=gate.dynamic_quant_group)
        self.tmp = Path(tempfile.mkdtemp(prefix="hasten-gate-"))
        self.baseline = compile(model, backend, BackendConfig(threads=gate.threads))
        self.judge = Judge(self.baseline, self.eval, gate)
        self.base_quality = self.judge.base_quality
        self.trials = 0
        # ONNX Runtime's fusion and pre-processing, once for every trial of the fallback
        self.source = prepare_for_ort(model, qconfig.method, self.tmp / "prepared.onnx")[0]
        self.base_variant: Model | None = None  # for QDQ methods: quantized once, then edited
        self.first: Model | None = None  # the first trial's variant (what a fallback that gives up returns)
        self.last: tuple[Any, ...] | None = None

    def trial(self, excluded: tuple[str, ...]) -> tuple[Model, Quality, BudgetVerdict]:
        self.trials += 1
        out = self.tmp / f"trial{self.trials}.onnx"
        extra = tuple(n for n in excluded if n not in self.qconfig.nodes_to_exclude)
        if self.base_variant is not None and extra:
            # QDQ: take the nodes out of the quantized graph instead of calibrating again
            variant = with_float_nodes(self.base_variant, self.source, extra, out)
        else:
            variant = quantize(self.source, self.qconfig.excluding(excluded), self.calib, out)
            if not extra and self.qconfig.method in QDQ_METHODS:
                self.base_variant = variant
        quality, verdict = self.judge.judge(self.judge.outputs(compile(variant, self.backend, self.bcfg)))
        self.slack = self.judge.slack
        if self.last is not None and self.last[1] is not self.first and self.last[1] is not self.base_variant:
            _remove_model_files(self.last[1])  # nobody comes back to it: free its disk
        if self.first is None:
            self.first = variant
        self.last = (excluded, variant, quality, verdict)
        return variant, quality, verdict

    def cleanup(self, keep: Model | None = None) -> None:
        """Delete the working folder, except ``keep``'s files when they live in it."""
        import shutil

        kept = {Path(keep.path).resolve(), Path(keep.path).with_suffix(".manifest.json").resolve()} if keep else set()
        for p in self.tmp.iterdir():
            if p.resolve() in kept:
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        if not any(self.tmp.iterdir()):
            self.tmp.rmdir()

    def score(self, excluded: tuple[str, ...]) -> tuple[float, bool]:
        """The tightest of the bars' normalised margins (budget, worst example, required metrics),
        so the fallback ranks nodes by how much they help the bar that binds, not the mean alone."""
        _, _, verdict = self.trial(excluded)
        return self.slack, verdict.passed


def _failed(verdict: BudgetVerdict, why: str) -> BudgetVerdict:
    return BudgetVerdict(False, False, verdict.drop, verdict.drop_ci, verdict.allowed, f"{verdict.message}; {why}")


def quantize_under_budget(model: Model, qconfig: QuantConfig, data: Dataset, gate: GateConfig = GateConfig(),
                          out: str | Path | None = None) -> GateResult:
    """The whole gate: quantize → quality vs budget (→ sensitivity fallback) → speed guard."""
    if model.fixed_batch is not None:  # a model without a batch axis is evaluated and timed at its own batch
        from dataclasses import replace

        gate = replace(gate, eval_batch_size=model.fixed_batch, batch_sizes=(model.fixed_batch,))
    backend = gate.backend or recommended_backend(qconfig) or "ort-cpu"
    g = _Gate(model, qconfig, data, gate, backend)
    result = None
    try:
        result = _run_gate(g, model, qconfig, gate, backend, out)
        return result
    finally:  # the trials' files (a model each: GBs for a transformer) go; a result not written to `out` stays
        g.cleanup(keep=result.model if result is not None and result.model is not None else None)


def _run_gate(g: _Gate, model: Model, qconfig: QuantConfig, gate: GateConfig, backend: str,
              out: str | Path | None) -> GateResult:
    variant, quality, verdict = g.trial(qconfig.nodes_to_exclude)
    ranked, trail = [], []
    if not verdict.passed and gate.fallback:
        variant, quality, verdict, ranked, trail = _fallback(g, variant, quality, verdict)
    manifest = dict(variant.info.extra.get("manifest", {}))
    result = GateResult(False, None, backend, g.base_quality, quality, verdict, None, manifest, ranked, trail,
                        split={"calibration": len(g.calib) if qconfig.method in CALIBRATING else 0, "evaluation": len(g.eval)})
    if not verdict.passed:
        result.refused = "quality: " + verdict.message + (
            "; even the all-float-but-one model misses the budget" if trail else "")
        return result
    runner = compile(variant, backend, g.bcfg)
    threads = g.bcfg.resolved_threads()
    if gate.dynamic_quant_group:  # the file alone does not say how its float MatMuls were judged and timed
        run_with = {"backend": backend, "dynamic_quant_group": gate.dynamic_quant_group,
                    "dynamic_int8_matmuls": runner.info.extra.get("dynamic_int8_matmuls", 0)}
        variant = _with_manifest(variant, {**variant.info.extra["manifest"], "run_with": run_with})
        manifest = result.manifest = dict(variant.info.extra["manifest"])
    return guard_and_save(result, g.baseline, runner, variant, g.eval, gate, out, "the FP32 baseline",
                          lambda guard: why_not_faster(manifest, backend, guard.rows, variant.path, threads))


def guard_and_save(result: GateResult, baseline: Any, runner: Any, variant: Model, data: Dataset, gate: GateConfig,
                   out: str | Path | None, against: str, why: Any) -> GateResult:
    """The "not faster" guard, shared by every transform: time ``runner`` against ``baseline``
    interleaved; unless faster beyond noise (or ``keep_if_slower``) refuse with ``why(guard)``;
    otherwise write ``variant`` to ``out``."""
    guard = speed_check(baseline, runner, data, gate.batch_sizes, gate.seq_len, gate.time_budget_s)
    if not guard.faster:
        guard = GuardVerdict(False, guard.rows, tuple(why(guard)))
    result.guard = guard
    if not guard.faster and not gate.keep_if_slower:
        result.refused = f"speed: not faster than {against} beyond noise — " + "; ".join(guard.reasons)
        return result
    result.accepted, result.model = True, _save(variant, out)
    result.manifest = dict(result.model.info.extra.get("manifest", result.manifest))
    return result


def _fallback(g: _Gate, variant: Model, quality: Quality, verdict: BudgetVerdict) -> tuple[Any, ...]:
    nodes = list(variant.info.extra["manifest"].get("quantized_nodes", []))
    if len(nodes) < 2:
        return variant, quality, verdict, [], []
    costs = _weight_bytes(g.source.path)  # the graph the node names come from (fused, for transformers)
    ranked = sensitivities(nodes, g.slack, g.score, costs)  # g.slack: of the all-quantized trial
    trail = greedy_fallback(ranked, g.score, len(nodes), start=g.qconfig.nodes_to_exclude,
                               max_steps=g.gate.max_fallback_steps)
    if not trail:
        return variant, quality, verdict, ranked, []
    excluded, variant, quality, verdict = g.last  # the greedy's final trial: no need to run it again
    assert excluded == trail[-1].excluded
    return variant, quality, verdict, ranked, trail


def _weight_bytes(path: Path) -> dict[str, int]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    sizes = {i.name: numpy_helper.to_array(i).nbytes for i in graph.initializer}
    return {n.name: sum(sizes.get(i, 0) for i in n.input) for n in graph.node}


def recommended_backend(qconfig: QuantConfig) -> str | None:
    return {"nncf": "openvino", "bf16": "openvino-bf16"}.get(qconfig.method)


def _remove_model_files(variant: Model) -> None:
    path = Path(variant.path)
    for p in (path, path.with_suffix(".manifest.json")):
        p.unlink(missing_ok=True)


def _with_manifest(variant: Model, manifest: dict[str, Any]) -> Model:
    from dataclasses import replace

    return Model(replace(variant.info, extra={**variant.info.extra, "manifest": manifest}), text_encoder=variant.text_encoder)


def _save(variant: Model, out: str | Path | None) -> Model:
    if out is None:
        return variant
    import json
    import shutil
    from dataclasses import replace

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(variant.path, out)
    manifest = dict(variant.info.extra["manifest"])
    manifest["output"] = {**manifest.get("output", {}), "path": str(out)}
    out.with_suffix(".manifest.json").write_text(json.dumps(manifest, indent=2))
    info = replace(variant.info, path=str(out), extra={**variant.info.extra, "manifest": manifest})
    return Model(info, text_encoder=variant.text_encoder)
