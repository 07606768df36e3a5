#!/usr/bin/env python3
"""No heap and no exception runtime from the engine on bare metal.

  check_heap.py --nm arm-none-eabi-nm --map prog.map [--elf prog.elf] OBJECT...

1. The program's own objects (the engine instantiations, main, startup) must not reference
   heap functions (malloc/free/new/delete and friends) nor the C++ exception/RTTI runtime:
   checked on their undefined symbols (nm -u).
2. The link map tells which archive member pulled each library member in. If heap code is in
   the final program anyway, the chain that pulled it in is printed; it must start in the C
   library's startup (newlib's rdimon-crt0 sets up stdio, which allocates), never in one of
   the program's objects.
Exit status 0 when both hold.
"""
import argparse
import os
import re
import subprocess
import sys

HEAP = re.compile(r"^_?(malloc|free|calloc|realloc|memalign|posix_memalign|aligned_alloc|valloc|pvalloc)(_r)?$"
                  r"|^_Zn[wa]|^_Zd[la]")
EXCEPTIONS = re.compile(r"^__cxa_(allocate_exception|throw|rethrow|begin_catch|end_catch|guard_acquire|pure_virtual)$"
                        r"|^__gxx_personality|^_Unwind_|^__aeabi_unwind_cpp_pr|^_ZTI|^__dynamic_cast$")


def undefined(nm, obj):
    out = subprocess.run([nm, "-u", obj], check=True, capture_output=True, text=True).stdout
    return [line.split()[-1] for line in out.splitlines() if line.strip()]


def archive_members(map_path):
    """{member: (referrer, symbol)} from the map's 'Archive member included' section."""
    with open(map_path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.startswith("Archive member included"))
    except StopIteration:
        return {}
    pairs, member = {}, None
    ref = re.compile(r"^(\S+) \(([^()\s]+)\)$")
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        if not line[0].isspace():
            if line.startswith(("Discarded input sections", "Allocating common", "Memory Configuration")):
                break
            parts = line.split(None, 1)
            member = parts[0]
            if len(parts) == 2 and ref.match(parts[1].strip()):  # short member name: one line
                m = ref.match(parts[1].strip())
                pairs[member] = (m.group(1), m.group(2))
                member = None
        elif member:
            m = ref.match(line.strip())
            if m:
                pairs[member] = (m.group(1), m.group(2))
            member = None
    return pairs


def short(path):
    m = re.match(r"^(.*/)?([^/]+\.a)\((.*)\)$", path)
    return f"{m.group(2)}({m.group(3)})" if m else os.path.basename(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nm", default="arm-none-eabi-nm")
    ap.add_argument("--map", required=True)
    ap.add_argument("--elf")
    ap.add_argument("objects", nargs="+")
    a = ap.parse_args()
    a.objects = [o for arg in a.objects for o in arg.split(";") if o]  # CMake passes one ;-list
    ok = True

    for obj in a.objects:
        und = undefined(a.nm, obj)
        bad = [s for s in und if HEAP.search(s) or EXCEPTIONS.search(s)]
        print(f"{os.path.basename(obj)}: needs {', '.join(und) if und else 'nothing'}")
        if bad:
            ok = False
            print(f"  FAIL: heap / exception runtime referenced: {', '.join(bad)}")

    pairs = archive_members(a.map)
    own = {os.path.realpath(o) for o in a.objects}
    heap_members = [(m, r, s) for m, (r, s) in pairs.items() if HEAP.search(s)]
    if not heap_members:
        print("heap: no allocator linked in")
    for member, referrer, symbol in heap_members:
        chain = [f"{short(member)} [{symbol}]"]
        cur, seen = referrer, set()
        while cur in pairs and cur not in seen:
            seen.add(cur)
            r, s = pairs[cur]
            chain.append(f"{short(cur)} [{s}]")
            cur = r
        chain.append(short(cur))
        root_is_program = os.path.realpath(cur) in own
        print("heap: " + " <- ".join(chain))
        if root_is_program:
            ok = False
            print("  FAIL: the program's own code pulls the allocator in")
        else:
            print(f"  (pulled in by the C library's startup {short(cur)}, not by the engine)")
    if a.elf:
        syms = subprocess.run([a.nm, a.elf], check=True, capture_output=True, text=True).stdout.split("\n")
        names = sorted({l.split()[-1] for l in syms if l.strip() and l.split()[-1] and HEAP.search(l.split()[-1])})
        print(f"heap symbols in {os.path.basename(a.elf)}: {', '.join(names) if names else 'none'}")
    print("engine heap check: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
