#!/bin/bash
# Emulated slow links (docs/tiled_training.md): every rank in one fresh network namespace, MPI
# over TCP on its loopback, the loopback limited by a token-bucket qdisc (tc tbf). Shows the
# automatic grouping changing with the link and the cost model against measurement.
# Needs root (unshare -n, tc). The kernel here has no sch_netem, so only bandwidth is limited
# (the latency is the TCP loopback's).
#
#   examples/tiled_training/measure_links.sh [build dir] [out dir]
set -euo pipefail
if [[ ${1:-} != --inner ]]; then
  export BUILD=$(cd "${1:-build}" && pwd)
  OUT=${2:-$BUILD/tiled_links}
  mkdir -p "$OUT"
  export OUT=$(cd "$OUT" && pwd)
fi
inner() {  # inner <rate or none> <name> args...: runs inside the namespace
  local rate=$1 name=$2; shift 2
  ip link set lo up
  [[ $rate == none ]] || tc qdisc add dev lo root tbf rate "$rate" burst 256kb latency 2s
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpiexec --oversubscribe -np 2 --mca btl tcp,self \
    --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo "$BUILD/examples/tiled_train" "$@" --quiet \
    --json "$OUT/$name.json"
}
if [[ ${1:-} == --inner ]]; then shift; inner "$@"; exit; fi
for rate in none 100mbit 20mbit; do
  for g in auto fused layer; do
    echo "== link $rate, group $g"
    unshare -n "$0" --inner "$rate" "fmnist-$rate-$g" --workload fmnist --size 112 --batch 4 --steps 4 \
      --tiles 1x2 --group "$g" | grep -E "groups|predicted|summary|cost model"
  done
done
