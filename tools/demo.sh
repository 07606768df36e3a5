#!/bin/bash
# tools/demo.sh: the MEANet edge–cloud system end to end on the Fashion-MNIST test set.
#
#   tools/demo.sh                 everything (run as root on a fresh Debian 12: installs what it needs)
#   tools/demo.sh --out DIR       where report.json, tradeoff.png and the logs go (default: build/demo)
#   tools/demo.sh --limit 1000    only the first N test images (a quick look)
#   tools/demo.sh --no-curve      no CURVE encryption on the cloud hop
#   tools/demo.sh --no-install    never call apt (fail if a package is missing)
#
# Steps: apt packages -> Release build of the three programs -> CURVE keys for the server
# and this edge -> edgenn-cloud on loopback with the cloud model -> edgenn-demo runs the edge
# over the 10k test images with the shipped, calibrated MEANet weights -> the server is
# stopped with SIGTERM (it answers what it accepted) -> the trade-off plot is drawn.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT="$ROOT/build/demo"
LIMIT=0
CURVE=1
NO_INSTALL=0
EDGE_WEIGHTS="$ROOT/weights/meanet_resnet20.safetensors"
CLOUD_WEIGHTS="$ROOT/weights/cloud_resnet20x2.safetensors"
PY=/usr/bin/python3
DATA=/usr/share/datasets/fashion-mnist

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="$(realpath -m "$2")"; shift 2 ;;
    --limit) LIMIT="$2"; shift 2 ;;
    --no-curve) CURVE=0; shift ;;
    --no-install) NO_INSTALL=1; shift ;;
    --edge) EDGE_WEIGHTS="$(realpath -m "$2")"; shift 2 ;;
    --cloud) CLOUD_WEIGHTS="$(realpath -m "$2")"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'demo.sh: error: %s\n' "$*" >&2; exit 1; }

# ---- 1. packages
PACKAGES=(build-essential g++ cmake ninja-build pkg-config libxsimd-dev nlohmann-json3-dev libcli11-dev
  zlib1g-dev libzmq3-dev cppzmq-dev libsodium-dev libstb-dev python3 python3-numpy python3-matplotlib
  dataset-fashion-mnist)
step "checking packages"
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  [[ $NO_INSTALL -eq 0 ]] || fail "--no-install, but these packages are missing: ${missing[*]}"
  echo "installing: ${missing[*]}"
  SUDO=(); [[ $(id -u) -eq 0 ]] || SUDO=(sudo)
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "all ${#PACKAGES[@]} packages present"
fi
for f in "$EDGE_WEIGHTS" "$CLOUD_WEIGHTS" "$DATA/t10k-images-idx3-ubyte.gz"; do
  [[ -f "$f" ]] || fail "missing $f"
done

# ---- 2. build
BUILD="$ROOT/build/demo-build"
step "building edgenn-cloud, edgenn-keygen, edgenn-demo (Release, -march=native) in $BUILD"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DEDGENN_NATIVE=ON \
  -DEDGENN_BUILD_TESTS=OFF -DEDGENN_BUILD_EXAMPLES=OFF -DEDGENN_BUILD_BENCH=OFF >"$BUILD.configure.log" 2>&1 ||
  { cat "$BUILD.configure.log"; fail "cmake configure failed"; }
cmake --build "$BUILD" --target edgenn-cloud edgenn-keygen edgenn-demo -- -j"$(nproc)"
BIN="$BUILD/tools"

# ---- 3. keys and the cloud server
mkdir -p "$OUT"
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ENDPOINT="tcp://127.0.0.1:$PORT"
SERVER_ARGS=(--model "$CLOUD_WEIGHTS" --bind "$ENDPOINT" --workers 2 --max-batch 16 --max-wait-ms 2 --stats-interval 0)
CLIENT_ARGS=()
if [[ $CURVE -eq 1 ]]; then
  step "CURVE keys (server + this edge; only the edge's key is authorised) in $OUT/keys"
  mkdir -p "$OUT/keys"
  "$BIN/edgenn-keygen" --force "$OUT/keys/server" >/dev/null
  "$BIN/edgenn-keygen" --force "$OUT/keys/edge" >/dev/null
  grep -v '^#' "$OUT/keys/edge.pub" >"$OUT/keys/authorized_clients.txt"
  SERVER_ARGS+=(--curve-secret-key "$OUT/keys/server.key" --authorized-keys "$OUT/keys/authorized_clients.txt")
  CLIENT_ARGS+=(--server-key "$OUT/keys/server.pub" --client-key "$OUT/keys/edge.key")
fi

step "starting the cloud server on $ENDPOINT (log: $OUT/cloud.log)"
"$BIN/edgenn-cloud" "${SERVER_ARGS[@]}" >"$OUT/cloud.log" 2>&1 &
SERVER_PID=$!
stop_server() {
  if [[ -n "${SERVER_PID:-}" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
}
trap stop_server EXIT
for _ in $(seq 100); do
  grep -q "listening on" "$OUT/cloud.log" && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$OUT/cloud.log"; fail "the cloud server exited at start"; }
  sleep 0.1
done
grep -q "listening on" "$OUT/cloud.log" || { cat "$OUT/cloud.log"; fail "the cloud server did not start"; }
sed 's/^/    /' "$OUT/cloud.log"

# ---- 4. the edge
step "running the edge over the Fashion-MNIST test set"
"$BIN/edgenn-demo" --edge "$EDGE_WEIGHTS" --cloud-model "$CLOUD_WEIGHTS" --endpoint "$ENDPOINT" "${CLIENT_ARGS[@]}" \
  --data "$DATA" --limit "$LIMIT" --energy "$ROOT/tools/energy_model.json" --out "$OUT/report.json"

# ---- 5. stop the server (SIGTERM: it answers what it accepted, then exits 0)
step "stopping the cloud server (SIGTERM)"
kill -TERM "$SERVER_PID"
status=0
wait "$SERVER_PID" || status=$?
SERVER_PID=
tail -n 2 "$OUT/cloud.log" | sed 's/^/    /'
[[ $status -eq 0 ]] || fail "the cloud server exited with status $status (log: $OUT/cloud.log)"

# ---- 6. the plot
step "plotting the trade-off curve"
"$PY" "$ROOT/tools/plot_tradeoff.py" "$OUT/report.json" --out "$OUT/tradeoff.png"

printf '\nDone. Report: %s/report.json  Plot: %s/tradeoff.png  Server log: %s/cloud.log\n' "$OUT" "$OUT" "$OUT"
