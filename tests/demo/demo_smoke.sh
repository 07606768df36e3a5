#!/bin/bash
# The demo's programs end to end on a slice of the test set: edgenn-cloud (CURVE on, loopback,
# the shipped main block standing in for the cloud model), edgenn-demo over 300 test images
# with the shipped MEANet weights, SIGTERM drain; then the report is checked for consistency
# (accuracies recomputed from counts, exits summing to 1, every cloud-routed input answered
# by the cloud, server log shows a clean stop). Then the cloud is stopped and an edge run
# must finish with every cloud-routed input answered by the edge, flagged as fallback.
#   demo_smoke.sh BIN_DIR SOURCE_DIR WORK_DIR
set -euo pipefail
BIN=$1 SRC=$2 WORK=$3
rm -rf "$WORK" && mkdir -p "$WORK"
EDGE=$WORK/meanet.safetensors
CLOUD=$SRC/weights/resnet20_main.safetensors
# A fixed cloud threshold (0.5 nats: a few % of inputs) so the cloud hop is exercised whatever the shipped thresholds.
"$BIN/edgenn-calibrate" --edge "$SRC/weights/meanet_resnet20.safetensors" --cloud "$CLOUD" --out "$EDGE" \
  --threshold 0.5 --threads 2 >"$WORK/calibrate.log"
"$BIN/edgenn-keygen" "$WORK/server" >/dev/null
"$BIN/edgenn-keygen" "$WORK/edge" >/dev/null
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/edgenn-cloud" --model "$CLOUD" --bind "tcp://127.0.0.1:$PORT" --workers 2 --stats-interval 0 \
  --curve-secret-key "$WORK/server.key" --authorized-keys "$WORK/edge.pub" >"$WORK/cloud.log" 2>&1 &
PID=$!
trap 'kill -9 $PID 2>/dev/null || true' EXIT
run_edge() {  # run_edge OUT.json
  "$BIN/edgenn-demo" --edge "$EDGE" --cloud-model "$CLOUD" --endpoint "tcp://127.0.0.1:$PORT" \
    --server-key "$WORK/server.pub" --client-key "$WORK/edge.key" --limit 300 --timeout-ms 300 --retries 0 \
    --energy "$SRC/tools/energy_model.json" --out "$1"
}
run_edge "$WORK/report.json" >"$WORK/demo.log"
kill -TERM $PID
wait $PID
grep -q "stopped\." "$WORK/cloud.log" || { cat "$WORK/cloud.log"; echo "server did not stop cleanly"; exit 1; }
run_edge "$WORK/report_no_cloud.json" >"$WORK/demo_no_cloud.log"
/usr/bin/python3 - "$WORK/report.json" "$WORK/report_no_cloud.json" <<'PY'
import json, sys
r, nc = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
for rep, cloud_up in ((r, True), (nc, False)):
    live, ex = rep["live_run"], rep["live_run"]["exits"]
    assert rep["test_images"] == 300 and live["inputs"] == 300, rep["test_images"]
    counts = [ex[e]["count"] for e in ("main", "extension", "cloud")]
    assert sum(counts) == 300, counts
    correct = sum(round(ex[e]["accuracy"] * ex[e]["count"]) for e in ex)
    assert abs(correct / 300 - live["accuracy"]) < 1e-9, (correct, live["accuracy"])
    assert ex["cloud"]["count"] > 0, "T = 0.5 nats: some inputs must go to the cloud"
    if cloud_up:
        assert live["cloud_fallbacks"] == 0, live["fallback_reasons"]
        assert live["bytes_sent_total"] == ex["cloud"]["count"] * 832, live["bytes_sent_total"]
        assert 0.85 < rep["accuracy"]["cloud_alone"] <= 1.0
    else:
        assert live["cloud_fallbacks"] == ex["cloud"]["count"], live["cloud_fallbacks"]
        assert all("timeout" in k for k in live["fallback_reasons"]), live["fallback_reasons"]
    acc = rep["accuracy"]
    assert 0.85 < acc["main_alone"] <= 1 and 0.85 < acc["meanet_edge"] <= 1, acc
    assert rep["macs"]["edge_mean_per_input"] >= rep["macs"]["main"], rep["macs"]
    assert len(rep["tradeoff_curve_test"]) > 2
print("demo smoke: ok; with cloud", r["accuracy"], r["live_run"]["exits"]["cloud"]["count"], "sent;",
      "without cloud", nc["live_run"]["cloud_fallbacks"], "fallbacks")
PY
