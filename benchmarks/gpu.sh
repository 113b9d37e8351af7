#!/usr/bin/env bash
# The speed issue's GPU checks as one prepared script, for a lent GPU machine (the device
# tool). It finishes in well under 8 minutes there and writes one markdown table to
# $OUT/gpu.md, puts it into BENCHMARKS.md (section "## GPU"), and copies that file to $OUT.
#
#   make gpu-wheels                       # here, once: .gpu/ with the ldam wheel, the web
#                                         # packages the device image lacks, and Lucent
#   run: bash benchmarks/gpu.sh           # there, with carry [".gpu"]; then copy
#                                         # $OUT/BENCHMARKS.md back over BENCHMARKS.md
#   DEVICE=cpu QUICK=1 PYTHON=.venv/bin/python bash benchmarks/gpu.sh   # here: a dry run
#
# What it runs: `ldam bench` on the device (LeNet 16/256/1024 chains, resnet18 at 64x64,
# the small ViT, resnet50 at 224x224 with 16 chains; eager PyTorch and Lucent side by side),
# then the dashboard's streaming benchmark with resnet50 at 224x224 on the device, then
# `ldam atlas` on 64 channels of resnet18 at 224x224 (units per minute).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/ldam-gpu}
PY=${PYTHON:-python3}
QUICK=${QUICK:-}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ "$DEVICE" != cpu ]; then
  # The device image has torch and torchvision but not the web packages, and nothing can be
  # downloaded there: install the carried wheels into a folder of their own.
  test -d .gpu/wheels || { echo "gpu.sh: no .gpu/wheels; run 'make gpu-wheels' first" >&2; exit 2; }
  "$PY" -m pip install -q --no-deps --no-index --target "$WORK/site" .gpu/wheels/*.whl
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  LUCENT=()
  if [ -d .gpu/lucent ]; then
    "$PY" -m pip install -q --no-deps --no-index --target "$WORK/lucent" .gpu/lucent/*.whl
    LUCENT=(--lucent "$WORK/lucent")
  fi
  CASES=lenet-16,lenet-256,lenet-1024,resnet18-64,vit-224,resnet50-224
  STREAM_ARCH=resnet50 STREAM_CHAINS=16
else
  # The dry run checks the script, not the figures: small cases, a small streaming model.
  LUCENT=()
  [ -d .bench-deps ] && LUCENT=(--lucent .bench-deps)
  CASES=lenet-16,resnet18-64
  STREAM_ARCH=resnet18 STREAM_CHAINS=2
fi

{
  echo "## GPU"
  echo
  echo "\`bash benchmarks/gpu.sh\` on the lent machine, $(date -u +%Y-%m-%d)."
  "$PY" - <<'EOF'
import torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device (dry run)"
print(f"Device: {name}; torch {torch.__version__}.")
EOF
  echo
  echo "### \`ldam bench --device $DEVICE --cases $CASES\`"
  echo
  "$PY" -m ldam bench --device "$DEVICE" --cases "$CASES" ${QUICK:+--quick} "${LUCENT[@]}"
  echo
} > "$OUT/gpu.md"

# The dashboard on the device: resnet50 (random weights) at 224x224, 16 chains, one panel.
"$PY" - "$WORK/$STREAM_ARCH.pt2" "$STREAM_ARCH" <<'EOF'
import sys

import torch
import torchvision

from ldam.models.saving import export_checkpoint

torch.manual_seed(0)
model = getattr(torchvision.models, sys.argv[2])(weights=None).eval()
export_checkpoint(model, sys.argv[1], (3, 224, 224))
EOF
{
  echo "### \`python -m benchmarks.bench_stream --checkpoint $STREAM_ARCH.pt2 --target fc:1 --chains $STREAM_CHAINS --device $DEVICE\`"
  echo
  "$PY" -m benchmarks.bench_stream ${QUICK:+--quick} --checkpoint "$WORK/$STREAM_ARCH.pt2" \
    --target fc:1 --chains "$STREAM_CHAINS" --device "$DEVICE"
  echo
} >> "$OUT/gpu.md"

# The atlas on the device: units per minute of `ldam atlas` (local executor, one process) for
# 64 channels of resnet18's layer4.1.conv2 at 224x224, 8 chains each, window 10 (so that the
# window budget lets 22 units share a batch).
"$PY" - "$WORK/atlas_resnet18.pt2" <<'EOF'
import sys

import torch
import torchvision

from ldam.models.saving import export_checkpoint

torch.manual_seed(0)
export_checkpoint(torchvision.models.resnet18(weights=None).eval(), sys.argv[1], (3, 224, 224))
EOF
ATLAS_UNITS=0-63 ATLAS_STEPS=200
if [ -n "$QUICK" ]; then ATLAS_UNITS=0-3 ATLAS_STEPS=5; fi
{
  echo "### \`ldam atlas resnet18.pt2 --layer layer4.1.conv2 --units $ATLAS_UNITS --steps $ATLAS_STEPS --chains 8 --window 10 --batch-units auto --device $DEVICE\`"
  echo
  start=$(date +%s)
  "$PY" -m ldam atlas "$WORK/atlas_resnet18.pt2" --layer layer4.1.conv2 --units "$ATLAS_UNITS" \
    --steps "$ATLAS_STEPS" --chains 8 --window 10 --batch-units auto --device "$DEVICE" --out "$WORK/atlas" 2>&1 | tail -2
  echo
  echo "wall time including start and model load: $(( $(date +%s) - start )) s"
  echo
} >> "$OUT/gpu.md"

# Put the table into BENCHMARKS.md in place of an older "## GPU" section.
"$PY" - "$OUT/gpu.md" BENCHMARKS.md <<'EOF'
import re
import sys
from pathlib import Path

table = Path(sys.argv[1]).read_text().rstrip() + "\n"
doc = Path(sys.argv[2])
text = doc.read_text()
section = re.compile(r"^## GPU\n.*?(?=^## |\Z)", re.S | re.M)
text = section.sub(lambda _: table + "\n", text) if section.search(text) else text.rstrip() + "\n\n" + table
doc.write_text(text)
EOF
cp BENCHMARKS.md "$OUT/BENCHMARKS.md"
cat "$OUT/gpu.md"
