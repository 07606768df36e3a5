#!/usr/bin/env bash
# The benchmarks, by section. On a fresh Debian 12 run as root: installs what a section
# needs with apt, builds build/bench (Release, -march=native), runs, writes docs/results/.
#
#   tools/bench.sh [section...]     default: every section below
#
# Sections:
#   kernels   our forward kernels vs XNNPACK and oneDNN, single-threaded
#             -> docs/results/kernels.{json,md}
#   models    every shipped model vs PyTorch 1.13: batch 1 and 64, 1 and 2 threads
#             -> docs/results/models.{json,md}
#   load      the cloud server under N concurrent edge clients on loopback, with and
#             without batching: requests/s and latency percentiles -> docs/results/load.{json,md}
#   train     training steps (main ResNet end to end, MEANet stage C) vs PyTorch 1.13:
#             images/s at batch 32/64/128 with 1 and 2 threads, peak memory per step, the
#             memory to train stage C at batch 1..32 -> docs/results/training.{json,md}
#
# Environment:
#   EDGENN_BENCH_REPETITIONS  repetitions per benchmark (default 5; the report takes the best)
#   EDGENN_BENCH_MIN_TIME     seconds per repetition (default 0.2)
#   EDGENN_BENCH_BATCH64      small|all|none: layers also run at batch 64 (default small:
#                             inputs up to 32x32; "all" adds the 56x56-224x224 layers)
#   EDGENN_BENCH_ARGS         extra arguments for the benchmark binaries (e.g. a filter)
#   EDGENN_BENCH_BUILD        build directory (default build/bench)
#   EDGENN_BENCH_MIN_TIME_MODELS  seconds per model measurement (default 1)
#   EDGENN_BENCH_LOAD_SECONDS     seconds per load configuration (default 3)
#   EDGENN_BENCH_MIN_TIME_TRAIN   seconds per training-step measurement (default 1)
#   EDGENN_BENCH_ROUNDS_TRAIN     measurements per training row, the fastest reported (default 3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${EDGENN_BENCH_BUILD:-$ROOT/build/bench}
RESULTS=$ROOT/docs/results
PYTHON=${PYTHON:-python3}
# A new section: a function section_<name> below and its name here (in run order).
ALL_SECTIONS=(kernels models load train)

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench.sh: %s\n' "$*" >&2; exit 1; }

# --- shared steps ----------------------------------------------------------------------------

missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

apt_updated=0
apt_install() {  # apt_install required|optional pkg...
  local kind=$1
  shift
  local missing
  missing=$(missing_packages "$@" | tr '\n' ' ')
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    [ "$kind" = required ] && die "missing packages (run as root or install them): $missing"
    log "optional packages missing, continuing without them: $missing"
    return 0
  fi
  if [ $apt_updated -eq 0 ]; then
    apt-get update -q
    apt_updated=1
  fi
  # shellcheck disable=SC2086
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing; then
    [ "$kind" = required ] && die "apt-get install failed: $missing"
    log "optional packages could not be installed, continuing without them: $missing"
  fi
}

build_targets() {  # configure build/bench once, then build the given targets
  apt_install required build-essential cmake libbenchmark-dev libxsimd-dev python3
  log "configure $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DEDGENN_BUILD_BENCH=ON -DEDGENN_NATIVE=ON \
    -DEDGENN_BUILD_TESTS=OFF -DEDGENN_BUILD_TOOLS=ON -DEDGENN_BUILD_EXAMPLES=OFF >/dev/null
  log "build $*"
  cmake --build "$BUILD" -j "$(nproc)" --target "$@"
}

# --- section: kernels -------------------------------------------------------------------------

section_kernels() {
  # Peers are optional: without them their columns read "—". libxnnpack-dev does not pull in
  # the pthreadpool header its own header includes; oneDNN's CMake config needs OpenCL's.
  apt_install optional libxnnpack-dev libpthreadpool-dev
  apt_install optional libdnnl-dev ocl-icd-opencl-dev opencl-c-headers
  build_targets bench_kernels

  local raw=$BUILD/kernels_raw.json
  log "run bench_kernels (single-threaded; several minutes)"
  # oneDNN runs on OpenMP: one thread (the binary also calls omp_set_num_threads(1)).
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 "$BUILD/bench/bench_kernels" \
    --edgenn_batch64="${EDGENN_BENCH_BATCH64:-small}" \
    --benchmark_repetitions="${EDGENN_BENCH_REPETITIONS:-5}" \
    --benchmark_min_time="${EDGENN_BENCH_MIN_TIME:-0.2}" \
    --benchmark_enable_random_interleaving=true \
    --benchmark_report_aggregates_only=false \
    --benchmark_out="$raw" --benchmark_out_format=json \
    ${EDGENN_BENCH_ARGS:-} >"$BUILD/kernels_console.txt"
  log "report -> docs/results/kernels.{json,md}"
  "$PYTHON" "$ROOT/tools/bench_report.py" "$raw" --json "$RESULTS/kernels.json" --md "$RESULTS/kernels.md"
}

# --- section: models --------------------------------------------------------------------------

section_models() {
  apt_install required nlohmann-json3-dev zlib1g-dev python3-torch python3-numpy
  build_targets bench_models
  log "run bench_models beside PyTorch (a few minutes)"
  OMP_NUM_THREADS=2 /usr/bin/python3 "$ROOT/tools/bench_models.py" --engine "$BUILD/bench/bench_models" \
    --min-time "${EDGENN_BENCH_MIN_TIME_MODELS:-1.0}" "$ROOT"/weights/*.safetensors
}

# --- section: load ----------------------------------------------------------------------------

section_load() {
  apt_install required nlohmann-json3-dev zlib1g-dev libzmq3-dev cppzmq-dev libsodium-dev libcli11-dev
  build_targets edgenn-cloud-load
  local model="$ROOT/weights/cloud_resnet20x2.safetensors"
  [ -f "$model" ] || model="$ROOT/weights/resnet20_main.safetensors"
  log "run edgenn-cloud-load with $(basename "$model") (clients 1,4,16,64; max-batch 1 and 32)"
  "$BUILD/tools/edgenn-cloud-load" --model "$model" --clients 1,4,16,64 --max-batch 1,32 --workers 2 \
    --seconds "${EDGENN_BENCH_LOAD_SECONDS:-3}" --json "$RESULTS/load.json" | tee "$RESULTS/load.md.tmp"
  { echo "# Cloud server load benchmark"; echo; echo "Model: $(basename "$model"), 2 workers, loopback TCP, one image per request."
    echo "Command: \`tools/bench.sh load\`"; echo; echo '```'; cat "$RESULTS/load.md.tmp"; echo '```'; } >"$RESULTS/load.md"
  rm -f "$RESULTS/load.md.tmp"
}

# --- section: train ---------------------------------------------------------------------------

section_train() {
  apt_install required python3-torch python3-numpy
  build_targets bench_train
  log "run bench_train beside PyTorch (speed rows alternate; memory rows in fresh processes; ~10 minutes)"
  OMP_NUM_THREADS=2 /usr/bin/python3 "$ROOT/tools/bench_train.py" --engine "$BUILD/bench/bench_train" \
    --min-time "${EDGENN_BENCH_MIN_TIME_TRAIN:-1.0}" --rounds "${EDGENN_BENCH_ROUNDS_TRAIN:-3}"
}

# --- main -------------------------------------------------------------------------------------

case "${1:-}" in
  -h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
esac
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=("${ALL_SECTIONS[@]}")
for s in "${sections[@]}"; do
  case " ${ALL_SECTIONS[*]} " in
    *" $s "*) ;;
    *) die "unknown section '$s' (known: ${ALL_SECTIONS[*]})" ;;
  esac
done
for s in "${sections[@]}"; do
  log "section $s"
  "section_$s"
done
