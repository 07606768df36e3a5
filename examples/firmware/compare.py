#!/usr/bin/python3
"""Compare the firmware's output with the host reference, and report instructions per inference.

  compare.py --firmware qemu_output.txt --host host_output.txt [--tolerance 1e-4] [--json out.json]

Passes (exit 0) when the firmware printed `status ok`, both outputs cover the same images,
and every image has the same exit (main / extension / cloud), the same class, the same set
of logits (extension logits only where the extension ran) and every logit within the
tolerance (absolute) of the host's.

Instruction counts: the firmware times each inference with SysTick and also times a loop of
a known number of instructions (`calibration` line); under qemu's `-icount` the virtual clock
advances a fixed amount per instruction, so ticks * (loop instructions / loop ticks) is the
number of instructions executed. Printed per path (main exit, extension) and per block of
the model with MACs/instruction.
"""
import argparse
import json
import re
import sys

LINE = re.compile(r"^image (\d+) index (\d+) label (\d+) exit (\w+) class (-?\d+) ticks (\d+) main (.+?)(?: ext (.+))?$")


def parse(path):
    images, info = {}, {"profile": []}
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.strip()
        m = LINE.match(line)
        if m:
            images[int(m.group(1))] = {
                "index": int(m.group(2)), "label": int(m.group(3)), "exit": m.group(4), "cls": int(m.group(5)),
                "ticks": int(m.group(6)), "main": [float(v) for v in m.group(7).split()],
                "ext": [float(v) for v in m.group(8).split()] if m.group(8) else None}
        elif line.startswith("edgenn-firmware "):
            f = line.split()[1:]
            info["header"] = dict(zip(f[0::2], f[1::2]))
        elif line.startswith("calibration "):
            f = line.split()
            info["loop_instructions"], info["loop_ticks"] = int(f[2]), int(f[4])
        elif line.startswith("profile "):
            f = line.split()
            kv = dict(zip(f[2::2], f[3::2]))
            what = (f"conv {kv['kernel']}x{kv['kernel']}/{kv['stride']}" if kv["kernel"] != "block" else "block") + \
                f" {kv['in']} -> {kv['cout']}"
            info["profile"].append((f[1], what, int(kv["macs"]), int(kv["ticks"])))
        elif line.startswith("status "):
            info["status"] = line.split()[1]
        elif line.startswith("summary "):
            info["summary"] = line
    return images, info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--firmware", required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--label", default="firmware")
    ap.add_argument("--json")
    a = ap.parse_args()
    fw, fi = parse(a.firmware)
    host, hi = parse(a.host)
    errors = []
    if fi.get("status") != "ok":
        errors.append(f"the firmware did not finish with 'status ok' (status: {fi.get('status')})")
    if not fw:
        errors.append("the firmware printed no image lines")
    if sorted(fw) != sorted(host):
        errors.append(f"different images: firmware {len(fw)}, host {len(host)}")
    max_diff = 0.0
    for i in sorted(set(fw) & set(host)):
        f, h = fw[i], host[i]
        for key in ("index", "label", "exit", "cls"):
            if f[key] != h[key]:
                errors.append(f"image {i}: {key} firmware {f[key]} != host {h[key]}")
        for key in ("main", "ext"):
            if (f[key] is None) != (h[key] is None) or (f[key] and len(f[key]) != len(h[key])):
                errors.append(f"image {i}: {key} logits present/length differ")
                continue
            for j, (x, y) in enumerate(zip(f[key] or [], h[key] or [])):
                d = abs(x - y)
                max_diff = max(max_diff, d)
                if not d <= a.tolerance:
                    errors.append(f"image {i}: {key} logit {j}: firmware {x!r}, host {y!r} (|diff| {d:.3g})")

    m = re.search(r"arena_peak (\d+) arena_bytes (\d+)", fi.get("summary", ""))
    if not m or m.group(1) != m.group(2):
        errors.append("the arena the runs used differs from the model's constexpr arena_bytes: "
                      + (f"{m.group(1)} != {m.group(2)}" if m else "no summary line"))
    n = len(fw)
    exits = {e: sum(1 for v in fw.values() if v["exit"] == e) for e in ("main", "extension", "cloud")}
    correct = sum(1 for v in fw.values() if v["cls"] == v["label"])
    print(f"{a.label}: {n} images, exits main {exits['main']} / extension {exits['extension']} / cloud {exits['cloud']}, "
          f"edge answer correct {correct}/{n}; vs host: same exits and classes on "
          f"{sum(1 for i in fw if i in host and fw[i]['exit'] == host[i]['exit'] and fw[i]['cls'] == host[i]['cls'])}/{n}, "
          f"max |logit diff| {max_diff:.3g} (tolerance {a.tolerance:g})")

    report = {"images": n, "exits": exits, "correct": correct, "max_logit_diff": max_diff}
    if fi.get("loop_ticks"):
        ipt = fi["loop_instructions"] / fi["loop_ticks"]
        hdr = fi.get("header", {})
        main_macs, ext_macs = int(hdr.get("main_macs", 0)), int(hdr.get("extension_macs", 0))

        def insns(sel):
            t = [v["ticks"] for v in fw.values() if sel(v)]
            return sum(t) / len(t) * ipt if t else None

        main_only = insns(lambda v: v["ext"] is None)
        with_ext = insns(lambda v: v["ext"] is not None)
        print(f"instructions ({ipt:g} per tick from a {fi['loop_instructions']}-instruction loop):")
        print("| path | MACs | instructions / inference | MACs / instruction |")
        print("|---|---:|---:|---:|")
        if main_only:
            print(f"| main block + router (exit at main or cloud) | {main_macs} | {main_only:.0f} | {main_macs / main_only:.3f} |")
        if with_ext:
            tot = main_macs + ext_macs
            print(f"| main + adaptive + extension | {tot} | {with_ext:.0f} | {tot / with_ext:.3f} |")
        print("| block / kernel | layer | MACs | instructions | MACs / instruction |")
        print("|---|---|---:|---:|---:|")
        prof = []
        for name, what, macs, ticks in fi["profile"]:
            ins = ticks * ipt
            prof.append({"name": name, "layer": what, "macs": macs, "instructions": ins})
            print(f"| {name} | {what} | {macs} | {ins:.0f} | {macs / ins:.3f} |")
        report.update({"instructions_per_tick": ipt, "main_path_instructions": main_only,
                       "extension_path_instructions": with_ext, "main_macs": main_macs, "extension_macs": ext_macs,
                       "profile": prof})
    if fi.get("summary"):
        print(fi["summary"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    for e in errors[:20]:
        print("FAIL " + e)
    if len(errors) > 20:
        print(f"FAIL ... and {len(errors) - 20} more")
    print(f"{a.label} vs host: " + ("ok" if not errors else "FAILED"))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
