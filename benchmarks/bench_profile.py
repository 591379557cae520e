"""Does the profile explain the time? Σ node time vs unprofiled wall time − reported overhead.

Usage:  python benchmarks/bench_profile.py [--repeats 3] [--threads 1,2] [--out benchmarks/results]

For minilm (batch 8 × 128 tokens) and digits-cnn (batch 256), profiles each configuration
`--repeats` times and prints Σ nodes / (wall − overhead) — the acceptance target is within 10 % —
plus the dominant op type the verdict names. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import hasten  # noqa: E402
from hasten.measure import ProfileConfig, machine_facts, profile  # noqa: E402

CASES = (("minilm", 8, 128), ("digits-cnn", 256, None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    rows = []
    print(f"{'model':<11} {'batch':>5} {'thr':>3} {'wall ms':>9} {'Σnodes ms':>10} {'overh ms':>9} "
          f"{'Σnodes/(wall−overh)':>20} {'within 10%':>10}  dominant op (verdict)")
    for name, batch, seq in CASES:
        model = hasten.load_model(name)
        data = hasten.load_dataset(name, model)
        for threads in (int(t) for t in args.threads.split(",")):
            ratios = []
            for _ in range(args.repeats):
                r = profile(model, data, ProfileConfig(batch_size=batch, seq_len=seq, runs=args.runs, threads=threads))
                ratio = r.node_sum_us / (r.wall_us - r.overhead_us)
                ratios.append(ratio)
                dominant = r.op_types[0]
                print(f"{name:<11} {batch:>5} {threads:>3} {r.wall_us / 1e3:>9.2f} {r.node_sum_us / 1e3:>10.2f} "
                      f"{r.overhead_us / 1e3:>9.3f} {ratio:>20.3f} {str(abs(ratio - 1) <= 0.10):>10}  "
                      f"{dominant.op_type} {dominant.share:.0%} ({dominant.bound}-bound; named: {dominant.op_type in r.advice[1]})")
                rows.append({"model": name, "batch": batch, "seq_len": seq, "threads": threads, "wall_us": r.wall_us,
                             "node_sum_us": r.node_sum_us, "overhead_us": r.overhead_us, "ratio": ratio,
                             "dominant": dominant.op_type, "advice": list(r.advice)})
            print(f"{'':<11} median ratio {statistics.median(ratios):.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "bench_profile.json"
    out.write_text(json.dumps({"rows": rows, "machine": machine_facts()}, indent=2))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
