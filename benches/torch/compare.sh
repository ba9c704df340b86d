#!/usr/bin/env bash
# Interleaved torch / wfrmix speed rounds (forward and input VJP, 2 threads), as the README's speed table
# was measured; run by hand, never by CI. Usage, from the repository root:
#   PY=/path/to/venv/bin/python bash benches/torch/compare.sh [ROUNDS] [OUT_DIR]
# With ONLY64=1: batch 64 only, more calls per timing (a 10, c 8, the MNIST model 6), no CIFAR-10: the
# rounds that show torch's run-to-run spread.
# PY is a Python with torch and diffusers (outside the repository). OUT_DIR (default /tmp/wfrmix-speed)
# receives the random-weight MNIST and CIFAR-10 models that torch saves and wfrmix loads.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:?set PY to a Python with torch and diffusers}
ROUNDS=${1:-2}
OUT=${2:-/tmp/wfrmix-speed}
export OMP_NUM_THREADS=2 RAYON_NUM_THREADS=2
cargo build --release --example unet2d_speed
EX=./target/release/examples/unet2d_speed
# Save the two random-weight models once (seeded; one call each).
"$PY" benches/torch/unet2d_speed.py mnist "$OUT/mnist" 64 1 >/dev/null
"$PY" benches/torch/unet2d_speed.py cifar "$OUT/cifar" 64 1 >/dev/null
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  if [ "${ONLY64:-0}" = 1 ]; then
    specs=("weights/fmnist_unet_a 64 10" "weights/fmnist_unet_c 64 8" "$OUT/mnist 64 6")
  else
    specs=("weights/fmnist_unet_a 64 8" "weights/fmnist_unet_a 256 4" "weights/fmnist_unet_c 64 8" "weights/fmnist_unet_c 256 4" "$OUT/mnist 64 6" "$OUT/mnist 256 4")
  fi
  for spec in "${specs[@]}"; do
    set -- $spec
    "$PY" benches/torch/unet2d_speed.py "$1" - "$2" "$3" | grep torch
    "$EX" "$1" "$2" "$3" nocandle | grep -v '^$'
  done
done
if [ "${ONLY64:-0}" != 1 ]; then
  "$PY" benches/torch/unet2d_speed.py "$OUT/cifar" - 64 2 | grep torch
  "$EX" "$OUT/cifar" 64 2 nocandle
fi
