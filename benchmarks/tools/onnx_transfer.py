"""Send an ONNX model through a channel that takes only small files (a lent GPU machine returns at
most 16 MiB per file, 64 MiB in all), and put it back together on the other side.

    python benchmarks/tools/onnx_transfer.py pack   MODEL.onnx FOLDER [--half-above 1000000] [--part-mib 15]
    python benchmarks/tools/onnx_transfer.py unpack FOLDER MODEL.onnx

`pack` writes FOLDER/<name>.graph.onnx (the graph without its initializers), the initializers as one
.npz cut into FOLDER/<name>.weights.npz.partNN pieces, and copies <name>.manifest.json when there is
one. float32 initializers with more elements than --half-above travel as float16 (a student's
30,522 × 384 word-embedding table, say: rounding each weight by at most 2^-11 of its size); `unpack`
widens them back to float32 and says how many it widened. Plain numpy and onnx: no pickles.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

HALVED = "__halved__"  # the names of the initializers sent as float16


def pack(model_path: Path, folder: Path, half_above: int, part_mib: float) -> list[Path]:
    model = onnx.load(str(model_path))
    arrays, halved = {}, []
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.size > half_above:
            a, _ = a.astype(np.float16), halved.append(init.name)
        arrays[init.name] = a
    if HALVED in arrays:
        sys.exit(f"an initializer is named {HALVED}; cannot pack this model")
    arrays[HALVED] = np.array(halved, dtype=str)
    del model.graph.initializer[:]
    folder.mkdir(parents=True, exist_ok=True)
    stem = model_path.name.removesuffix(".onnx")
    written = [folder / f"{stem}.graph.onnx"]
    onnx.save(model, str(written[0]))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    blob, size = buffer.getvalue(), int(part_mib * 2**20)
    for i in range(0, len(blob), size):
        written.append(folder / f"{stem}.weights.npz.part{i // size:02d}")
        written[-1].write_bytes(blob[i:i + size])
    manifest = model_path.with_suffix(".manifest.json")
    if manifest.exists():
        written.append(folder / manifest.name)
        shutil.copyfile(manifest, written[-1])
    print(f"packed {len(arrays) - 1} initializers ({len(halved)} as float16) into {len(written)} files "
          f"under {folder}", file=sys.stderr)
    return written


def unpack(folder: Path, model_path: Path) -> Path:
    graphs = sorted(folder.glob("*.graph.onnx"))
    if len(graphs) != 1:
        sys.exit(f"{folder} should hold one *.graph.onnx, found {len(graphs)}")
    stem = graphs[0].name.removesuffix(".graph.onnx")
    parts = sorted(folder.glob(f"{stem}.weights.npz.part*"))
    if not parts:
        sys.exit(f"no {stem}.weights.npz.part* files in {folder}")
    model = onnx.load(str(graphs[0]))
    with np.load(io.BytesIO(b"".join(p.read_bytes() for p in parts)), allow_pickle=False) as npz:
        halved = set(npz[HALVED].tolist())
        for name in npz.files:
            if name != HALVED:
                a = npz[name]
                model.graph.initializer.append(numpy_helper.from_array(a.astype(np.float32) if name in halved else a,
                                                                       name))
    model_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(model_path))
    manifest = folder / f"{stem}.manifest.json"
    if manifest.exists():
        shutil.copyfile(manifest, model_path.with_suffix(".manifest.json"))
    print(f"wrote {model_path} ({len(model.graph.initializer)} initializers, {len(halved)} widened from float16)",
          file=sys.stderr)
    return model_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("pack")
    p.add_argument("model", type=Path)
    p.add_argument("folder", type=Path)
    p.add_argument("--half-above", type=int, default=1_000_000)
    p.add_argument("--part-mib", type=float, default=15)
    u = sub.add_parser("unpack")
    u.add_argument("folder", type=Path)
    u.add_argument("model", type=Path)
    args = ap.parse_args()
    if args.verb == "pack":
        pack(args.model, args.folder, args.half_above, args.part_mib)
    else:
        unpack(args.folder, args.model)


if __name__ == "__main__":
    main()
