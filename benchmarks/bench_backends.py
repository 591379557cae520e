"""minilm latency at batch 1, 8, 32 (seq 128) on every available backend, measured interleaved.

Usage:  python benchmarks/bench_backends.py [--threads 1] [--time-budget-s 8] [--out benchmarks/results]

Prints a table (and the p50 ratio of each backend to ort-cpu, from the same interleaved run)
and writes JSON. Backends take turns of ~20 ms, so background load on a shared machine falls
on all of them alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import hasten  # noqa: E402
from hasten.measure import BenchConfig, compare, machine_facts  # noqa: E402
from hasten.measure.report import pick_lines  # noqa: E402
from hasten.runtime import BackendConfig, backends_for  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per backend (default 1: least noisy here)")
    ap.add_argument("--time-budget-s", type=float, default=8.0, help="timed seconds per batch size and backend")
    ap.add_argument("--min-runs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()

    model = hasten.load_model(args.model)
    data = hasten.load_dataset(args.model, model)
    names = backends_for(model)
    runners = {n: hasten.compile(model, n, BackendConfig(threads=args.threads)) for n in names}
    config = BenchConfig(batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")), seq_len=args.seq_len,
                         min_runs=args.min_runs, time_budget_s=args.time_budget_s, target_rel_ci=0.01)
    print(f"measuring {args.model} on {', '.join(names)} ({args.threads} thread(s), seq {args.seq_len}) …",
          file=sys.stderr)
    results = compare(runners, data, config, model_info=model.info.to_dict())

    base = "ort-cpu"
    header = f"{'backend':<12} {'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'±CI':>6} {'samples/s':>10} {'runs':>5} {'p50 vs ' + base:>13}"
    print(f"\n{args.model}, seq {args.seq_len}, {args.threads} thread(s), {machine_facts()['cpu']}")
    print(header)
    print("-" * len(header))
    rows = []
    for name, res in results.items():
        for i, r in enumerate(res.results):
            ratio = r.stats.p50_ms / results[base].results[i].stats.p50_ms
            print(f"{name:<12} {r.batch_size:>5} {r.stats.p50_ms:>9.2f} {r.stats.p90_ms:>9.2f} {r.stats.p99_ms:>9.2f} "
                  f"{100 * r.rel_ci:>5.1f}% {r.samples_per_s:>10.1f} {r.stats.count:>5} {ratio:>12.2f}×")
            rows.append({"backend": name, "batch_size": r.batch_size, "p50_ms": r.stats.p50_ms, "ratio_p50_vs_" + base: ratio})
    for name, res in results.items():
        print(f"cold start {name}: {res.cold_start_ms:.0f} ms (creation {res.runner['cold_start_s'] * 1e3:.0f} ms + first run)")
    for line in pick_lines(results):
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "bench_backends.json"
    out.write_text(json.dumps({"summary": rows, "fastest": pick_lines(results), "machine": machine_facts(), "config": vars(args) | {"out": str(args.out)},
                               "results": {k: v.to_dict() for k, v in results.items()}}, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
