#!/usr/bin/env python3
"""Turn bench_kernels' Google Benchmark JSON into docs/results/kernels.{json,md}.

One row per layer and batch: our GFLOP/s beside XNNPACK's and oneDNN's, the ratios
ours/XNNPACK and ours/oneDNN, then per kernel family the median and minimum ratio, and the
peak single-core FMA rate measured by the same binary. The Markdown table also goes to
stdout. Standard library only.

Each benchmark ran several repetitions; a row's value is the best repetition (the minimum
time: on a shared machine noise only ever adds time) unless --stat median is given.
"""
import argparse
import json
import os
import statistics
import sys

LIBS = ("ours", "xnnpack", "onednn")
FAMILIES = ("conv3x3", "conv1x1", "depthwise", "fc", "gap", "maxpool", "add", "softmax")
LIB_TITLES = {"ours": "ours", "xnnpack": "XNNPACK", "onednn": "oneDNN"}
# Families the issue sets targets for, and the targets (ours/XNNPACK at batch 1).
TARGET_FAMILIES = ("conv3x3", "conv1x1", "depthwise")
TARGET_MEDIAN = 1.0
TARGET_MIN = 0.7


def parse_name(name):
    """family/model/shape/n<batch>/lib[/process_time|/real_time] -> tuple, or None."""
    parts = name.split("/")
    while parts and parts[-1] in ("process_time", "real_time", "manual_time"):
        parts.pop()
    if len(parts) != 5 or not parts[3].startswith("n"):
        return None
    family, model, shape, batch, lib = parts
    return family, model, shape, int(batch[1:]), lib


def collect(raw, stat):
    """Group the per-repetition entries; returns (rows, peak, errors)."""
    samples = {}  # (family, model, shape, batch) -> lib -> [gflops]
    labels = {}
    index = {}  # row -> position in the binary's layer list
    peak = []
    peak_label = ""
    errors = []
    for b in raw.get("benchmarks", []):
        if b.get("run_type") != "iteration":
            continue  # our own statistics come from the repetitions
        name = b.get("run_name", b.get("name", ""))
        if b.get("error_occurred"):
            errors.append((name, b.get("error_message", "")))
            continue
        gflops = b.get("GFLOPS")
        if gflops is None:
            continue
        if name.startswith("peak/fma"):
            peak.append(gflops)
            peak_label = b.get("label", "")
            continue
        key = parse_name(name)
        if key is None:
            continue
        row = key[:4]
        samples.setdefault(row, {})
        index[row] = b.get("layer_index", len(index))
        samples[row].setdefault(key[4], []).append(gflops)
        if b.get("label"):
            labels[(row, key[4])] = b["label"]

    pick = max if stat == "best" else statistics.median
    # The binary's layer order (grouped by family), batch 1 before batch 64.
    fam_order = {f: i for i, f in enumerate(FAMILIES)}
    order = sorted(samples, key=lambda r: (fam_order.get(r[0], len(FAMILIES)), r[3], index[r]))
    rows = []
    for row in order:
        family, model, shape, batch = row
        r = {"family": family, "model": model, "layer": shape, "batch": batch, "repetitions": {}, "spread": {}}
        for lib in LIBS:
            vals = samples[row].get(lib)
            r[lib] = round(pick(vals), 3) if vals else None
            r["repetitions"][lib] = len(vals) if vals else 0
            # All statistics for whoever reads the JSON: min, median and max over repetitions.
            r["spread"][lib] = [round(min(vals), 3), round(statistics.median(vals), 3),
                                round(max(vals), 3)] if vals else None
        r["ours_vs_xnnpack"] = ratio(r["ours"], r["xnnpack"])
        r["ours_vs_onednn"] = ratio(r["ours"], r["onednn"])
        if (row, "onednn") in labels:
            r["onednn_impl"] = labels[(row, "onednn")]
        rows.append(r)
    peak_value = {"gflops": round(pick(peak), 2), "simd": peak_label} if peak else None
    return rows, peak_value, errors


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def summarize(rows):
    """Median and minimum ratio per family and batch."""
    out = []
    keys = []
    for r in rows:
        k = (r["family"], r["batch"])
        if k not in keys:
            keys.append(k)
    for family, batch in keys:
        sel = [r for r in rows if r["family"] == family and r["batch"] == batch]
        s = {"family": family, "batch": batch, "layers": len(sel)}
        for peer in ("xnnpack", "onednn"):
            vals = [(r["ours_vs_" + peer], r) for r in sel if r["ours_vs_" + peer] is not None]
            if vals:
                lo = min(vals, key=lambda v: v[0])
                s["median_vs_" + peer] = round(statistics.median(v for v, _ in vals), 3)
                s["min_vs_" + peer] = lo[0]
                s["min_vs_" + peer + "_layer"] = "%s %s" % (lo[1]["model"], lo[1]["layer"])
            else:
                s["median_vs_" + peer] = s["min_vs_" + peer] = None
        out.append(s)
    return out


def targets(summary, rows):
    """The issue's targets: per family at batch 1, median >= 1.0x XNNPACK; no layer < 0.7x."""
    res = []
    for fam in TARGET_FAMILIES:
        s = next((s for s in summary if s["family"] == fam and s["batch"] == 1), None)
        med = s["median_vs_xnnpack"] if s else None
        res.append({"what": "%s median ours/XNNPACK at batch 1 >= %.1f" % (fam, TARGET_MEDIAN), "value": med,
                    "met": None if med is None else med >= TARGET_MEDIAN})
    conv = [r for r in rows if r["family"] in TARGET_FAMILIES and r["ours_vs_xnnpack"] is not None]
    if conv:
        lo = min(conv, key=lambda r: r["ours_vs_xnnpack"])
        res.append({"what": "no conv/depthwise layer below %.1fx XNNPACK (any batch)" % TARGET_MIN,
                    "value": lo["ours_vs_xnnpack"],
                    "layer": "%s %s %s n%d" % (lo["family"], lo["model"], lo["layer"], lo["batch"]),
                    "met": lo["ours_vs_xnnpack"] >= TARGET_MIN,
                    "below": sum(1 for r in conv if r["ours_vs_xnnpack"] < TARGET_MIN)})
    return res


def fmt(v, digits=1):
    return "—" if v is None else ("%.*f" % (digits, v))


def fmt_ratio(v):
    return "—" if v is None else "%.2fx" % v


def markdown(doc):
    rows, summary, peak = doc["rows"], doc["summary"], doc["peak_fma"]
    out = ["# Kernel benchmarks: ours vs XNNPACK vs oneDNN", ""]
    ctx = doc["context"]
    out.append("Single-threaded, GFLOP/s (2 x multiply-accumulates per second; for pooling, add and softmax "
               "one op per element and window tap, 4 per softmax element). %s of %d repetitions, process "
               "CPU time. Generated by `tools/bench.sh kernels` on %s." %
               ("Best" if doc["statistic"] == "best" else "Median", doc["repetitions"], ctx.get("date", "?")))
    out.append("")
    machine = "%s CPUs at %s MHz" % (ctx.get("num_cpus", "?"), ctx.get("mhz_per_cpu", "?"))
    out.append("- Machine: %s; load average at start %s." % (
        machine, ", ".join("%.2f" % x for x in ctx.get("load_avg", [])) or "?"))
    peers = ctx.get("peers", "").split()
    line = "- Ours: SIMD %s. Peers built in: %s" % (ctx.get("edgenn_simd", "?"), ", ".join(peers) or "none")
    if "xnnpack" in peers:
        line += "; XNNPACK 2022 operator API, null threadpool"
    if "onednn" in peers:
        line += "; oneDNN %s, %s thread(s)" % (ctx.get("onednn", "?"), ctx.get("onednn_threads", "?"))
    out.append(line + ".")
    if peak:
        out.append("- **Peak single-core FMA: %.1f GFLOP/s** (%s, register-only FMA loop, same binary)." %
                   (peak["gflops"], peak["simd"]))
    out.append("")

    out.append("## Summary (ratio = ours / peer GFLOP/s; > 1 means we are faster)")
    out.append("")
    out.append("| family | batch | layers | median vs XNNPACK | min vs XNNPACK (layer) | median vs oneDNN "
               "| min vs oneDNN (layer) |")
    out.append("|---|---:|---:|---:|---|---:|---|")
    for s in summary:
        out.append("| %s | %d | %d | %s | %s (%s) | %s | %s (%s) |" % (
            s["family"], s["batch"], s["layers"], fmt_ratio(s["median_vs_xnnpack"]),
            fmt_ratio(s["min_vs_xnnpack"]), s.get("min_vs_xnnpack_layer", "—"), fmt_ratio(s["median_vs_onednn"]),
            fmt_ratio(s["min_vs_onednn"]), s.get("min_vs_onednn_layer", "—")))
    out.append("")
    out.append("Targets (issue): ")
    out.append("")
    for t in doc["targets"]:
        extra = (" — worst: %s; %d layer rows below" % (t["layer"], t["below"])) if "layer" in t else ""
        verdict = "not measured" if t["met"] is None else "met" if t["met"] else "NOT met"
        out.append("- %s: **%s** → %s%s" % (t["what"], fmt_ratio(t["value"]), verdict, extra))
    out.append("")

    out.append("## All layers")
    out.append("")
    out.append("| family | model | layer | batch | ours | XNNPACK | oneDNN | ours/XNNPACK | ours/oneDNN "
               "| ours % of peak |")
    out.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        pct = "%.0f%%" % (100.0 * r["ours"] / peak["gflops"]) if peak and r["ours"] is not None else "—"
        out.append("| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s |" % (
            r["family"], r["model"], r["layer"], r["batch"], fmt(r["ours"]), fmt(r["xnnpack"]), fmt(r["onednn"]),
            fmt_ratio(r["ours_vs_xnnpack"]), fmt_ratio(r["ours_vs_onednn"]), pct))
    out.append("")
    out.append("Layer names: conv `HxWxCin-CoutsS` (3x3 convs pad 1, 1x1 pad 0), depthwise 3x3 `HxWxCsS`, "
               "max pool `HxWxCkKsSpP`, fc `in-out`, softmax `classes`. Models: rn20@28/@32 = ResNet-20/32 "
               "(CIFAR style) at 28x28 (1-channel stem) / 32x32 (3-channel stem), mbv2x0.5@28 = our "
               "MobileNetV2 x0.5 at 28x28, mbv2@224 / rn18@224 = ImageNet MobileNetV2 / ResNet-18. "
               "oneDNN's implementations skip the taps that fall into the zero padding, so at small spatial "
               "sizes its nominal GFLOP/s can exceed the FMA peak.")
    out.append("")
    out.append("## Method")
    out.append("")
    out.append("- One binary (`bench/bench_kernels`, built `-O3 -march=native`) runs every library on the same "
               "inputs and weights, NHWC activations, fp32, bias, no fused activation. A start-up check "
               "compares every peer's output with ours on each layer (batch 1 or 2).")
    out.append("- Outside the timed loop, for every library alike: weight packing (ours), operator creation and "
               "setup with its indirection buffers (XNNPACK), primitive creation and the reorder of the weights "
               "into the format oneDNN picks (`format_tag::any`), user scratchpad. The loop times the run only.")
    out.append("- Google Benchmark with `--benchmark_enable_random_interleaving` (repetitions of all rows "
               "interleaved, so slow phases of a shared machine hit every library alike) and process CPU time "
               "(time the process was descheduled does not count; any helper thread would). A row's value is "
               "the %s of its repetitions." % ("best (minimum time)" if doc["statistic"] == "best" else "median"))
    out.append("- Batch 64 runs for layers with inputs up to 32x32 unless `EDGENN_BENCH_BATCH64=all`.")
    if doc["errors"]:
        out.append("")
        out.append("Errors:")
        for name, msg in doc["errors"]:
            out.append("- `%s`: %s" % (name, msg))
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("raw", help="Google Benchmark JSON output of bench_kernels")
    ap.add_argument("--json", default="docs/results/kernels.json", help="summary JSON to write")
    ap.add_argument("--md", default="docs/results/kernels.md", help="Markdown report to write")
    ap.add_argument("--stat", choices=("best", "median"), default="best",
                    help="value of a row from its repetitions (default: best = minimum time)")
    args = ap.parse_args()

    with open(args.raw) as f:
        raw = json.load(f)
    rows, peak, errors = collect(raw, args.stat)
    if not rows:
        sys.exit("bench_report: no kernel benchmark rows in %s" % args.raw)
    summary = summarize(rows)
    reps = max((max(r["repetitions"].values()) for r in rows), default=0)
    context = {k: v for k, v in raw.get("context", {}).items() if k not in ("caches", "library_build_type")}
    doc = {
        "schema": "edgenn-bench-kernels/1",
        "statistic": args.stat,
        "repetitions": reps,
        "unit": "GFLOP/s",
        "context": context,
        "peak_fma": peak,
        "summary": summary,
        "targets": targets(summary, rows),
        "rows": rows,
        "errors": errors,
    }
    md = markdown(doc)
    for path in (args.json, args.md):
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    with open(args.md, "w") as f:
        f.write(md)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
