"""The runner shipped in every bundle as ``run.py``: needs only onnxruntime and numpy (and the
`tokenizers` package for --text). Kept as plain source so it is copied, not generated."""

SOURCE = r'''#!/usr/bin/env python3
"""Run this hasten edge bundle: python run.py --input in.npz [--output out.npz] [--threads 1]
[--bench 100] [--text "a sentence" ...] [--check]. Needs onnxruntime and numpy only (OpenVINO
for an IR bundle; `tokenizers` for --text). Every file's checksum is verified before the model
loads."""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


class BundleError(Exception):
    pass


def verify(folder=HERE):
    """The manifest, after checking every listed file's size and sha256; BundleError otherwise."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise BundleError(f"{folder} is not a bundle: manifest.json is missing")
    manifest = json.loads(manifest_path.read_text())
    problems = []
    for name, want in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if path.stat().st_size != want["size"] or digest != want["sha256"]:
            problems.append(f"{name} does not match its checksum (changed after export)")
    if problems:
        raise BundleError("refusing a tampered or incomplete bundle: " + "; ".join(problems))
    return manifest


class OpenVinoSession:
    """The two calls of an onnxruntime session this runner uses, over OpenVINO (IR bundles)."""

    def __init__(self, path, threads):
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                                   "INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()

    def run(self, names, feed):
        result = {port.get_any_name(): value for port, value in self.request.infer(feed).items()}
        return [result[n] for n in names]


def load(folder=HERE, threads=1):
    """(session, io spec) for the bundle in ``folder``, verified first: onnxruntime for ORT-format
    bundles, OpenVINO for IR bundles."""
    folder = Path(folder)
    manifest = verify(folder)
    io = json.loads((folder / "io.json").read_text())
    if manifest["format"] == "openvino":
        return OpenVinoSession(folder / manifest["model_file"], threads), io
    if manifest["format"] != "ort":
        raise BundleError(f"a {manifest['format']} bundle runs on its own runtime (e.g. executorch.runtime), not here")
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(folder / manifest["model_file"]), sess_options=so,
                                   providers=["CPUExecutionProvider"])
    return session, io


def encode_text(folder, texts):
    from tokenizers import Tokenizer

    spec = json.loads((Path(folder) / "assets" / "text.json").read_text())
    tok = Tokenizer.from_file(str(Path(folder) / "assets" / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=spec["max_length"])
    encodings = tok.encode_batch(list(texts))
    length = max(len(e.ids) for e in encodings)
    feed = {n: np.zeros((len(texts), length), np.int64) for n in spec["inputs"]}
    for row, e in enumerate(encodings):
        n = len(e.ids)
        if "input_ids" in feed:
            feed["input_ids"][row, :n] = e.ids
        if "attention_mask" in feed:
            feed["attention_mask"][row, :n] = 1
        if "token_type_ids" in feed:
            feed["token_type_ids"][row, :n] = e.type_ids
    return feed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--input", type=Path, help=".npz holding one array per model input")
    ap.add_argument("--text", nargs="+", help="sentences, for a text model (needs the tokenizers package)")
    ap.add_argument("--output", type=Path, help="write the outputs here (.npz)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bench", type=int, default=0, help="time this many runs and print p50/p99")
    ap.add_argument("--check", action="store_true", help="only verify the checksums")
    args = ap.parse_args(argv)
    try:
        if args.check:
            verify()
            print("bundle ok: every checksum matches")
            return 0
        session, io = load(HERE, args.threads)
        if args.text:
            feed = encode_text(HERE, args.text)
        elif args.input:
            with np.load(args.input, allow_pickle=False) as data:
                feed = {spec["name"]: np.ascontiguousarray(data[spec["name"]], dtype=spec["dtype"]) for spec in io["inputs"]}
        else:
            raise BundleError("give --input file.npz or --text")
        names = [o["name"] for o in io["outputs"]]
        outputs = dict(zip(names, session.run(names, feed)))
        if args.bench:
            times = []
            for _ in range(args.bench):
                t = time.perf_counter()
                session.run(names, feed)
                times.append(time.perf_counter() - t)
            times.sort()
            print(f"p50 {times[len(times) // 2] * 1e3:.3f} ms  p99 {times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3:.3f} ms"
                  f"  ({args.bench} runs, {args.threads} thread(s))")
        if args.output:
            np.savez(args.output, **outputs)
        for name, value in outputs.items():
            print(f"{name}: {value.dtype} {list(value.shape)}")
        return 0
    except Exception as exc:  # a clear line, not a traceback: bad inputs, missing files, runtime errors
        print(f"error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
'''
