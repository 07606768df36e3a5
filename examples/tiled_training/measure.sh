#!/bin/bash
# Measurements of tiled training (docs/tiled_training.md): step time and speedup for 1, 2 and
# 4 ranks against single-device training, per-rank memory, communication volume, the cost
# model's prediction, and automatic grouping against fully fused and layer-wise.
#
#   examples/tiled_training/measure.sh [build dir] [out dir]
#
# Every run writes a JSON record; tools' summary table is printed at the end (markdown).
set -euo pipefail
BUILD=${1:-build}
OUT=${2:-$BUILD/tiled_measure}
EXE="$BUILD/examples/tiled_train"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$OUT"
run() {  # run <name> <ranks> args...
  local name=$1 np=$2; shift 2
  echo "== $name"
  if [[ $np == 0 ]]; then
    "$EXE" "$@" --quiet --json "$OUT/$name.json"
  else
    mpiexec --oversubscribe -np "$np" "$EXE" "$@" --quiet --json "$OUT/$name.json"
  fi
}
for W in "fmnist --size 224 --batch 8 --steps 6" "yolo --size 160 --batch 1 --steps 5"; do
  set -- $W
  w=$1; shift
  a=(--workload "$w" "$@")
  run "$w-single" 0 "${a[@]}" --single
  run "$w-np1" 1 "${a[@]}" --tiles 1x1 --group auto
  run "$w-np2-auto" 2 "${a[@]}" --tiles 1x2 --group auto
  run "$w-np2-fused" 2 "${a[@]}" --tiles 1x2 --group fused
  run "$w-np2-layer" 2 "${a[@]}" --tiles 1x2 --group layer
  run "$w-np4-auto" 4 "${a[@]}" --tiles 2x2 --group auto
  run "$w-np4-fused" 4 "${a[@]}" --tiles 2x2 --group fused
  run "$w-np4-layer" 4 "${a[@]}" --tiles 2x2 --group layer
done
/usr/bin/python3 - "$OUT" <<'PY'
import glob, json, os, sys
runs = {os.path.basename(p)[:-5]: json.load(open(p)) for p in glob.glob(os.path.join(sys.argv[1], "*.json"))}
print("| run | grid | groups fwd / bwd | step s | speedup vs single | predicted s | model error | "
      "peak MB/rank | memory reduction | halo MB/step | boundary MB/step | allreduce MB/step/rank |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for name in sorted(runs):
    r = runs[name]
    s = runs.get(r["workload"] + "-single")
    sp = s["step_s"] / r["step_s"] if s and r["step_s"] else float("nan")
    mem = s["peak_bytes"] / r["peak_bytes"] if s and r["peak_bytes"] else float("nan")
    err = "" if r["single"] else f'{100 * (r["predicted_s"] - r["step_s"]) / r["step_s"]:+.0f}%'
    pred = "" if r["single"] else f'{r["predicted_s"]:.4f}'
    print(f'| {name} | {r["grid"] if not r["single"] else "-"} | {r["fwd_groups"]} / {r["bwd_groups"]} | '
          f'{r["step_s"]:.4f} | {sp:.2f} | {pred} | {err} | {r["peak_bytes"] / 1e6:.2f} | {mem:.2f}x | '
          f'{r["halo_bytes_per_step"] / 1e6:.3f} | {r["boundary_bytes_per_step"] / 1e6:.3f} | '
          f'{r["allreduce_bytes_per_step"] / 1e6:.3f} |')
PY
