"""Pruning and distillation on this CPU, each result gated and timed interleaved with its source.

Usage:  python benchmarks/bench_prune_distill.py [--threads 1] [--only digits,minilm] [--steps 6000]
                                                 [--lr 5e-4] [--hidden-weight 10] [--batch-size 32]
                                                 [--freeze-embeddings/--no-freeze-embeddings] [--augment-spans 2]
                                                 [--augment-swaps 0] [--attention-weight 0]
                                                 [--train-data everyday] [--max-length 64] [--seed 0]
                                                 [--init CHECKPOINT_FOLDER] [--student S.onnx] [--out benchmarks/results]

digits-cnn (batch 256, ONNX Runtime): 50 % channel pruning + fine-tuning on the training split
(accuracy on the held-out test split, budget 1 point), 80 %
unstructured pruning (same dense latency, shown honestly), and the pruned model after INT8 (ONNX
Runtime static QDQ; OpenVINO + NNCF), all timed in one interleaved run against the FP32 source on
ONNX Runtime.

minilm (batch 8 × 128 tokens, ONNX Runtime): a 3-block student distilled from the 6-block teacher
on unlabeled text (default: the example's training text, `everyday`), judged by cosine to the
teacher's embeddings on the held-out evaluation sentences; then the student after INT8. The distillation checkpoints
under <out>/checkpoints, so a stopped run resumes; `--init` starts from such a folder (a finished
student trained further with a fresh schedule: a warm restart). `--student S.onnx` skips the training and measures a
student trained elsewhere (benchmarks/tools/gpu_distill.sh distils on a lent GPU; docs/gpu.md) the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import hasten  # noqa: E402
from hasten.compress import DynamicInt8, NncfInt8, StaticInt8, quantize  # noqa: E402
from hasten.compress.distill import DistillConfig  # noqa: E402
from hasten.compress.prune import PruneConfig  # noqa: E402
from hasten.compress.training import fingerprint  # noqa: E402
from hasten.measure import BenchConfig, compare, machine_facts  # noqa: E402
from hasten.models import training_dataset  # noqa: E402
from hasten.plan import GateConfig  # noqa: E402
from hasten.plan.gate import Judge  # noqa: E402
from hasten.plan.derive import distill_under_budget, prune_under_budget  # noqa: E402
from hasten.runtime import BackendConfig  # noqa: E402
from hasten.verify import collect_outputs  # noqa: E402


def digits(threads: int, out: Path) -> list[dict]:
    from hasten.models.examples import digits as ex

    model = hasten.load_model("digits-cnn")
    test, train = ex.dataset(), ex.train_dataset()
    gate = GateConfig(budget="1pt", threads=threads, batch_sizes=(256,), time_budget_s=2.0, keep_if_slower=True)
    variants: dict[str, hasten.Model] = {}
    rows = []
    for label, cfg in (("channel 50% + fine-tune", PruneConfig("channel", 0.5, finetune_steps=600)),
                       ("unstructured 80% + fine-tune", PruneConfig("unstructured", 0.8, finetune_steps=300))):
        print(f"… digits-cnn {label}", file=sys.stderr)
        t0 = time.perf_counter()
        r = prune_under_budget(model, cfg, train, test, gate, out / f"digits-{cfg.method}.onnx")
        m = r.manifest
        rows.append({"case": label, "passes_budget": r.verdict.passed, "accuracy": r.quality.value,
                     "accuracy_ci": [r.quality.ci_low, r.quality.ci_high], "baseline_accuracy": r.baseline_quality.value,
                     "params": m["parameters"]["after"], "params_before": m["parameters"]["before"],
                     "macs": m["macs"]["after"], "macs_before": m["macs"]["before"],
                     "finetune_steps": m["finetune"]["steps"], "stopped_early": m["finetune"]["stopped_early"],
                     "seconds": round(time.perf_counter() - t0)})
        variants[label] = r.model or r.candidate
    pruned = variants["channel 50% + fine-tune"]
    base_acc = rows[0]["baseline_accuracy"]
    for label, qcfg, backend in (("channel 50% + fine-tune, then ORT static INT8", StaticInt8(), "ort-cpu"),
                                 ("channel 50% + fine-tune, then OpenVINO + NNCF INT8", NncfInt8(subset_size=300),
                                  "openvino")):
        int8 = quantize(pruned, qcfg, train.take(512), out / f"digits-channel-{qcfg.method}.onnx")
        runner = hasten.compile(int8, backend, BackendConfig(threads=threads))
        acc = float((collect_outputs(runner, test, batch_size=256).argmax(1) == test.labels).mean())
        rows.append({"case": label, "backend": backend, "accuracy": acc, "baseline_accuracy": base_acc,
                     "passes_budget": acc >= base_acc - 0.01,
                     "quantized_nodes": len(int8.info.extra["manifest"].get("quantized_nodes", []))})
        variants[label] = (int8, backend)
    speed = _interleaved({"FP32 source": model, **variants}, test, 256, None, threads)
    for row in rows:
        row.update(speed[row["case"]])
    rows.insert(0, {"case": "FP32 source", "accuracy": rows[0]["baseline_accuracy"], **speed["FP32 source"]})
    return rows


FFN_OUT_0 = "/encoder/encoder/layer.0/output/dense/MatMul"  # the exported student's name for it


def minilm(threads: int, out: Path, steps: int, train_data: str | None = None, lr: float = 5e-4,
           hidden_weight: float = 10.0, batch_size: int = 32, student_path: Path | None = None,
           freeze_embeddings: bool | None = None, augment_spans: int | None = None, augment_swaps: int = 0,
           attention_weight: float = 0.0, init: Path | None = None, seed: int = 0, max_length: int = 64) -> list[dict]:
    teacher = hasten.load_model("minilm")
    evaluation = hasten.load_dataset("minilm", teacher)
    train = hasten.load_dataset(train_data, teacher) if train_data else training_dataset(teacher)
    gate = GateConfig(budget="5%", metric="cosine", threads=threads, batch_sizes=(8,), seq_len=128,
                      time_budget_s=2.0, keep_if_slower=True)
    t0 = time.perf_counter()
    if student_path is None:
        config = DistillConfig("layers=3", steps=steps, lr=lr, max_length=max_length, hidden_weight=hidden_weight,
                               batch_size=batch_size, freeze_embeddings=freeze_embeddings, augment_spans=augment_spans,
                               augment_swaps=augment_swaps, attention_weight=attention_weight,
                               init=None if init is None else str(init), seed=seed)
        print(f"… minilm → 3-block student, {steps} steps on {len(train)} sentences ({train.name})", file=sys.stderr)
        run = (f"minilm-student-{steps}-{lr:g}-{hidden_weight:g}-{batch_size}-{freeze_embeddings}-{augment_spans}"
               f"-{augment_swaps}-{attention_weight:g}-{train.name}" + (f"-seed{seed}" if seed else "")
               + (f"-len{max_length}" if max_length != 64 else "") + (f"-init{fingerprint(str(init))[:8]}" if init else ""))
        r = distill_under_budget(teacher, config, train, evaluation, gate, out / "minilm-student.onnx",
                                 checkpoint=out / "checkpoints" / run)  # each setting its own folder
        m, quality, passed = r.manifest, r.quality, r.verdict.passed
        student = r.model or r.candidate  # measured even if it misses the bar (the table says so)
    else:  # trained elsewhere (benchmarks/tools/gpu_distill.sh on a lent GPU): judged and timed here the same way
        print(f"… minilm → the given student {student_path}", file=sys.stderr)
        m = json.loads(student_path.with_suffix(".manifest.json").read_text())
        student = hasten.load_model(student_path)
        student.info.extra.setdefault("num_heads", teacher.info.extra.get("num_heads"))  # as distill() keeps it
        judge = Judge(hasten.compile(teacher, "ort-cpu", BackendConfig(threads=threads)), evaluation, gate)
        quality, verdict = judge.judge(judge.outputs(hasten.compile(student, "ort-cpu", BackendConfig(threads=threads))))
        passed = verdict.passed
    reference = collect_outputs(hasten.compile(teacher, "ort-cpu", BackendConfig(threads=threads)), evaluation)
    t = m["training"]
    rows = [{"case": "student (3 blocks), FP32", "mean_cos": quality.value, "min_cos": quality.extra.get("min"),
             "passes_bar": passed, "kept_blocks": m["student"]["kept_blocks"],
             "params": m["parameters"]["after"]["total"], "params_before": m["parameters"]["before"]["total"],
             "macs": m["macs"]["after"], "macs_before": m["macs"]["before"], "steps": t["steps"],
             "evaluations": t["evaluations"], "seconds": round(time.perf_counter() - t0) if student_path is None else None,
             "trained_on": t.get("device", "cpu"), "training_seconds": t.get("seconds"),
             "train_data": t["data"]["name"], "train_examples": t["data"]["examples"], "lr": m["config"]["lr"],
             "hidden_weight": m["config"]["hidden_weight"], "batch_size": m["config"]["batch_size"],
             "frozen_embeddings": m.get("frozen_embeddings", False), "augment_spans": m.get("augment_spans", 0),
             "augment_swaps": m.get("augment_swaps", 0), "attention_weight": m["config"].get("attention_weight", 0.0),
             "dropout": m.get("dropout"), "given": str(student_path) if student_path else None,
             "seed": m["config"].get("seed", 0), "max_length": m["config"].get("max_length"), "init": m.get("init")}]
    variants = {rows[0]["case"]: student}
    nncf = NncfInt8(subset_size=256, smooth_quant_alpha=0.8)  # SmoothQuant 0.8: -0.002 cosine vs -0.003 at NNCF's 0.95
    for label, qcfg, backend in (("student, dynamic INT8 per-tensor", DynamicInt8(per_channel=False), "ort-cpu"),
                                 ("student, dynamic INT8 per-channel", DynamicInt8(), "ort-cpu"),
                                 ("student, OpenVINO + NNCF INT8", nncf, "openvino"),
                                 # the input of block 0's FFN output MatMul (after GELU) is the one activation that
                                 # INT8 hurts most: kept in float it costs -0.0007 instead of -0.0021 on training
                                 # text (benchmarks/tools/int8_sensitivity.py), for 1/9 of the MatMul work
                                 ("student, OpenVINO + NNCF INT8, block 0's FFN output in float",
                                  nncf.excluding((FFN_OUT_0,)), "openvino")):
        q = quantize(student, qcfg, train.take(256), out / f"minilm-student-{len(rows)}.onnx")
        got = collect_outputs(hasten.compile(q, backend, BackendConfig(threads=threads)), evaluation)
        cos = np.sum(got * reference, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
        rows.append({"case": label, "mean_cos": float(cos.mean()), "min_cos": float(cos.min()),
                     "passes_bar": bool(cos.mean() >= 0.95)})
        variants[label] = (q, backend)
    speed = _interleaved({"FP32 teacher": teacher, **variants}, evaluation, 8, 128, threads)
    for row in rows:
        row.update(speed[row["case"]])
    rows.insert(0, {"case": "FP32 teacher", **speed["FP32 teacher"]})
    return rows


def _interleaved(models: dict, data, batch: int, seq_len, threads: int) -> dict:  # noqa: ANN001
    cfg = BackendConfig(threads=threads)
    runners = {label: hasten.compile(*(m if isinstance(m, tuple) else (m, "ort-cpu")), cfg) for label, m in models.items()}
    res = compare(runners, data, BenchConfig(batch_sizes=(batch,), seq_len=seq_len, time_budget_s=8.0, min_runs=15),
                  machine={})
    first = next(iter(res))
    base = res[first].results[0].stats.p50_ms
    return {label: {"p50_ms": r.results[0].stats.p50_ms, "p99_ms": r.results[0].stats.p99_ms,
                    "speedup": base / r.results[0].stats.p50_ms} for label, r in res.items()}


def _table(title: str, rows: list[dict], quality: str) -> None:
    from rich.table import Table

    from hasten.core.console import stdout_console

    t = Table(title=title)
    for col in ("case", quality, "params", "MACs", "p50 ms", "p99 ms", "speed-up"):
        t.add_column(col, justify="left" if col == "case" else "right")
    for r in rows:
        q = r.get("accuracy", r.get("mean_cos"))
        params = r.get("params")
        params = params.get("nonzero") if isinstance(params, dict) else params
        t.add_row(r["case"], "" if q is None else f"{q:.4f}", "" if params is None else f"{params:,}",
                  "" if r.get("macs") is None else f"{r['macs']:,}", f"{r.get('p50_ms', 0):.3g}",
                  f"{r.get('p99_ms', 0):.3g}", f"{r.get('speedup', 0):.2f}×")
    stdout_console().print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="digits,minilm")
    ap.add_argument("--steps", type=int, default=6000, help="minilm distillation steps")
    ap.add_argument("--lr", type=float, default=5e-4, help="minilm distillation peak learning rate")
    ap.add_argument("--hidden-weight", type=float, default=10.0, help="minilm block-output matching weight")
    ap.add_argument("--batch-size", type=int, default=32, help="minilm distillation batch size")
    ap.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=None,
                    help="minilm: keep the student's embedding tables [default: distill's auto, frozen]")
    ap.add_argument("--augment-spans", type=int, default=None,
                    help="minilm: random word spans added per training text [default: distill's auto, 2]")
    ap.add_argument("--augment-swaps", type=int, default=0,
                    help="minilm: copies of each training text with words swapped (distill's augment_swaps)")
    ap.add_argument("--attention-weight", type=float, default=0.0,
                    help="minilm: weight of MiniLM's attention transfer (distill's attention_weight)")
    ap.add_argument("--init", type=Path, default=None, help="minilm: start the student from this earlier run's "
                    "checkpoint folder (distill's init: a warm restart with a fresh schedule)")
    ap.add_argument("--seed", type=int, default=0, help="minilm: distillation seed (shuffle, spans, swapped copies)")
    ap.add_argument("--max-length", type=int, default=64, help="minilm: tokens per training text, at most")
    ap.add_argument("--student", type=Path, default=None, help="minilm: measure this student .onnx (with its "
                    ".manifest.json, e.g. trained on a GPU by benchmarks/tools/gpu_distill.sh) instead of distilling one")
    ap.add_argument("--train-data", default=None, help="minilm training text: everyday, pydoc, markov-wiki, several "
                    "joined with + (everyday+markov-wiki), or a .txt file [default: the example's training text]")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    work = args.out / "prune_distill"
    work.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_facts(), "threads": args.threads}
    if "digits" in args.only:
        result["digits"] = digits(args.threads, work)
        _table(f"digits-cnn, batch 256, {args.threads} thread(s); speed-up vs FP32 on ort-cpu", result["digits"], "accuracy")
    if "minilm" in args.only:
        result["minilm"] = minilm(args.threads, work, args.steps, args.train_data, args.lr,
                                  args.hidden_weight, args.batch_size, args.student, args.freeze_embeddings,
                                  args.augment_spans, args.augment_swaps, args.attention_weight, args.init, args.seed,
                                  args.max_length)
        _table(f"minilm → 3-block student, batch 8 × 128, {args.threads} thread(s); speed-up vs the FP32 teacher on ort-cpu", result["minilm"],
               "mean cos")
    name = "bench_prune_distill" + ("" if args.only == "digits,minilm" else "-" + args.only.replace(",", "-"))
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out / (name + '.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
