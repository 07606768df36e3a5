#!/usr/bin/python3
"""Flash and RAM of the firmware example, split into C runtime, engine code, model and test data.

  size_report.py --elf meanet_firmware.elf --map meanet_firmware.map [--run qemu_output.txt] [--json out.json]

Reads the link map (every input section with its size and the object it came from) and
checks the sum against arm-none-eabi-size. The engine is header-only, so all engine code is
instantiated in the example's main.cpp object; the model's weight arrays and the test images
are recognised by their (mangled) names, the arena by its symbol (g_arena). The stack is the
high-water mark the firmware measured (`stack_bytes` in its output, with --run).

  flash = text + rodata (+ the .data load image)    RAM = data + bss (arena included) + stack
"""
import argparse
import json
import re
import subprocess
import sys

PARTS = ["C runtime (newlib, semihosting, startup)", "engine code (kernels, model, router)",
         "example code (main loop, printer, profiler, timing)", "model weights", "arena", "test images",
         "padding, merged strings"]
# The example's own functions in main.cpp (everything else instantiated there is the engine's).
EXAMPLE_CODE = re.compile(r"\.text\.startup\.main$|profile_|print_profile|print_floats|time_known_loop|SysTick_Handler"
                          r"|_ZN3out|_ZN5ticks|_ZN5stack")


def output_sections(objdump, elf):
    """{allocated output section: (kind, size)}: kind data (writable, loaded), bss (not loaded)
    or flash (read-only; split into text/rodata per input section)."""
    out = subprocess.run([objdump, "-h", elf], check=True, capture_output=True, text=True).stdout.splitlines()
    secs = {}
    for head, flags in zip(out, out[1:]):
        m = re.match(r"^\s*\d+\s+(\S+)\s+([0-9a-fA-F]+)\s", head)
        if not m or "ALLOC" not in flags:
            continue
        kind = "flash" if "READONLY" in flags else "data" if "LOAD" in flags else "bss"
        secs[m.group(1)] = (kind, int(m.group(2), 16))
    return secs


def parse_map(path):
    """[(output section, input section, size, object)] from the map's memory map part."""
    lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("Linker script and memory map"))
    entries, out_sec, pending = [], None, None
    full = re.compile(r"^ (\S+)\s+0x[0-9a-fA-F]+\s+0x([0-9a-fA-F]+)\s+(\S.*)$")
    cont = re.compile(r"^\s+0x[0-9a-fA-F]+\s+0x([0-9a-fA-F]+)\s+(\S.*)$")
    for line in lines[start + 1:]:
        if line.startswith(".") or (line and not line[0].isspace() and not line.startswith("LOAD")):
            out_sec = line.split()[0]
            pending = None
            continue
        m = full.match(line)
        if m:
            entries.append((out_sec, m.group(1), int(m.group(2), 16), m.group(3).strip()))
            pending = None
            continue
        if re.match(r"^ (\.\S+|COMMON)\s*$", line):
            pending = line.strip()
            continue
        m = cont.match(line)
        if m and pending:
            entries.append((out_sec, pending, int(m.group(1), 16), m.group(2).strip()))
            pending = None
    return entries


def classify(entry, secs):
    out_sec, in_sec, size, obj = entry
    if out_sec not in secs or size == 0:
        return None
    kind = secs[out_sec][0]
    if kind == "flash":
        kind = "rodata" if in_sec.startswith(".rodata") else "text"
    if obj.endswith("main.cpp.obj"):
        # Weight arrays only (code instantiated per layer is engine code).
        if kind == "rodata" and "12edgenn_model6layers" in in_sec and in_sec.endswith("6packedE"):
            part = "model weights"
        elif "11test_images" in in_sec:
            part = "test images"
        elif "g_arena" in in_sec:
            part = "arena"
        elif EXAMPLE_CODE.search(in_sec):
            part = "example code (main loop, printer, profiler, timing)"
        else:
            part = "engine code (kernels, model, router)"
    else:
        part = "C runtime (newlib, semihosting, startup)"
    return part, kind, size


def berkeley_size(size_tool, elf):
    out = subprocess.run([size_tool, elf], check=True, capture_output=True, text=True).stdout.splitlines()
    text, data, bss = (int(x) for x in out[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--elf", required=True)
    ap.add_argument("--map", required=True)
    ap.add_argument("--size", default="arm-none-eabi-size")
    ap.add_argument("--objdump", default="arm-none-eabi-objdump")
    ap.add_argument("--run", help="firmware output (for the measured stack)")
    ap.add_argument("--json")
    a = ap.parse_args()

    secs = output_sections(a.objdump, a.elf)
    parts = {name: {"text": 0, "rodata": 0, "data": 0, "bss": 0} for name in PARTS}
    counted = {}
    for e in parse_map(a.map):
        c = classify(e, secs)
        if c:
            part, kind, size = c
            parts[part][kind] += size
            counted[e[0]] = counted.get(e[0], 0) + size
    for name, (kind, size) in secs.items():  # fill between input sections, minus strings merged across objects
        pad = size - counted.get(name, 0)
        parts["padding, merged strings"]["rodata" if kind == "flash" else kind] += pad
    berk = berkeley_size(a.size, a.elf)
    tot = {k: sum(p[k] for p in parts.values()) for k in ("text", "rodata", "data", "bss")}
    ok = True
    # arm-none-eabi-size's text column is every allocated read-only section (code + rodata).
    if tot["text"] + tot["rodata"] != berk["text"] or tot["data"] != berk["data"] or tot["bss"] != berk["bss"]:
        print(f"warning: link map sums (text+rodata {tot['text'] + tot['rodata']}, data {tot['data']}, bss {tot['bss']}) "
              f"differ from arm-none-eabi-size {berk}")
    w = parts.get("model weights", {})
    if w.get("data", 0) or w.get("bss", 0):
        print("FAIL: model weights are in RAM sections (they must stay in flash)")
        ok = False
    if not w.get("rodata"):
        print("FAIL: no model weights found in .rodata")
        ok = False

    stack = None
    if a.run:
        m = re.search(r"stack_bytes (\d+)", open(a.run).read())
        stack = int(m.group(1)) if m else None

    order = PARTS
    print(f"size report: {a.elf} (arm-none-eabi-size: text {berk['text']}, data {berk['data']}, bss {berk['bss']})")
    print("| part | code (text) | rodata | data | bss |")
    print("|---|---:|---:|---:|---:|")
    for name in order:
        p = parts[name]
        if any(p.values()):
            print(f"| {name} | {p['text']} | {p['rodata']} | {p['data']} | {p['bss']} |")
    if stack is not None:
        print(f"| stack (measured high-water mark) | | | | {stack} |")

    def sums(names):
        ps = [parts[n] for n in names]
        flash = sum(p["text"] + p["rodata"] + p["data"] for p in ps)
        ram = sum(p["data"] + p["bss"] for p in ps)
        return flash, ram

    st = stack or 0
    f_eng, r_eng = sums(order[:3] + order[6:])
    f_mod, r_mod = sums(order[:5] + order[6:])
    f_eng_only, r_eng_only = sums(order[1:2])
    print("| total | flash (text + rodata + data image) | RAM (data + bss + stack) |")
    print("|---|---:|---:|")
    print(f"| engine code alone (no model, no C runtime, no example code) | {f_eng_only} | {r_eng_only} |")
    print(f"| C runtime + engine + example, no model | {f_eng} | {r_eng + st} |")
    print(f"| C runtime + engine + example + model (arena included) | {f_mod} | {r_mod + st} |")
    print(f"| whole firmware (+ {parts.get('test images', {}).get('rodata', 0)} bytes of test images) | "
          f"{berk['text'] + berk['data']} | {berk['data'] + berk['bss'] + st} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"parts": parts, "arm_none_eabi_size": berk, "stack_bytes": stack,
                       "flash": {"engine_code": f_eng_only, "runtime_engine": f_eng, "runtime_engine_model": f_mod},
                       "ram": {"runtime_engine": r_eng + st, "runtime_engine_model": r_mod + st}}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
