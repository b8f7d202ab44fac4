#!/usr/bin/env bash
# Every GPU figure of benchmarks/README.md in one call, sized (per-section timeouts) to finish within 8 minutes
# on one card, model builds included (not yet run: no GPU was lent to the task that wrote it):
# training (trainer vs bare loop, full and LoRA, bf16), QES sampling (fp32 vs half), purification
# (CodeSR, GrIDPure, ... on full-size architectures with random weights) and protection speed (bf16).
# On the lent device machine, after ../shared/tools/device-prep.sh:
#   run (carry [".device"]): bash .device/run.sh bash benchmarks/gpu.sh
# Each section prints a markdown table headed with the card's name; paste them into benchmarks/README.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
echo "## training"; timeout 200 $PY benchmarks/train.py --full --device cuda --steps 60 --mixed-precision bf16 --repeat 1
echo "## QES sampling"; timeout 90 $PY benchmarks/sample.py --full --device cuda --images 16
echo "## purification"; timeout 120 $PY benchmarks/purify.py --device cuda
echo "## protections"; timeout 60 $PY benchmarks/protect.py --full --device cuda --dtype bf16 --steps 10 --images 4 --methods aspl,advdm,metacloak
