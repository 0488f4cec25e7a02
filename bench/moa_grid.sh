#!/usr/bin/env bash
# The MOA recipe grid behind bench/RESULTS.md "MOA quality, on a GPU": bench/moa_sweep.py
# runs (the project's model, augmentations, objectives and evaluation core; plain torch, no
# Ray) launched JOBS at a time on one CUDA device, each run's figures appended as one JSON
# line to $1. Runs are launched in the order below; none is launched after DEADLINE_S
# seconds, so a bounded device lease still returns whole runs.
#
#   ANTSSL_MOA_CACHE=tiles.npz bash bench/moa_grid.sh results.jsonl
#
# (tiles.npz: made once by any bench/moa_sweep.py run on a machine with ../shared/data.)
set -u
out=${1:?usage: moa_grid.sh OUT.jsonl}
JOBS=${JOBS:-6}
DEADLINE_S=${DEADLINE_S:-300}
DEVICE=${DEVICE:-cuda}
here=$(cd "$(dirname "$0")" && pwd)
base="--pool stats --temp 0.5 --device $DEVICE --threads 2 --json $out"
runs=(
  "--tag base --seed 0 --baselines"
  "--tag base --seed 1"
  "--tag base --seed 2"
  "--tag w32 --width 32 --seed 0"
  "--tag w32 --width 32 --seed 1"
  "--tag w64 --width 64 --seed 0"
  "--tag w64 --width 64 --seed 1"
  "--tag stride8-1000 --train_stride 8 --steps 1000 --seed 0"
  "--tag stride8-1000 --train_stride 8 --steps 1000 --seed 1"
  "--tag w32-stride8-1000 --width 32 --train_stride 8 --steps 1000 --seed 0"
  "--tag w32-stride8-1000 --width 32 --train_stride 8 --steps 1000 --seed 1"
  "--tag batch1024 --batch 1024 --seed 0"
  "--tag batch1024 --batch 1024 --seed 1"
  "--tag w32-d2 --width 32 --depth 2 --seed 0"
  "--tag vicreg-w32 --obj vicreg --width 32 --seed 0"
  "--tag crop0.6 --crop 0.6 --seed 0"
  "--tag noblur-nonoise --blur 0 --noise 0 --seed 0"
  "--tag tau0.2 --temp 0.2 --seed 0"
  "--tag w64-stride8-3000 --width 64 --train_stride 8 --steps 3000 --seed 0"
  "--tag 1000 --steps 1000 --seed 0"
)
start=$SECONDS
for r in "${runs[@]}"; do
  if (( SECONDS - start > DEADLINE_S )); then echo "deadline: not launched: $r"; continue; fi
  while (( $(jobs -rp | wc -l) >= JOBS )); do sleep 1; done
  # shellcheck disable=SC2086
  (python3 "$here/moa_sweep.py" $base $r > /dev/null 2>&1 || echo "failed: $r") &
  echo "launched at $((SECONDS - start)) s: $r"
done
wait
echo "grid done in $((SECONDS - start)) s"
