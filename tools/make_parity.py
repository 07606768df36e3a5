#!/usr/bin/python3
"""Reference logits for the engine's parity tests (tests/test_parity.cpp).

  /usr/bin/python3 tools/make_parity.py RUN_DIR weights/NAME.safetensors [--count 100]

Runs the PyTorch checkpoint in RUN_DIR (eval mode, float32, 1 thread) on the first COUNT
Fashion-MNIST test images and writes tests/parity/NAME.safetensors with the images (uint8),
labels, logits (and, for MEANet, the extension's hard-class logits). The engine must
reproduce the logits from the converted weights file to 1e-4 of the logit scale.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyref import data, models, safetensors_io  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference_logits(run_dir, images_u8):
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    model = models.build(summary["arch"], summary["hparams"])
    model.load_state_dict(torch.load(os.path.join(run_dir, "model.pt"), map_location="cpu"))
    model.eval()
    x = torch.from_numpy(data.normalize(images_u8))
    with torch.no_grad():
        out = model(x)
    if isinstance(out, tuple):
        return summary, out[0].numpy(), out[1].numpy()
    return summary, out.numpy(), None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("weights", help="converted weights file (path relative to the repository root is stored)")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--out", help="default: tests/parity/<weights name>.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(1)
    x, y = data.load_split("test")
    x, y = x[:args.count], y[:args.count]
    summary, logits, ext = reference_logits(args.run_dir, x)
    name = os.path.splitext(os.path.basename(args.weights))[0]
    out = args.out or os.path.join(ROOT, "tests", "parity", name + ".safetensors")
    tensors = {"images": x, "labels": y.astype(np.int64), "logits": logits.astype(np.float32)}
    if ext is not None:
        tensors["ext_logits"] = ext.astype(np.float32)
    rel = os.path.relpath(os.path.abspath(args.weights), ROOT)
    safetensors_io.write(out, tensors, {"weights": rel, "arch": summary["arch"], "generator": "tools/make_parity.py"})
    print(f"wrote {out}: {len(y)} images, logits {logits.shape}" + (f", ext {ext.shape}" if ext is not None else ""))


if __name__ == "__main__":
    main()
