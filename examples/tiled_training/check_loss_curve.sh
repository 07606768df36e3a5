#!/bin/bash
# The example trained on 4 ranks (2x2 tiles, automatic grouping) and on a single device gives
# the same loss at every step (relative 1e-4: summation order differs, nothing else).
set -euo pipefail
exe=$1 mpiexec=$2 out=$3
mkdir -p "$out"
common=(--workload fmnist --size 112 --batch 4 --steps 6 --quiet --profile-reps 1)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$exe" "${common[@]}" --single --json "$out/single.json"
"$mpiexec" --oversubscribe -np 4 "$exe" "${common[@]}" --tiles 2x2 --group auto --json "$out/tiled.json"
/usr/bin/python3 - "$out/single.json" "$out/tiled.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["losses"]; b = json.load(open(sys.argv[2]))["losses"]
assert len(a) == len(b) and len(a) > 0, (a, b)
for i, (x, y) in enumerate(zip(a, b)):
    assert abs(x - y) <= 1e-4 * max(1.0, abs(x)), f"step {i + 1}: single {x} vs tiled {y}"
print("loss curves equal:", ", ".join(f"{x:.5f}" for x in a))
PY
