#!/usr/bin/env bash
# One prepared pass over hasten's GPU code paths, for a lent NVIDIA machine (docs/gpu.md).
# Run from the repository root. Python packages the machine lacks may sit as wheels in .whl/ (and, for
# the serve section, in .srv/whl/ with Triton's perf_analyzer in .srv/pa/: docs/gpu.md says how).
# Writes its logs and JSON to $OUT (default /tmp/hasten-gpu-check).
set -uo pipefail
OUT=${OUT:-/tmp/hasten-gpu-check}; mkdir -p "$OUT"
export HASTEN_CACHE=${HASTEN_CACHE:-/tmp/hasten-gpu-cache} PYTHONUNBUFFERED=1
WHEELS=$(compgen -G ".whl/*.whl"; compgen -G ".srv/whl/*.whl")
if [[ -n "$WHEELS" ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/hasten-site $WHEELS || exit 1
  export PYTHONPATH=/tmp/hasten-site
fi
[[ -x .srv/pa/run ]] && export HASTEN_PERF_ANALYZER=$PWD/.srv/pa/run   # bench_server.py's load generator at concurrency 64
if [[ -n "${ORT_GPU_PARTS:-}" ]]; then   # an onnxruntime-gpu tree sent in pieces (part_aa, part_ab, ...: a split tar.xz)
  mkdir -p /tmp/hasten-ortgpu
  cat "$ORT_GPU_PARTS"/part_* | python3 -c 'import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz").extractall("/tmp/hasten-ortgpu")' || exit 1
  export PYTHONPATH=/tmp/hasten-ortgpu${PYTHONPATH:+:$PYTHONPATH}
  # the CUDA libraries onnxruntime-gpu links against, from the machine's nvidia-* Python packages
  LIBS=$(python3 -c 'import glob, site; print(":".join(d for s in site.getsitepackages() for d in sorted(glob.glob(s + "/nvidia/*/lib"))))')
  export LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
export PYTHONPATH=$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p /tmp/hasten-bin   # a `hasten` command on PATH without installing (timeout cannot run a shell function)
printf '#!/bin/sh\nexec python3 -c "import sys; from hasten.cli import main; sys.argv[0] = \\"hasten\\"; main()" "$@"\n' >/tmp/hasten-bin/hasten
chmod +x /tmp/hasten-bin/hasten; export PATH=/tmp/hasten-bin:$PATH
step() { echo; echo "===== $* ($(date +%T))"; }
want() { [[ " ${SECTIONS:-machine backends tests bench two_four prune ort_cuda serve} " == *" $1 "* ]]; }   # SECTIONS="two_four prune" runs those alone

if want machine; then step machine
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c 'import torch, onnxruntime as o; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "| onnxruntime", o.__version__, o.get_available_providers())'
fi

if want backends; then step backends
hasten backends 2>&1 | tee "$OUT/backends.txt"
fi

if want tests; then step "GPU tests (pytest -m gpu)"
timeout 300 python3 -m pytest -q -m gpu -p no:cacheprovider tests/runtime tests/measure tests/compress/test_prune.py tests/compress/test_distill.py 2>&1 | tee "$OUT/pytest_gpu.txt"
fi

if want bench; then step "digits-cnn on every torch CUDA backend vs torch-eager (CPU), interleaved"
timeout 240 hasten bench digits-cnn -b torch-eager,torch-cuda,torch-cuda-fp16,torch-cuda-bf16,torch-cuda-graphs \
  --batch-sizes 1,256 --time-budget-s 1 --json "$OUT/bench_digits_gpu.json" 2>&1 | tee "$OUT/bench_digits_gpu.txt"
fi

if want two_four; then step "2:4 semi-structured sparse vs dense FP16 (sparse tensor cores)"
timeout 120 python3 - <<'PY' 2>&1 | tee "$OUT/two_four.txt"
import json, os, torch
from hasten.compress.prune import semi_structured_speed, two_four_mask
torch.manual_seed(0)
ws = [torch.randn(o, i) for o, i in ((3072, 768), (768, 3072), (4096, 4096), (3072, 3072))]
ws = [w * two_four_mask(w) for w in ws]
res = semi_structured_speed(ws, torch, tokens=4096, repeats=50)
print(res["device"], "tokens", res["tokens"])
for r in res["layers"]:
    if not r["supported"]:
        print(r["shape"], "not supported:", r["why"]); continue
    ks = "  ".join("%s %.3f ms (launch %.3f, graph %s)" % (k, v["ms"], v["launch_ms"], v["graph_ms"] if isinstance(v["graph_ms"], str) else "%.3f" % v["graph_ms"]) for k, v in r["kernels"].items())
    print(r["shape"], ks, "| best %s %.2fx" % (r["kernel"], r["speedup"]), r["unavailable"] or "")
big = semi_structured_speed(ws[2:3], torch, tokens=16384, repeats=20)["layers"][0]
print("tokens 16384", big["shape"], {k: (round(v["ms"], 3), v["graph_ms"]) for k, v in big.get("kernels", {}).items()}, "best %.2fx" % big.get("speedup", 0))
res["tokens_16384"] = big
json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "two_four.json"), "w"), indent=1)
PY
fi

if want prune; then step "hasten prune digits-cnn --method 2:4 (the GPU timing rows)"
timeout 180 hasten prune digits-cnn --method 2:4 --finetune-steps 30 -o /tmp/hasten-gpu-24.onnx --keep-if-slower 2>&1 | tee "$OUT/prune_24.txt"
fi

if want ort_cuda; then step "ONNX Runtime CUDA execution provider (needs onnxruntime-gpu: ORT_GPU_PARTS)"
python3 -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())'
timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider tests/runtime/test_registry.py tests/measure/test_profile.py 2>&1 | tee "$OUT/pytest_ort_cuda.txt"
timeout 150 hasten bench digits-cnn -b ort-cpu,ort-cuda --batch-sizes 1,256 --time-budget-s 1 --json "$OUT/bench_ort_cuda.json" 2>&1 | tee "$OUT/bench_ort_cuda.txt"
timeout 120 hasten profile digits-cnn -b ort-cuda --batch-size 256 --runs 10 2>&1 | tee "$OUT/profile_ort_cuda.txt"
timeout 60 hasten bench digits-cnn -b ort-tensorrt --batch-sizes 1 --time-budget-s 1 2>&1 | tail -3 | tee "$OUT/ort_tensorrt.txt"
fi
if want serve; then   # the server on this machine's CPU (ort-cpu, 1 thread), then on the GPU when ort-cuda is there
for b in ${SERVE_BACKENDS:-ort-cpu ort-cuda}; do
  if [[ $b == ort-cuda ]] && ! python3 -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())'; then
    echo "skipping serve on ort-cuda: onnxruntime has no CUDA execution provider here (ORT_GPU_PARTS)"; continue
  fi
  step "hasten serve under load on $b (benchmarks/bench_server.py)"
  timeout ${SERVE_TIMEOUT:-300} python3 benchmarks/bench_server.py --backend "$b" --rounds ${SERVE_ROUNDS:-10} --seconds 5 --out "$OUT/serve_$b" 2>&1 | tee "$OUT/bench_server_$b.txt"
done
fi
step done
