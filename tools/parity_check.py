#!/usr/bin/python3
"""Full-test-set parity between the engine and PyTorch for shipped weights.

  /usr/bin/python3 tools/parity_check.py --eval build/tools/edgenn-eval [--manifest weights/manifest.json]
  /usr/bin/python3 tools/parity_check.py --eval ... --weights weights/x.safetensors --run-dir RUN_DIR

For every model, the engine (edgenn-eval) and PyTorch (the reference checkpoint, rebuilt
from the weights file's own tensors, so no training output is needed) classify the 10k
Fashion-MNIST test images. Passes when the top-1 class agrees on >= 99.9% of the images
and the accuracies differ by <= 0.05 percentage points. For MEANet both the main logits
and the extension's hard-class logits are compared.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyref import data, models, safetensors_io  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torch_model_from_weights(path):
    """Rebuild the PyTorch reference from an edgenn weights file (undoing OHWI and BN folding)."""
    tensors, meta = safetensors_io.read(path)
    info = json.loads(meta["edgenn.model"])
    model = models.build(info["arch"], info["hparams"])
    state = model.state_dict()
    folded = set(info.get("bn_folded", []))
    from convert import conv_bn_pairs  # noqa: E402
    pairs = dict(conv_bn_pairs(model))
    new = {}
    for key, ref in state.items():
        if key.endswith("num_batches_tracked"):
            new[key] = ref
            continue
        mod, _, leaf = key.rpartition(".")
        bn_of = {b: c for c, b in pairs.items()}
        if mod in bn_of and bn_of[mod] in folded:
            # Folded BN: identity statistics; the conv carries scale and shift.
            new[key] = {"weight": torch.ones_like(ref), "bias": torch.zeros_like(ref),
                        "running_mean": torch.zeros_like(ref), "running_var": torch.ones_like(ref) - 1e-5}[leaf]
            continue
        arr = tensors[key]
        if arr.ndim == 4:
            arr = arr.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        new[key] = torch.from_numpy(np.ascontiguousarray(arr))
    # Folded convolutions gained a bias the PyTorch module does not have: add it as a hook.
    model.load_state_dict(new, strict=True)
    mods = dict(model.named_modules())
    for conv in folded:
        b = torch.from_numpy(tensors[conv + ".bias"])
        mods[conv].bias = torch.nn.Parameter(b)
    return model.eval(), info


def torch_logits(model, images, batch=100):
    # Batches of 100 stay in cache: 10k images of the x2 ResNet took 28 s in batches of 100,
    # 45 s in batches of 500 (2 threads); the logits do not depend on the batch.
    outs, exts = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            o = model(torch.from_numpy(data.normalize(images[i:i + batch])))
            if isinstance(o, tuple):
                outs.append(o[0].numpy())
                exts.append(o[1].numpy())
            else:
                outs.append(o.numpy())
    return np.concatenate(outs), (np.concatenate(exts) if exts else None)


def compare(name, eng, ref, labels, what):
    agree = (eng.argmax(1) == ref.argmax(1)).mean()
    acc_e, acc_r = (eng.argmax(1) == labels).mean(), (ref.argmax(1) == labels).mean()
    ok = agree >= 0.999 and abs(acc_e - acc_r) <= 0.0005
    print(f"{'ok  ' if ok else 'FAIL'} {name} {what}: top-1 agreement {agree * 100:.2f}%, accuracy engine "
          f"{acc_e * 100:.2f}% vs PyTorch {acc_r * 100:.2f}%, max |logit diff| {np.abs(eng - ref).max():.2e}")
    return ok


def check(eval_bin, weights, threads):
    x, y = data.load_split("test")
    model, info = torch_model_from_weights(weights)
    ref, ref_ext = torch_logits(model, x)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "logits.safetensors")
        subprocess.run([eval_bin, "--model", weights, "--split", "test", "--logits", out, "--threads", str(threads)],
                       check=True, stdout=subprocess.DEVNULL)
        eng, _ = safetensors_io.read(out)
    name = os.path.basename(weights)
    ok = compare(name, eng["logits"], ref, y, "logits")
    if ref_ext is not None:
        hard = info["hparams"]["hard_classes"]
        remap = np.full(10, -1)
        remap[hard] = np.arange(len(hard))
        keep = remap[y] >= 0
        ok &= compare(name, eng["ext_logits"][keep], ref_ext[keep], remap[y[keep]], "extension logits (hard-class images)")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", required=True, help="path of the edgenn-eval program")
    ap.add_argument("--manifest", default=os.path.join(ROOT, "weights", "manifest.json"))
    ap.add_argument("--weights", action="append", help="check only these weights files")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    files = args.weights or [os.path.join(ROOT, "weights", m["file"]) for m in json.load(open(args.manifest))["models"]]
    results = [check(args.eval, w, args.threads) for w in files]
    print(f"parity: {sum(results)} of {len(results)} models pass")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
