"""Edge bundles vs the served cloud path.

Usage:  python benchmarks/bench_edge.py [--seconds 3] [--out benchmarks/results]

For `digits-cnn` and `minilm`, FP32 and dynamic INT8 (hasten's quantizer, no gate here: both
are measured): the ORT-format bundle (`hasten.edge.export_bundle`, optimisation "all", target
arm) — its size, and p50/p99 at batch 1 on 1 intra-op thread in this process — next to the same
model served by `hasten serve` (its own process, window 0, 1 thread) over local HTTP with binary
tensors, plus a network round trip of 0, 20 and 80 ms and the payload's transfer at 50 Mbit/s.
Edge and cloud are measured one after the other per model (not concurrently).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import hasten  # noqa: E402
from hasten.compress import DynamicInt8, quantize  # noqa: E402
from hasten.edge.bundle import export_bundle  # noqa: E402
from hasten.edge.compare import Comparison, measure_cloud, measure_edge  # noqa: E402
from hasten.measure import machine_facts  # noqa: E402

RTTS = (0.0, 20.0, 80.0)
BANDWIDTH = 50.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hasten-bench-edge-"))
    rows = []
    for name in ("digits-cnn", "minilm"):
        fp32 = hasten.load_model(name)
        int8 = quantize(fp32, DynamicInt8(), out=work / f"{name}.int8.onnx")
        feed = hasten.synthetic_dataset(fp32.inputs, size=1).batch(0, 1)
        outputs = [o.name for o in fp32.outputs]
        for precision, model in (("fp32", fp32), ("int8", int8)):
            folder = work / f"{name}-{precision}"
            bundle = export_bundle(model, folder)
            size = sum(f["size"] for n, f in bundle.manifest["files"].items() if n.startswith("model."))
            print(f"{name} {precision}: timing the bundle …", file=sys.stderr)
            edge = measure_edge(str(folder), feed, args.seconds)
            print(f"{name} {precision}: timing the served model …", file=sys.stderr)
            cloud, req, resp = measure_cloud(str(model.path), feed, outputs, args.seconds)
            comps = {rtt: Comparison(edge, cloud, rtt, BANDWIDTH, req, resp) for rtt in RTTS}
            rows.append({"model": name, "precision": precision, "bundle_bytes": size, "edge": vars(edge),
                         "cloud_local": vars(cloud), "request_bytes": req, "response_bytes": resp,
                         "cloud": {str(int(rtt)): {"p50_ms": c.cloud("p50_ms"), "p99_ms": c.cloud("p99_ms"),
                                                   "verdict_p50": c.verdict("p50_ms")} for rtt, c in comps.items()}})
    result = {"machine": machine_facts(), "bandwidth_mbps": BANDWIDTH, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_edge.json").write_text(json.dumps(result, indent=2))
    _table(result)
    print(f"wrote {args.out / 'bench_edge.json'}", file=sys.stderr)


def _table(result: dict) -> None:
    from rich.table import Table

    from hasten.core.console import stdout_console

    t = Table(title=f"edge bundle (1 thread) vs served (local HTTP + RTT + transfer at {result['bandwidth_mbps']:g} Mbit/s), batch 1")
    for col in ("model", "bundle MB", "edge p50", "edge p99", "served p50 (local)", *(f"cloud p50 @{int(r)} ms" for r in RTTS),
                *(f"cloud p99 @{int(r)} ms" for r in RTTS)):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in result["rows"]:
        t.add_row(f"{r['model']} {r['precision']}", f"{r['bundle_bytes'] / 1e6:.2f}", f"{r['edge']['p50_ms']:.3f}",
                  f"{r['edge']['p99_ms']:.3f}", f"{r['cloud_local']['p50_ms']:.3f}",
                  *(f"{r['cloud'][str(int(x))]['p50_ms']:.2f}" for x in RTTS),
                  *(f"{r['cloud'][str(int(x))]['p99_ms']:.2f}" for x in RTTS))
    stdout_console().print(t)


if __name__ == "__main__":
    main()
