#!/bin/bash
# tools/test.sh: set up a Debian 12 machine and run edgenn's whole test suite, stage by stage.
#
#   tools/test.sh                        every stage (run as root on a fresh machine: installs what it needs)
#   tools/test.sh --only native,golden   only these stages
#   tools/test.sh --skip aarch64,armhf   all but these
#   tools/test.sh --no-install           never call apt (fail if a package is missing)
#   tools/test.sh --jobs 4               build/test parallelism (default: number of cores)
#   tools/test.sh --list                 list the stages
#
# Each stage prints a header and its wall time; the first failing stage stops the run with a
# non-zero exit and is named; a table of stage times closes the run. docs/testing.md says what
# every stage covers. Adding a stage: write a function stage_<name> (dashes become
# underscores) and add <name> to STAGES, with a line in stage_help.
set -Eeuo pipefail

# ---------------------------------------------------------------------------------------------
# Shared settings
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STAGES=(deps native sanitizers scalar aarch64 armhf cortex-m install golden parity dist)
# Stages that run only when named with --only (too long for the 30-minute CI budget).
OPTIONAL_STAGES=(mutants)
stage_help() {
  cat <<'EOF'
  deps        apt packages: host libraries, Python/PyTorch, cross compilers, qemu, arm-none-eabi
  native      x86-64 Release build with -march=native (the machine's widest xsimd arch), ctest
  sanitizers  AddressSanitizer + UBSan build (-O1, default x86-64 SSE2 arch), ctest
  scalar      EDGENN_SIMD_SCALAR=ON build (no xsimd) under AddressSanitizer + UBSan (-O1), ctest
  aarch64     cross build for Raspberry Pi 64-bit, ctest under qemu-aarch64, NEON (neon64) required
              (the NEON instantiations of the tests; the scalar ones run in scalar and sanitizers)
  armhf       cross build for Raspberry Pi 32-bit (neon-vfpv4), ctest under qemu-arm, NEON required
  cortex-m    arm-none-eabi compile check (M4, M7), semihosted run under qemu-system-arm, no heap;
              firmware example (MEANet, static arena) on M4/M7/M55 vs the host build, sizes, instructions
  install     cmake --install + tests/consumer built against the prefix with find_package(edgenn)
  golden      tools/gen_golden{,_backward,_optim}.py --check: PyTorch recomputes the committed golden vectors
  parity      weights/manifest.json matches the shipped files; every shipped model against PyTorch
              on the full 10k test set (tools/parity_check.py with the native build's edgenn-eval)
  dist        tiled distributed training: planner + in-process tiled steps vs single device, and the
              MPI runtime under mpirun with 1, 2, 3, 4 and 6 ranks (K SGD steps = single-device weights)
Only with --only:
  mutants     tools/mutants.py: deliberate bugs in the kernels, one at a time, each must make the
              kernel tests fail (about 2-3 min on 2 cores)
EOF
}

PY=/usr/bin/python3                      # Debian's Python (torch); `python3` on PATH may be another one
BUILD="$ROOT/build"                      # stage build trees: build/ci-<stage>
JOBS="$(nproc 2>/dev/null || echo 2)"
CMAKE_GENERATOR_ARGS=(-G Ninja)
TEST_TIMEOUT=600                         # ctest --timeout: per test without its own TIMEOUT
CTEST_WALL_LIMIT=1800                    # one whole ctest run (guards against a hung qemu)
QEMU_TEST_TIMEOUT=300                    # per test under qemu-user

# Sanitizers stop at the first report; UBSan prints where.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:strict_init_order=1:check_initialization_order=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export OPENBLAS_NUM_THREADS=1            # OpenBLAS threads oversubscribe torch's OpenMP
export DEBIAN_FRONTEND=noninteractive

# apt packages (all installed with --no-install-recommends). Never add a foreign dpkg
# architecture here: armhf breaks `apt-get update` on the project's mirror.
APT_HOST=(build-essential g++ cmake ninja-build pkg-config
  libeigen3-dev libxsimd-dev doctest-dev libstb-dev libzmq3-dev cppzmq-dev nlohmann-json3-dev
  libcli11-dev zlib1g-dev libsodium-dev libopenmpi-dev openmpi-bin)
APT_PYTHON=(python3-torch python3-numpy python3-zmq
  dataset-fashion-mnist)
APT_CROSS=(g++-aarch64-linux-gnu g++-arm-linux-gnueabihf qemu-user)
# Cortex-M: the C++ headers (libstdc++-arm-none-eabi-dev, 17 MB) are enough for the engine,
# which needs no compiled libstdc++ (the toolchain files link through the C driver); the
# compiled libstdc++-arm-none-eabi-newlib would add 1.5 GB.
APT_CORTEX_M=(gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-dev qemu-system-arm)
APT_PACKAGES=("${APT_HOST[@]}" "${APT_PYTHON[@]}" "${APT_CROSS[@]}" "${APT_CORTEX_M[@]}")

# The scalar backend is tested once, by the scalar stage (EDGENN_SIMD_SCALAR, under the
# sanitizers) and on Cortex-M: the SIMD builds test their SIMD backend only. Their scalar
# twins compiled every templated test a second time, and the build is most of the run.
# Sanitized builds use -O1 (-O2 more than doubled the scalar stage's build: 827 vs 336 s CPU).
SIMD_ONLY_ARGS=(-DEDGENN_TEST_SCALAR_TWINS=OFF)
SANITIZER_ARGS=(-DEDGENN_SANITIZE=address,undefined
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1")

# Cross builds: only the test suite. Target libraries (ZeroMQ, MPI) are not installed for the
# targets; cppzmq's package config fails the configure instead of reporting "not found" when
# the target libzmq is missing, and FindMPI could pick the host's MPI, so both stay off.
# Under qemu only the NEON instantiations run (SIMD_ONLY_ARGS), as in every SIMD build.
CROSS_ARGS=(-DEDGENN_BUILD_TOOLS=OFF -DEDGENN_BUILD_EXAMPLES=OFF "${SIMD_ONLY_ARGS[@]}"
  -DCMAKE_DISABLE_FIND_PACKAGE_cppzmq=ON -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON)

CORTEX_M4_FLAGS=(-mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard)
CORTEX_M7_FLAGS=(-mcpu=cortex-m7 -mthumb -mfpu=fpv5-d16 -mfloat-abi=hard)
CORTEX_M_CHECK_FLAGS=(-std=gnu++17 -fno-exceptions -fno-rtti -Wall -Wextra -Werror -Os -c)

# ---------------------------------------------------------------------------------------------
# Helpers
note() { printf '    %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
skip() { printf '    skipped: %s\n' "$*"; exit 77; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
have() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; elif have sudo; then sudo -E "$@"; else fail "need root for: $*"; fi; }

# configure <build dir> [cmake args...]: a fresh cache every time (stale options never leak in;
# objects whose command line did not change are not rebuilt).
configure() {
  local dir=$1; shift
  cmake --fresh -S "$ROOT" -B "$dir" "${CMAKE_GENERATOR_ARGS[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
}
# The native tree (stages native, cortex-m, install, parity, dist use it).
configure_native() { configure "$BUILD/ci-native" -DEDGENN_NATIVE=ON "${SIMD_ONLY_ARGS[@]}"; }
build() { cmake --build "$1" -j "$JOBS"; }
# run_ctest <build dir> [ctest args...]
run_ctest() {
  local dir=$1; shift
  timeout --kill-after=30 "$CTEST_WALL_LIMIT" \
    ctest --test-dir "$dir" --output-on-failure --no-tests=error --timeout "$TEST_TIMEOUT" -j "$JOBS" "$@"
}
# The xsimd architectures the tests were instantiated for (doctest names: "case<xsimd::neon64>").
test_archs() { ctest --test-dir "$1" -N | grep -o '<xsimd::[a-z0-9_<>:]*>' | sort -u | tr '\n' ' ' || true; }
require_arch() {  # require_arch <build dir> <xsimd arch>
  local n
  n=$(ctest --test-dir "$1" -N | grep -cF "<xsimd::$2>" || true)
  [[ $n -gt 0 ]] || fail "no test ran on xsimd::$2 in $1: the SIMD build fell back to scalar (archs seen: $(test_archs "$1"))"
  note "SIMD: $n test cases instantiated for xsimd::$2"
}
missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"
  done
}

# ---------------------------------------------------------------------------------------------
# Stages: one function each, run in a subshell with `set -e`; exit 77 means skipped.
stage_deps() {
  have dpkg-query || fail "not a Debian system (no dpkg-query)"
  if dpkg --print-foreign-architectures | grep -qx armhf; then
    note "warning: the armhf dpkg architecture is enabled; it breaks apt-get update on this mirror"
  fi
  local missing
  mapfile -t missing < <(missing_packages "${APT_PACKAGES[@]}")
  if [[ ${#missing[@]} -eq 0 ]]; then
    note "all ${#APT_PACKAGES[@]} packages present"
    return 0
  fi
  [[ $NO_INSTALL -eq 0 ]] || fail "--no-install, but these packages are missing: ${missing[*]}"
  note "installing ${#missing[@]} packages: ${missing[*]}"
  local used0 used1 t0
  used0=$(df --output=used -B1M / | tail -1)
  t0=$EPOCHREALTIME
  as_root apt-get update
  as_root apt-get install -y --no-install-recommends "${missing[@]}"
  used1=$(df --output=used -B1M / | tail -1)
  note "apt: $(elapsed "$t0") s, +$((used1 - used0)) MB on / (downloaded .debs included: apt-get clean frees them)"
  mapfile -t missing < <(missing_packages "${APT_PACKAGES[@]}")
  [[ ${#missing[@]} -eq 0 ]] || fail "still missing after apt-get install: ${missing[*]}"
}

stage_native() {
  configure_native
  build "$BUILD/ci-native"
  note "SIMD: $(test_archs "$BUILD/ci-native")"
  run_ctest "$BUILD/ci-native"
}

stage_sanitizers() {
  configure "$BUILD/ci-asan" "${SANITIZER_ARGS[@]}" "${SIMD_ONLY_ARGS[@]}" -DEDGENN_BUILD_TOOLS=OFF -DEDGENN_BUILD_EXAMPLES=OFF
  build "$BUILD/ci-asan"
  note "SIMD: $(test_archs "$BUILD/ci-asan")"
  run_ctest "$BUILD/ci-asan"
}

stage_scalar() {
  configure "$BUILD/ci-scalar" -DEDGENN_SIMD_SCALAR=ON "${SANITIZER_ARGS[@]}" -DEDGENN_BUILD_TOOLS=OFF -DEDGENN_BUILD_EXAMPLES=OFF
  build "$BUILD/ci-scalar"
  [[ -z "$(test_archs "$BUILD/ci-scalar")" ]] || fail "EDGENN_SIMD_SCALAR build still has xsimd tests: $(test_archs "$BUILD/ci-scalar")"
  run_ctest "$BUILD/ci-scalar"
}

# cross_stage <name> <toolchain file> <xsimd arch that must be used>
cross_stage() {
  local dir="$BUILD/ci-$1"
  configure "$dir" -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/toolchains/$2" "${CROSS_ARGS[@]}"
  build "$dir"   # doctest_discover_tests already runs every test binary under qemu here
  require_arch "$dir" "$3"
  run_ctest "$dir" --timeout "$QEMU_TEST_TIMEOUT"
}
stage_aarch64() { cross_stage aarch64 aarch64-linux-gnu.cmake neon64; }
stage_armhf() { cross_stage armhf armhf-linux-gnueabihf.cmake neon; }

# cortex_m_core <name> <qemu toolchain file> <cpu flags...>
cortex_m_core() {
  local core=$1 toolchain=$2; shift 2
  local out="$BUILD/ci-cortex-m/$core" dir="$BUILD/ci-cortex-$core"
  mkdir -p "$out"
  # 1. The plain compile check, exactly as a firmware project would compile the engine.
  arm-none-eabi-g++ "$@" "${CORTEX_M_CHECK_FLAGS[@]}" -I"$ROOT/include" \
    "$ROOT/tests/no_exceptions_check.cpp" -o "$out/no_exceptions_check.o"
  # (grep -c reads all of nm's output: grep -q could exit first and fail the pipe with SIGPIPE)
  arm-none-eabi-nm -C "$out/no_exceptions_check.o" | grep -c 'instantiate_all<edgenn::simd::scalar>' >/dev/null ||
    fail "$core: the kernels were not instantiated for the scalar backend"
  note "$core: compiles with $* ${CORTEX_M_CHECK_FLAGS[*]}"
  # 2. Linked into a semihosted program (tests/cortex_m) and run on qemu-system-arm; ctest also
  #    runs the heap check on its objects and link map.
  cmake --fresh -S "$ROOT/tests/cortex_m" -B "$dir" "${CMAKE_GENERATOR_ARGS[@]}" \
    -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/toolchains/$toolchain" -DCMAKE_BUILD_TYPE=MinSizeRel
  build "$dir"
  arm-none-eabi-size "$dir/edgenn_mcu_check.elf"
  run_ctest "$dir" --timeout 60 -V |  # -V: show the heap report
    grep -vE '^(UpdateCTestConfiguration|Constructing a list|Done constructing|Updating test list|Added 0 tests|Checking test dependency)'
}
# The firmware example (examples/firmware): MEANet from the converter's header, static arena,
# on the emulated board with -icount (SysTick then counts instructions), compared line by
# line with the host build of the same model (firmware_host_reference), plus the heap check
# and the size report. FIRMWARE_IMAGES test images.
FIRMWARE_IMAGES=40
firmware_host_output() {
  local bin="$BUILD/ci-native/examples/firmware_host_reference"
  [[ -f "$BUILD/ci-native/build.ninja" ]] || configure_native
  cmake --build "$BUILD/ci-native" --target firmware_host_reference -- -j"$JOBS"
  mkdir -p "$BUILD/ci-cortex-m"
  "$bin" --model "$ROOT/weights/meanet_mcu.safetensors" --first 0 --count "$FIRMWARE_IMAGES" \
    > "$BUILD/ci-cortex-m/firmware_host.txt"
}
# cortex_m_firmware <name> <qemu toolchain file> <qemu machine>
cortex_m_firmware() {
  local core=$1 toolchain=$2 machine=$3
  local out="$BUILD/ci-cortex-m/$core" dir="$BUILD/ci-firmware-$core" rc=0
  mkdir -p "$out"
  cmake --fresh -S "$ROOT/examples/firmware" -B "$dir" "${CMAKE_GENERATOR_ARGS[@]}" \
    -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/toolchains/$toolchain" -DCMAKE_BUILD_TYPE=Release \
    -DEDGENN_FIRMWARE_IMAGES="$FIRMWARE_IMAGES" -DEDGENN_PYTHON="$PY"
  build "$dir"
  timeout --kill-after=10 300 qemu-system-arm -M "$machine" -nographic -semihosting-config enable=on,target=native \
    -icount shift=0,align=off,sleep=off -kernel "$dir/meanet_firmware.elf" > "$out/firmware.txt" || rc=$?
  [[ $rc -eq 0 ]] || { tail -5 "$out/firmware.txt"; fail "$core: the firmware exited with status $rc on $machine"; }
  "$PY" "$ROOT/examples/firmware/compare.py" --firmware "$out/firmware.txt" --host "$BUILD/ci-cortex-m/firmware_host.txt" \
    --label "firmware $core ($machine)" --json "$out/firmware_compare.json"
  "$PY" "$ROOT/examples/firmware/size_report.py" --elf "$dir/meanet_firmware.elf" --map "$dir/meanet_firmware.map" \
    --run "$out/firmware.txt" --json "$out/firmware_size.json"
  run_ctest "$dir" -R firmware_meanet_no_heap -V | grep -E '^[0-9]+: |tests passed|Passed|Failed'
}

stage_cortex_m() {
  cortex_m_core m4 cortex-m4.cmake "${CORTEX_M4_FLAGS[@]}"
  cortex_m_core m7 cortex-m7.cmake "${CORTEX_M7_FLAGS[@]}"
  "$PY" "$ROOT/examples/firmware/test_emit_header.py" "$ROOT/weights/meanet_mcu.safetensors"
  firmware_host_output
  cortex_m_firmware m4 cortex-m4.cmake mps2-an386
  cortex_m_firmware m7 cortex-m7.cmake mps2-an500
  cortex_m_firmware m55 cortex-m55.cmake mps3-an547
}

stage_install() {
  local from="$BUILD/ci-native" work
  if [[ ! -f "$from/build.ninja" ]]; then  # no native build yet: a configure-only tree installs the same headers
    from="$BUILD/ci-install"
    configure "$from" -DEDGENN_BUILD_TESTS=OFF -DEDGENN_BUILD_TOOLS=OFF -DEDGENN_BUILD_EXAMPLES=OFF
  else  # a native tree that was configured but not (fully) built would install missing programs
    cmake --build "$from" -j "$JOBS"
  fi
  work="$(mktemp -d "${TMPDIR:-/tmp}/edgenn-install.XXXXXX")"
  trap "rm -rf '$work'" EXIT
  cmake -DEDGENN_BUILD_DIR="$from" -DWORK_DIR="$work" -DGENERATOR=Ninja \
    -P "$ROOT/tests/consumer/run_consumer.cmake"
  note "installed $(find "$work/prefix" -type f | wc -l) files from $from; consumer built with find_package(edgenn)"
  run_ctest "$work/build"
}

stage_golden() {
  "$PY" -c 'import torch' 2>/dev/null || skip "$PY cannot import torch"
  "$PY" tools/gen_golden.py --check
  "$PY" tools/gen_golden_backward.py --check
  "$PY" tools/gen_golden_optim.py --check
}

stage_parity() {
  "$PY" -c 'import torch' 2>/dev/null || skip "$PY cannot import torch"
  "$PY" tools/manifest.py --check
  local eval_bin="$BUILD/ci-native/tools/edgenn-eval"
  if [[ ! -x "$eval_bin" ]]; then  # parity alone: build just the evaluator
    configure_native
    cmake --build "$BUILD/ci-native" --target edgenn-eval -- -j"$JOBS"
  fi
  "$PY" tools/parity_check.py --eval "$eval_bin" --threads "$JOBS"
}
# Tiled distributed training (include/edgenn/dist/, docs/tiled_training.md): the planner and
# simulator suites and the MPI exactness tests (ctest label dist) with OpenMPI from Debian.
# Runs in the native tree (built by the native stage; configured here when run alone).
stage_dist() {
  have mpiexec || fail "mpiexec not found (apt package openmpi-bin)"
  local dir="$BUILD/ci-native"
  [[ -f "$dir/build.ninja" ]] || configure_native
  grep -q 'test_dist_mpi' "$dir/build.ninja" || fail "CMake did not find MPI (libopenmpi-dev)"
  local targets=(test_dist_plan test_dist_mpi)
  # The example's loss-curve check (needs CLI11 and the Fashion-MNIST package).
  grep -q 'build examples/tiled_train:' "$dir/build.ninja" && targets+=(tiled_train)
  cmake --build "$dir" --target "${targets[@]}" -- -j"$JOBS"
  # mpirun refuses root without these (CI containers run as root).
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 run_ctest "$dir" -R '^dist' -j 1
}

# Deliberate kernel bugs (tools/mutants.py): each must make the kernel tests fail.
stage_mutants() {
  "$PY" tools/mutants.py --build "$BUILD/ci-mutants" --jobs "$JOBS"
}

# ---------------------------------------------------------------------------------------------
# Driver
usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
  echo "Stages, in order:"
  stage_help
}

NO_INSTALL=0
ONLY=""
SKIP=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --only) ONLY="${2:?--only needs a list of stages}"; shift 2 ;;
    --only=*) ONLY="${1#*=}"; shift ;;
    --skip) SKIP="${2:?--skip needs a list of stages}"; shift 2 ;;
    --skip=*) SKIP="${1#*=}"; shift ;;
    --no-install) NO_INSTALL=1; shift ;;
    --jobs|-j) JOBS="${2:?--jobs needs a number}"; shift 2 ;;
    --jobs=*) JOBS="${1#*=}"; shift ;;
    --list) stage_help; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "--jobs needs a positive number, not '$JOBS'" >&2; exit 2; }
for s in ${ONLY//,/ } ${SKIP//,/ }; do
  [[ " ${STAGES[*]} ${OPTIONAL_STAGES[*]} " == *" $s "* ]] ||
    { echo "unknown stage: $s (stages: ${STAGES[*]}; with --only also: ${OPTIONAL_STAGES[*]})" >&2; exit 2; }
done
selected=()
for s in "${STAGES[@]}" "${OPTIONAL_STAGES[@]}"; do
  if [[ -z "$ONLY" && " ${OPTIONAL_STAGES[*]} " == *" $s "* ]]; then continue; fi
  if [[ -n "$ONLY" && ",$ONLY," != *",$s,"* ]]; then continue; fi
  if [[ ",$SKIP," == *",$s,"* ]]; then continue; fi
  selected+=("$s")
done
[[ ${#selected[@]} -gt 0 ]] || { echo "no stage selected" >&2; exit 2; }

declare -A STATUS=() SECS=()
summary() {
  local s total=0
  echo
  echo "==================== tools/test.sh summary ===================="
  printf '  %-12s %-8s %9s\n' stage result "wall time"
  for s in "${selected[@]}"; do
    [[ -n "${STATUS[$s]:-}" ]] || continue
    printf '  %-12s %-8s %8.1fs\n' "$s" "${STATUS[$s]}" "${SECS[$s]}"
    total=$(awk -v a="$total" -v b="${SECS[$s]}" 'BEGIN { printf "%.1f", a + b }')
  done
  printf '  %-12s %-8s %8.1fs\n' total "" "$total"
}

run_stage() {
  local name=$1 fn="stage_${1//-/_}" t0 rc
  printf '\n==================== stage %s ====================\n' "$name"
  t0=$EPOCHREALTIME
  set +e
  (
    set -Eeuo pipefail
    trap 'rc=$?; echo "error: command failed (exit $rc): $BASH_COMMAND" >&2' ERR
    "$fn"
  )
  rc=$?
  set -e
  SECS[$name]=$(elapsed "$t0")
  case $rc in
    0) STATUS[$name]=ok ;;
    77) STATUS[$name]=skipped ;;
    *) STATUS[$name]=FAILED ;;
  esac
  printf -- '---- stage %s: %s in %.1f s\n' "$name" "${STATUS[$name]}" "${SECS[$name]}"
  if [[ $rc -ne 0 && $rc -ne 77 ]]; then
    summary
    echo "tools/test.sh: FAILED at stage '$name' (exit $rc)"
    exit 1
  fi
}

echo "edgenn tools/test.sh: stages ${selected[*]} (jobs $JOBS) in $ROOT"
for s in "${selected[@]}"; do
  run_stage "$s"
done
summary
echo "tools/test.sh: all selected stages passed"
