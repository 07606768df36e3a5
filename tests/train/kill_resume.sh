#!/bin/bash
# A training run killed with SIGKILL and restarted with the same command ends with exactly the
# trained state of a run that never stopped (edgenn-train's "trained state" fingerprint).
#   kill_resume.sh <edgenn-train> <main weights> <work dir>
set -euo pipefail
train=$1 main=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
args=(meanet --main "$main" --epochs 2 --max-train 768 --batch 64 --checkpoint-every 3)

"$train" "${args[@]}" --out "$work/straight.safetensors" > "$work/straight.txt" 2> "$work/straight.err"
want=$(grep -o 'fnv1a64 [0-9a-f]*' "$work/straight.txt") || { cat "$work/straight.err"; exit 1; }

# Kill the second run as soon as its first checkpoint is on disk (mid-epoch: 12 steps per epoch).
"$train" "${args[@]}" --out "$work/resumed.safetensors" --checkpoint "$work/ckpt.safetensors" \
  > "$work/killed.txt" 2> "$work/killed.err" &
pid=$!
for _ in $(seq 1 600); do
  [[ -f "$work/ckpt.safetensors" ]] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill -KILL "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
[[ -f "$work/ckpt.safetensors" ]] || { echo "no checkpoint was written"; cat "$work/killed.err"; exit 1; }
[[ -f "$work/resumed.safetensors" ]] && { echo "the run finished before it could be killed"; exit 1; }

"$train" "${args[@]}" --out "$work/resumed.safetensors" --checkpoint "$work/ckpt.safetensors" \
  > "$work/resumed.txt" 2> "$work/resumed.err"
grep -q 'resumed from' "$work/resumed.err" || { echo "the restarted run did not resume"; cat "$work/resumed.err"; exit 1; }
got=$(grep -o 'fnv1a64 [0-9a-f]*' "$work/resumed.txt")
echo "uninterrupted: $want; killed and resumed: $got ($(grep -o 'resumed from.*' "$work/resumed.err"))"
[[ "$want" == "$got" ]] || { echo "FAIL: the resumed run's trained state differs"; exit 1; }
