#!/usr/bin/python3
"""Convert a PyTorch reference checkpoint into an edgenn weights file.

  /usr/bin/python3 tools/convert.py RUN_DIR --out weights/resnet20_main.safetensors [--fold-bn all]

RUN_DIR is a directory written by tools/train_reference.py (model.pt = state_dict,
summary.json = architecture, hyperparameters, recipe, accuracies). The output follows
docs/weights_format.md: a safetensors file whose tensors keep the state_dict names, with
convolution weights in OHWI ([out][kh][kw][in/groups]) for the NHWC kernels, linear weights
[out][in], batch-norm vectors as they are (num_batches_tracked dropped), and metadata
describing the architecture, input normalisation, class names and provenance.

--fold-bn PREFIX (repeatable; "all" = every layer) folds each batch norm under PREFIX into
the convolution before it (W' = W * g / sqrt(v + eps), b' = beta - mean * g / sqrt(v + eps)):
use it for blocks that only run inference (the frozen MEANet main block, the cloud model);
keep BN unfolded for blocks that train on the device.

Anything that cannot be converted (unknown or missing tensors for the architecture, wrong
shapes, non-float dtypes, non-finite values) stops the conversion with a message naming
the tensor.
"""
import argparse
import datetime
import hashlib
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyref import data, models, safetensors_io  # noqa: E402

FORMAT_VERSION = 1
CONVERTER_VERSION = "1.0"


class ConversionError(Exception):
    pass


def conv_bn_pairs(model):
    """(conv module name, bn module name) for every convolution followed by a batch norm,
    following the same structure rules as the engine's builders (include/edgenn/nn/)."""
    pairs = []
    for name, mod in model.named_modules():
        prefix = name + "." if name else ""
        if isinstance(mod, nn.Sequential):
            kids = list(mod.named_children())
            for (n1, m1), (n2, m2) in zip(kids, kids[1:]):
                if isinstance(m1, nn.Conv2d) and isinstance(m2, nn.BatchNorm2d):
                    pairs.append((prefix + n1, prefix + n2))
        for i in (1, 2):
            c, b = getattr(mod, f"conv{i}", None), getattr(mod, f"bn{i}", None)
            if isinstance(c, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                pairs.append((prefix + f"conv{i}", prefix + f"bn{i}"))
    return pairs


def convert_state_dict(model, state, fold_prefixes):
    """Returns (ordered dict name -> numpy array in edgenn layout, list of folded conv names)."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ConversionError(f"checkpoint does not match the architecture: {e}") from None
    mods = dict(model.named_modules())
    pairs = dict(conv_bn_pairs(model))
    folded_bns, folded = set(), []
    for conv_name, bn_name in pairs.items():
        if any(p == "all" or conv_name.startswith(p) for p in fold_prefixes):
            folded_bns.add(bn_name)
            folded.append(conv_name)
    out = {}
    for key, t in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
            raise ConversionError(f"tensor '{key}': dtype {getattr(t, 'dtype', type(t))} is not float32")
        if not torch.isfinite(t).all():
            raise ConversionError(f"tensor '{key}': contains non-finite values")
        mod_name, _, leaf = key.rpartition(".")
        if mod_name in folded_bns:
            continue
        mod = mods.get(mod_name)
        arr = t.detach().cpu().numpy()
        if isinstance(mod, nn.Conv2d) and leaf == "weight":
            if arr.ndim != 4:
                raise ConversionError(f"tensor '{key}': convolution weight must be 4-D, got {arr.shape}")
            if mod_name in folded:
                bn = mods[pairs[mod_name]]
                scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
                shift = (bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
                if mod.bias is not None:
                    shift = shift + mod.bias.detach().numpy() * scale
                arr = arr * scale[:, None, None, None]
                out[key] = np.ascontiguousarray(arr.transpose(0, 2, 3, 1)).astype(np.float32)
                out[mod_name + ".bias"] = shift.astype(np.float32)
                continue
            arr = arr.transpose(0, 2, 3, 1)  # OIHW -> OHWI
        elif isinstance(mod, nn.Conv2d) and leaf == "bias" and mod_name in folded:
            continue  # merged into the folded bias above
        elif isinstance(mod, nn.Linear):
            if leaf == "weight" and arr.ndim != 2:
                raise ConversionError(f"tensor '{key}': linear weight must be 2-D, got {arr.shape}")
        elif isinstance(mod, nn.BatchNorm2d):
            if arr.ndim != 1:
                raise ConversionError(f"tensor '{key}': batch-norm tensor must be 1-D, got {arr.shape}")
        else:
            raise ConversionError(f"tensor '{key}': belongs to no convolution, batch norm or linear layer "
                                  f"(module '{mod_name}' is {type(mod).__name__})")
        out[key] = np.ascontiguousarray(arr).astype(np.float32)
    if fold_prefixes and not folded:
        raise ConversionError(f"--fold-bn {fold_prefixes}: no convolution + batch norm pair matches")
    return out, folded


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_metadata(summary, folded):
    arch, hp = summary["arch"], summary["hparams"]
    in_ch = hp["main"]["in_ch"] if arch == "meanet" else hp["in_ch"]
    return {
        "arch": arch,
        "hparams": hp,
        "input": {"height": 28, "width": 28, "channels": in_ch, "mean": [data.MEAN] * in_ch, "std": [data.STD] * in_ch,
                  "layout": "NHWC", "pixel_scale": "x = (pixel / 255 - mean) / std"},
        "classes": data.CLASS_NAMES,
        "layouts": {"conv": "OHWI", "linear": "OI"},
        "bn_folded": sorted(folded),
    }


def provenance(summary, checkpoint, args):
    keys = ("preset", "recipe", "seed", "threads", "command", "torch", "wall_seconds", "val_accuracy",
            "test_accuracy", "val_hard_accuracy", "test_hard_accuracy", "macs", "params", "hard_classes",
            "main_val_class_accuracy")
    p = {k: summary[k] for k in keys if k in summary}
    p["epochs"] = len(summary.get("history", []))
    p["source_checkpoint_sha256"] = sha256(checkpoint)
    p["converter"] = f"tools/convert.py {CONVERTER_VERSION}"
    p["conversion_command"] = " ".join(["tools/convert.py"] + sys.argv[1:])
    p["converted_at"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="directory with model.pt and summary.json (tools/train_reference.py --out)")
    ap.add_argument("--out", required=True, help="output .safetensors path")
    ap.add_argument("--fold-bn", action="append", default=[], metavar="PREFIX",
                    help='fold batch norms of layers under PREFIX into their convolutions ("all" = every layer)')
    ap.add_argument("--router", help="JSON object stored as edgenn.router (MEANet routing thresholds)")
    args = ap.parse_args()

    checkpoint = os.path.join(args.run_dir, "model.pt")
    summary_path = os.path.join(args.run_dir, "summary.json")
    try:
        for p in (checkpoint, summary_path):
            if not os.path.exists(p):
                raise ConversionError(f"{p} not found")
        summary = json.load(open(summary_path))
        model = models.build(summary["arch"], summary["hparams"])
        state = torch.load(checkpoint, map_location="cpu")
        if not isinstance(state, dict):
            raise ConversionError(f"{checkpoint}: not a state_dict")
        tensors, folded = convert_state_dict(model, state, args.fold_bn)
        meta = {"edgenn.format": str(FORMAT_VERSION),
                "edgenn.model": json.dumps(model_metadata(summary, folded), sort_keys=True),
                "edgenn.provenance": json.dumps(provenance(summary, checkpoint, args), sort_keys=True)}
        if args.router:
            router = json.loads(args.router)
            if not isinstance(router, dict):
                raise ConversionError("--router must be a JSON object")
            meta["edgenn.router"] = json.dumps(router, sort_keys=True)
    except ConversionError as e:
        sys.exit(f"convert: error: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    safetensors_io.write(args.out, tensors, meta)
    n_params = sum(a.size for a in tensors.values())
    print(f"wrote {args.out}: {summary['arch']}, {len(tensors)} tensors, {n_params} parameters, "
          f"{os.path.getsize(args.out)} bytes, folded BN into {len(folded)} convolutions, sha256 {sha256(args.out)}")


if __name__ == "__main__":
    main()
