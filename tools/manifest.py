#!/usr/bin/python3
"""Write weights/manifest.json (and the table in weights/README.md) from the shipped files.

  /usr/bin/python3 tools/manifest.py          # regenerate
  /usr/bin/python3 tools/manifest.py --check  # verify sha256 and sizes of the shipped files

Everything comes from the files themselves (edgenn.model and edgenn.provenance metadata),
so the manifest cannot drift from what is shipped.
"""
import argparse
import glob
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyref import safetensors_io  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(ROOT, "weights")


def describe(path):
    tensors, meta = safetensors_io.read(path)
    model = json.loads(meta["edgenn.model"])
    prov = json.loads(meta.get("edgenn.provenance", "{}"))
    router = json.loads(meta["edgenn.router"]) if "edgenn.router" in meta else None
    raw = open(path, "rb").read()
    entry = {
        "file": os.path.basename(path),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "bytes": len(raw),
        "arch": model["arch"],
        "hparams": model["hparams"],
        "parameters": int(sum(t.size for t in tensors.values())),
        "bn_folded_layers": len(model.get("bn_folded", [])),
        "training_command": prov.get("command"),
        "conversion_command": prov.get("conversion_command"),
        "seed": prov.get("seed"),
        "epochs": prov.get("epochs"),
        "wall_seconds": prov.get("wall_seconds"),
        "threads": prov.get("threads"),
        "macs_per_image": prov.get("macs"),
    }
    for k in ("val_accuracy", "test_accuracy", "val_hard_accuracy", "test_hard_accuracy", "hard_classes", "trained_by"):
        if k in prov:
            entry[k] = prov[k]
    if router:
        entry["router"] = router
    return entry


def fmt_acc(e):
    if "test_accuracy" in e:
        return f"{e['val_accuracy'] * 100:.2f} / {e['test_accuracy'] * 100:.2f}"
    if "test_hard_accuracy" in e:
        return f"{e['val_hard_accuracy'] * 100:.2f} / {e['test_hard_accuracy'] * 100:.2f} (hard classes, extension)"
    return "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(WEIGHTS, "*.safetensors")))
    if args.check:
        man = json.load(open(os.path.join(WEIGHTS, "manifest.json")))
        bad = 0
        for m in man["models"]:
            p = os.path.join(WEIGHTS, m["file"])
            h = hashlib.sha256(open(p, "rb").read()).hexdigest() if os.path.exists(p) else None
            if h != m["sha256"]:
                print(f"FAIL {m['file']}: sha256 {h} != manifest {m['sha256']}")
                bad += 1
        listed = {m["file"] for m in man["models"]}
        for f in files:
            if os.path.basename(f) not in listed:
                print(f"FAIL {os.path.basename(f)} is not in the manifest")
                bad += 1
        print(f"manifest: {len(man['models'])} models, {bad} problems")
        sys.exit(1 if bad else 0)
    entries = [describe(f) for f in files]
    with open(os.path.join(WEIGHTS, "manifest.json"), "w") as f:
        json.dump({"format": "edgenn weights manifest 1", "models": entries}, f, indent=1)
        f.write("\n")
    rows = ["| file | architecture | parameters | MACs/image | epochs | wall time | val / test accuracy % | sha256 (first 16) |",
            "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        macs = e["macs_per_image"]
        macs_s = (f"{macs / 1e6:.1f} M" if isinstance(macs, (int, float)) else
                  " + ".join(f"{k} {v / 1e6:.1f} M" for k, v in macs.items()) if isinstance(macs, dict) else "-")
        wall = f"{e['wall_seconds'] / 60:.0f} min" if e.get("wall_seconds") else "-"
        rows.append(f"| {e['file']} | {e['arch']} | {e['parameters']:,} | {macs_s} | {e['epochs']} | {wall} | "
                    f"{fmt_acc(e)} | {e['sha256'][:16]} |")
    table = "\n".join(rows)
    readme = os.path.join(WEIGHTS, "README.md")
    head = open(readme).read().split("<!-- manifest -->")[0] if os.path.exists(readme) else "# Shipped weights\n\n"
    with open(readme, "w") as f:
        f.write(head + "<!-- manifest -->\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
