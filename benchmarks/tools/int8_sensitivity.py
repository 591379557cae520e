"""Which MatMuls of a distilled minilm student does NNCF INT8 hurt most? Measured, on training text.

Usage:  python benchmarks/tools/int8_sensitivity.py STUDENT.onnx [--threads 1] [--alpha 0.8]
                                                   [--calibration 256] [--val-from 3000] [--val-size 600]
                                                   [--held-out] [--out benchmarks/results/int8_sensitivity.json]

The student is quantized with OpenVINO + NNCF INT8 (`NncfInt8`, as bench_prune_distill.py does) once
with every MatMul in INT8, then once per group with that group kept in float (`nodes_to_exclude`);
each variant's mean cosine to the teacher is measured on training sentences that calibration did
not see (`--val-from`, `--val-size`), so choosing what to keep in float never looks at the held-out
evaluation sentences. `--held-out` adds their column too, to check the choice afterwards.
Groups: each block whole, then each kind of MatMul across blocks, then each block's FFN output.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import hasten  # noqa: E402
from hasten.compress import NncfInt8, quantize  # noqa: E402
from hasten.models import training_dataset  # noqa: E402
from hasten.runtime import BackendConfig  # noqa: E402
from hasten.verify import collect_outputs  # noqa: E402
from hasten.verify.metrics import cosine  # noqa: E402

KINDS = {"Q, K, V": r"/attention/self/(query|key|value)/MatMul$", "attention output": r"/attention/output/dense/MatMul$",
         "FFN input": r"/intermediate/dense/MatMul$", "FFN output": r"/layer\.\d+/output/dense/MatMul$"}


def groups(names: list[str]) -> dict[str, tuple[str, ...]]:
    """Group label → ONNX node names of the linear MatMuls in it."""
    linear = [n for n in names if any(re.search(p, n) for p in KINDS.values())]
    blocks = sorted({m.group(1) for n in linear if (m := re.search(r"/layer\.(\d+)/", n))}, key=int)
    out: dict[str, tuple[str, ...]] = {"none (all INT8)": ()}
    out.update({f"block {b} whole": tuple(n for n in linear if f"/layer.{b}/" in n) for b in blocks})
    out.update({f"every {k}": tuple(n for n in linear if re.search(p, n)) for k, p in KINDS.items()})
    out.update({f"block {b} FFN output": tuple(n for n in linear if f"/layer.{b}/" in n and re.search(KINDS["FFN output"], n))
                for b in blocks})
    return {k: v for k, v in out.items() if v or k.startswith("none")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("student", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--alpha", type=float, default=0.8, help="SmoothQuant alpha (NncfInt8.smooth_quant_alpha)")
    ap.add_argument("--calibration", type=int, default=256, help="calibration sentences (the first of the training text)")
    ap.add_argument("--val-from", type=int, default=3000)
    ap.add_argument("--val-size", type=int, default=600)
    ap.add_argument("--held-out", action="store_true", help="also measure on the held-out evaluation sentences")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/int8_sensitivity.json"))
    args = ap.parse_args()
    if args.val_from < args.calibration:
        ap.error(f"--val-from {args.val_from} overlaps the {args.calibration} calibration sentences; start it after them")

    import onnx

    teacher = hasten.load_model("minilm")
    student = hasten.load_model(str(args.student))
    student.info.extra.setdefault("num_heads", teacher.info.extra.get("num_heads"))
    train = training_dataset(teacher)
    sets = {"training text": train.select(slice(args.val_from, args.val_from + args.val_size), "validation")}
    if args.held_out:
        sets["held-out"] = hasten.load_dataset("minilm", teacher)
    config = BackendConfig(threads=args.threads)
    runner = hasten.compile(teacher, "ort-cpu", config)
    refs = {k: collect_outputs(runner, d) for k, d in sets.items()}

    def cosines(model: hasten.Model, backend: str) -> dict[str, float]:
        r = hasten.compile(model, backend, config)
        out = {}
        for k, d in sets.items():
            out[k] = float(cosine(collect_outputs(r, d), refs[k]).mean())
        return out

    rows = [{"float": "everything (FP32 student)", "nodes": [], **cosines(student, "ort-cpu")}]
    work = Path(tempfile.mkdtemp(prefix="hasten-int8-sensitivity-"))  # ~20 MB per variant: not under results
    names = [n.name for n in onnx.load(str(student.path), load_external_data=False).graph.node]
    for i, (label, nodes) in enumerate(groups(names).items()):
        t0 = time.perf_counter()
        q = quantize(student, NncfInt8(subset_size=args.calibration, smooth_quant_alpha=args.alpha, nodes_to_exclude=nodes),
                     train.take(args.calibration), work / f"variant-{i}.onnx")
        rows.append({"float": label, "nodes": list(nodes), **cosines(q, "openvino")})
        print(f"… {label}: {rows[-1]['training text']:.5f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)

    cols = list(sets)
    print("| kept in float | MatMuls | " + " | ".join(f"mean cos, {c}" for c in cols) + " | loss vs FP32, training text |")
    print("|---|---:|" + "---:|" * (len(cols) + 1))
    for r in rows:
        loss = rows[0]["training text"] - r["training text"]
        count = "all" if r is rows[0] else len(r["nodes"])  # the FP32 student: every MatMul in float
        print(f"| {r['float']} | {count} | " + " | ".join(f"{r[c]:.5f}" for c in cols) + f" | {loss:+.5f} |")
    args.out.write_text(json.dumps({"student": str(args.student), "alpha": args.alpha, "calibration": args.calibration,
                                    "validation": [args.val_from, args.val_from + args.val_size], "rows": rows}, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
