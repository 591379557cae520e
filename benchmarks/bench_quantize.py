"""Quantization on this CPU, each variant gated and then timed interleaved with its FP32 baseline.

Usage:  python benchmarks/bench_quantize.py [--threads 1] [--only minilm,digits] [--out benchmarks/results]

minilm, batch 8 × 128 tokens. The fidelity bar against the FP32 embeddings over the evaluation
sentences (those not used for calibration): mean cosine ≥ 0.99 (budget 1 %), min cosine ≥ 0.97,
top-1 nearest-neighbour agreement ≥ 0.95. Every method goes through `quantize_under_budget` (with
the sensitivity fallback), then all accepted variants and both FP32 baselines (ONNX Runtime,
OpenVINO) are timed in one interleaved run. digits-cnn: static INT8 at batch 256, ≤ 0.5 pt drop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import hasten  # noqa: E402
from hasten.compress import DynamicInt8, NncfInt8, StaticInt8  # noqa: E402
from hasten.measure import BenchConfig, compare, machine_facts  # noqa: E402
from hasten.plan import GateConfig, quantize_under_budget  # noqa: E402
from hasten.runtime import BackendConfig  # noqa: E402

BAR = dict(budget="1%", metric="cosine", min_example=0.97, require=(("nn_agreement", 0.95),))


def minilm(threads: int, out: Path, only_cases: str = "") -> list[dict]:
    model = hasten.load_model("minilm")
    data = hasten.load_dataset("minilm", model)
    cases = [
        ("ORT dynamic INT8 per-tensor, no fallback", DynamicInt8(per_channel=False), "ort-cpu", False),
        ("ORT dynamic INT8 per-tensor", DynamicInt8(per_channel=False), "ort-cpu", True),
        ("ORT dynamic INT8 per-channel", DynamicInt8(), "ort-cpu", True),
        ("ORT static INT8 QDQ (MinMax)", StaticInt8(), "ort-cpu", True),
        ("OpenVINO + NNCF INT8", NncfInt8(subset_size=128), "openvino", True),
        ("OpenVINO + NNCF INT8, 270 calibration", NncfInt8(subset_size=270), "openvino", True),
        ("OpenVINO + NNCF INT8, SmoothQuant alpha 0.75", NncfInt8(subset_size=128, smooth_quant_alpha=0.75), "openvino", True),
        ("OpenVINO + NNCF INT8, SmoothQuant alpha 0.8", NncfInt8(subset_size=128, smooth_quant_alpha=0.8), "openvino", True),
        # the fallback's float MatMuls run as dynamic INT8 (OpenVINO's run-time activation quantization, groups of 128)
        ("OpenVINO + NNCF INT8, float nodes as dynamic INT8", NncfInt8(subset_size=128), "openvino", True, 128),
        ("OpenVINO + NNCF INT8, SmoothQuant 0.8, float nodes as dynamic INT8", NncfInt8(subset_size=128, smooth_quant_alpha=0.8),
         "openvino", True, 128),
        ("OpenVINO static shapes + NNCF INT8, SmoothQuant 0.8, float nodes as dynamic INT8",
         NncfInt8(subset_size=128, smooth_quant_alpha=0.8), "openvino-static", True, 128),
    ]
    opt_in = ("270", "alpha")  # longer or exploratory runs: only when --cases names them
    rows, accepted = [], {}
    if only_cases:
        cases = [c for c in cases if any(k.strip().lower() in c[0].lower() for k in only_cases.split(","))]
    cases = [c for c in cases if not any(k in c[0] and k not in only_cases for k in opt_in)]
    for label, qcfg, backend, fallback, *dq in cases:
        dq = dq[0] if dq else 0
        gate = GateConfig(**BAR, backend=backend, threads=threads, batch_sizes=(8,), seq_len=128, time_budget_s=3.0,
                          fallback=fallback, keep_if_slower=True, dynamic_quant_group=dq)
        t0 = time.perf_counter()
        print(f"… {label}", file=sys.stderr)
        r = quantize_under_budget(model, qcfg, data, gate, out / f"minilm-{len(rows)}.onnx")
        q = r.quality
        row = {"case": label, "backend": backend, "passes_bar": r.verdict.passed, "mean_cos": q.value,
               "min_cos": q.extra.get("min"), "nn_agreement": q.extra.get("nn_agreement"),
               "float_nodes": len(r.manifest.get("float_nodes", [])), "quantized_nodes": len(r.manifest.get("quantized_nodes", [])),
               "eval_examples": len(data) - r.split.get("calibration", 0), "seconds": round(time.perf_counter() - t0),
               "dynamic_quant_group": dq, "dynamic_int8_matmuls": r.manifest.get("run_with", {}).get("dynamic_int8_matmuls", 0),
               "trail": [t.to_dict() for t in r.trail], "guard": r.guard.to_dict() if r.guard else None}
        rows.append(row)
        if r.accepted and r.verdict.passed:
            accepted[label] = (r.model, backend, dq)
    for label, (variant, backend, dq) in list(accepted.items()):
        if backend == "openvino":  # the same INT8 model on OpenVINO compiled per input shape: quality checked again
            static = f"{label} [static shapes]"
            row = next(r for r in rows if r["case"] == label)
            rows.append({**row, "case": static, "backend": "openvino-static", "trail": [], "guard": None,
                         **_quality(model, variant, data, "openvino-static", threads, row["eval_examples"], dq)})
            accepted[static] = (variant, "openvino-static", dq)
    speed = _interleaved(model, data, accepted, threads)
    for row in rows:
        row.update(speed.get(row["case"], {}))
    rows.append({"case": "FP32 baselines", **speed.get("_baselines", {})})
    return rows


def _quality(model, variant, data, backend, threads, n_eval, dq=0) -> dict:  # noqa: ANN001
    """The bar (the gate's own Judge, same BAR) for ``variant`` on ``backend`` over the last ``n_eval`` examples."""
    from hasten.plan.gate import Judge

    cfg = BackendConfig(threads=threads)
    judge = Judge(hasten.compile(model, "ort-cpu", cfg), data.select(slice(len(data) - n_eval, None), "eval"),
                  GateConfig(**BAR, threads=threads))
    quality, verdict = judge.judge(judge.outputs(hasten.compile(variant, backend, BackendConfig(threads=threads, dynamic_quant_group=dq))))
    return {"mean_cos": quality.value, "min_cos": quality.extra.get("min"),
            "nn_agreement": quality.extra.get("nn_agreement"), "passes_bar": verdict.passed}


def _interleaved(model, data, accepted, threads) -> dict:  # noqa: ANN001
    cfg = BackendConfig(threads=threads)
    runners = {"ORT FP32": hasten.compile(model, "ort-cpu", cfg), "OpenVINO FP32": hasten.compile(model, "openvino", cfg),
               "OpenVINO FP32 [static shapes]": hasten.compile(model, "openvino-static", cfg)}
    for label, (variant, backend, dq) in accepted.items():
        runners[label] = hasten.compile(variant, backend, BackendConfig(threads=threads, dynamic_quant_group=dq))
    res = compare(runners, data, BenchConfig(batch_sizes=(8,), seq_len=128, time_budget_s=8.0, min_runs=15), machine={})
    base = res["ORT FP32"].results[0].stats.p50_ms
    out = {label: {"p50_ms": r.results[0].stats.p50_ms, "p99_ms": r.results[0].stats.p99_ms,
                   "speedup_vs_ort_fp32": base / r.results[0].stats.p50_ms} for label, r in res.items()}
    out["_baselines"] = {"ORT FP32 p50_ms": base, "OpenVINO FP32 p50_ms": out["OpenVINO FP32"]["p50_ms"],
                         "OpenVINO FP32 static p50_ms": out["OpenVINO FP32 [static shapes]"]["p50_ms"]}
    return out


def digits(threads: int, out: Path) -> list[dict]:
    model = hasten.load_model("digits-cnn")
    data = hasten.load_dataset("digits-cnn", model)
    gate = GateConfig(budget="0.5pt", metric="accuracy", threads=threads, batch_sizes=(256,), time_budget_s=4.0,
                      keep_if_slower=True)
    r = quantize_under_budget(model, StaticInt8(), data, gate, out / "digits-static.onnx")
    row = r.guard.rows[0] if r.guard else None
    return [{"case": "digits-cnn static INT8 (ORT)", "baseline_accuracy": r.baseline_quality.value,
             "accuracy": r.quality.value, "drop_pt": 100 * r.verdict.drop, "drop_ci_pt": [100 * x for x in r.verdict.drop_ci],
             "passes": r.verdict.passed, "eval_examples": r.split["evaluation"],
             "p50_ms_fp32": row.baseline_p50_ms if row else None, "p50_ms_int8": row.variant_p50_ms if row else None,
             "speedup": row.speedup if row else None, "faster_beyond_noise": row.faster_beyond_noise if row else None}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="minilm,digits")
    ap.add_argument("--cases", default="", help="minilm cases whose label contains one of these words (comma-separated)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    models = args.out / "quantized"
    models.mkdir(exist_ok=True)
    results = {}
    if "digits" in args.only:
        results["digits"] = digits(args.threads, models)
        for r in results["digits"]:
            print(f"{r['case']}: accuracy {r['baseline_accuracy']:.4f} → {r['accuracy']:.4f} (drop {r['drop_pt']:.2f} pt, "
                  f"CI {r['drop_ci_pt'][0]:.2f}..{r['drop_ci_pt'][1]:.2f}; {r['eval_examples']} images), batch 256 p50 "
                  f"{r['p50_ms_fp32']:.2f} → {r['p50_ms_int8']:.2f} ms = {r['speedup']:.2f}× (beyond noise: {r['faster_beyond_noise']})")
    if "minilm" in args.only:
        results["minilm"] = minilm(args.threads, models, args.cases)
        print(f"\nminilm, batch 8 × 128, {args.threads} thread(s); bar: mean cos ≥ 0.99, min ≥ 0.97, NN agreement ≥ 0.95")
        print(f"{'case':<58} {'backend':<15} {'mean cos':>8} {'min cos':>8} {'NN agr':>7} {'bar':>5} {'float':>5} {'p50 ms':>8} {'vs ORT FP32':>11}")
        for r in results["minilm"][:-1]:
            p50 = f"{r['p50_ms']:.1f}" if "p50_ms" in r else "—"
            sp = f"{r['speedup_vs_ort_fp32']:.2f}×" if "speedup_vs_ort_fp32" in r else "—"
            print(f"{r['case']:<58} {r['backend']:<15} {r['mean_cos']:>8.4f} {r['min_cos']:>8.4f} {r['nn_agreement']:>7.4f} "
                  f"{'pass' if r['passes_bar'] else 'MISS':>5} {r['float_nodes']:>5} {p50:>8} {sp:>11}")
        b = results["minilm"][-1]
        print(f"FP32 baselines: ORT {b.get('ORT FP32 p50_ms', float('nan')):.1f} ms, OpenVINO {b.get('OpenVINO FP32 p50_ms', float('nan')):.1f} ms, "
              f"OpenVINO static shapes {b.get('OpenVINO FP32 static p50_ms', float('nan')):.1f} ms")
        for r in results["minilm"]:
            for step in r.get("trail", []):
                print(f"  trail [{r['case']}]: +{step['excluded'][-1]} in float -> {step['value']:.4f} ({'pass' if step['passed'] else 'miss'})")
    name = "bench_quantize.json" if not args.cases else f"bench_quantize-{args.cases.replace(',', '-').replace(' ', '-')}.json"
    (args.out / name).write_text(json.dumps({"results": results, "machine": machine_facts()}, indent=2, default=str))
    print(f"wrote {args.out / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
