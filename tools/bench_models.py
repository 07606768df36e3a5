#!/usr/bin/python3
"""Model benchmark: every shipped weights file in the engine and in PyTorch 1.13, batch 1 and
64, 1 and 2 threads, measured in the same run; writes docs/results/models.{json,md}.

  /usr/bin/python3 tools/bench_models.py --engine build/bench/bench/bench_models weights/*.safetensors

PyTorch runs the reference architecture (tools/pyref/models.py) rebuilt from the file's
metadata, eval mode, torch.no_grad(), default NCHW layout, BN not folded (how a PyTorch user
runs it); values do not change the speed, so parameters stay at their initialisation.
Both sides: median time per call after warm-up, over at least --min-time seconds.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyref import models, safetensors_io, timing  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_seconds(fn, min_time):
    return timing.median_seconds(fn, min_time, warmup=3)


def torch_rows(path, batches, threads, min_time):
    _, meta = safetensors_io.read(path)
    info = json.loads(meta["edgenn.model"])
    arch, hp = info["arch"], info["hparams"]
    net = models.build(arch, hp).eval()
    name = os.path.basename(path)
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        for b in batches:
            x = torch.randn(b, 1, 28, 28)
            with torch.no_grad():
                if arch == "meanet":
                    if t != 1:
                        continue
                    s = median_seconds(lambda: net.main(x), min_time)
                    rows.append(dict(engine="pytorch", model=name, path="main", batch=b, threads=t, ms_per_batch=1e3 * s,
                                     images_per_s=b / s))
                    s = median_seconds(lambda: net(x), min_time)
                    rows.append(dict(engine="pytorch", model=name, path="main+extension", batch=b, threads=t,
                                     ms_per_batch=1e3 * s, images_per_s=b / s))
                else:
                    s = median_seconds(lambda: net(x), min_time)
                    rows.append(dict(engine="pytorch", model=name, path="full", batch=b, threads=t, ms_per_batch=1e3 * s,
                                     images_per_s=b / s))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--engine", required=True, help="the bench_models binary")
    ap.add_argument("--batch", default="1,64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--json", default=os.path.join(ROOT, "docs", "results", "models.json"))
    ap.add_argument("--md", default=os.path.join(ROOT, "docs", "results", "models.md"))
    a = ap.parse_args()
    batches = [int(v) for v in a.batch.split(",")]
    threads = [int(v) for v in a.threads.split(",")]

    rows = []
    for f in a.files:  # interleave engine and peer per model so load drifts hit both alike
        print(f"benchmarking {os.path.basename(f)} ...", file=sys.stderr, flush=True)
        out = subprocess.run([a.engine, "--batch", a.batch, "--threads", a.threads, "--min-time", str(a.min_time), f],
                             check=True, capture_output=True, text=True).stdout
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        rows += torch_rows(f, batches, threads, a.min_time)

    key = lambda r: (r["model"], r["path"], r["batch"], r["threads"])  # noqa: E731
    eng = {key(r): r for r in rows if r["engine"] == "edgenn"}
    pt = {key(r): r for r in rows if r["engine"] == "pytorch"}
    table = []
    for k in sorted(eng, key=lambda k: (k[0], k[1], k[3], k[2])):
        e, p = eng[k], pt.get(k)
        table.append(dict(model=k[0], path=k[1], batch=k[2], threads=k[3], threads_used=e.get("threads_used", k[3]),
                          edgenn_ms=e["ms_per_batch"], pytorch_ms=p["ms_per_batch"] if p else None,
                          speedup=(p["ms_per_batch"] / e["ms_per_batch"]) if p else None,
                          edgenn_img_s=e["images_per_s"]))
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    doc = dict(torch=torch.__version__, cpu=cpu, command=" ".join(sys.argv), rows=table, raw=rows)
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=1)
    lines = ["# Model benchmark: edgenn vs PyTorch " + torch.__version__, "",
             f"CPU: {cpu}. Median time per call; speedup = PyTorch time / edgenn time, both measured in the same run.",
             f"Command: `{' '.join(sys.argv)}`", "",
             "Batch 1 runs on one thread in edgenn at any thread count (no intra-op parallelism; threads split batches).",
             "MEANet paths are measured single-threaded (a device classifies one input at a time).", "",
             "| model | path | batch | threads | edgenn ms | PyTorch ms | speedup |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in table:
        pt_ms = f"{r['pytorch_ms']:.3f}" if r["pytorch_ms"] is not None else "—"
        sp = f"{r['speedup']:.2f}x" if r["speedup"] is not None else "—"
        lines.append(f"| {r['model']} | {r['path']} | {r['batch']} | {r['threads']} | {r['edgenn_ms']:.3f} | {pt_ms} | {sp} |")
    with open(a.md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
