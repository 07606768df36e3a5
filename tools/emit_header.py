#!/usr/bin/python3
"""Write a firmware C++ header from an edgenn weights file (a MEANet with folded batch norms).

  /usr/bin/python3 tools/emit_header.py weights/meanet_mcu.safetensors --out build/model.hpp

The header holds, in namespace NS (default edgenn_model):
  - one struct per layer under NS::layers with its hyperparameters and its weights as an
    `alignas(16) static constexpr float packed[]`, already in the packed-panel layout of the
    scalar backend (kernels::pack_weights: per panel of NR output columns, NR bias values then
    K rows of NR weights, zero-padded), so firmware runs the kernels on them in place (flash);
  - NS::Meta: input shape and normalisation, class names, hard classes, router thresholds;
  - the compile-time model, NS::Model = edgenn::firmware::StaticMEANet<...> (every shape a
    template argument; see include/edgenn/firmware/static_model.hpp).
Floats are written as exact hexadecimal literals (the firmware computes with the very bits
of the weights file).

The file must be a MEANet converted with `tools/convert.py --fold-bn all` and calibrated by
edgenn-calibrate (router thresholds). Anything else stops the emitter with a message naming
the tensor or key: another architecture, a batch norm left unfolded, a missing, unexpected
or misshapen tensor, a non-float32 or non-finite tensor, no router.
"""
import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyref import safetensors_io  # noqa: E402

EMITTER_VERSION = "1.0"


class EmitError(Exception):
    pass


def scalar_panel_width(cols):
    """Columns per packed panel on the scalar backend (kernels::PanelConfig<scalar>::vectors_for)."""
    return 4 if cols >= 4 else 2 if cols >= 2 else 1


def pack(w_rows, bias):
    """kernels::pack_weights for one group: w_rows [cols][k], bias [cols] -> flat float32."""
    cols, k = w_rows.shape
    nr = scalar_panel_width(cols)
    panels = -(-cols // nr)
    out = np.zeros((panels, k + 1, nr), dtype=np.float32)
    for p in range(panels):
        n0, n1 = p * nr, min(cols, (p + 1) * nr)
        out[p, 0, :n1 - n0] = bias[n0:n1]
        out[p, 1:, :n1 - n0] = w_rows[n0:n1].T
    return out.reshape(-1)


def c_float(x):
    x = float(x)
    if x == 0.0:
        return "-0.0f" if math.copysign(1.0, x) < 0 else "0.0f"
    return x.hex() + "f"


def c_ident(name):
    return name.replace(".", "_")


class Emitter:
    def __init__(self, tensors):
        self.tensors = tensors
        self.used = set()
        self.structs = []
        self.flash_floats = 0

    def take(self, name, shape):
        if name not in self.tensors:
            bn = name.rsplit(".", 1)[0]
            raise EmitError(f"tensor '{name}': missing (expected shape {list(shape)})"
                            + (" — was the batch norm folded? convert with --fold-bn all" if name.endswith(".bias") and
                               bn + ".weight" in self.tensors else ""))
        t = self.tensors[name]
        if t.dtype != np.float32:
            raise EmitError(f"tensor '{name}': dtype {t.dtype} is not float32")
        if tuple(t.shape) != tuple(shape):
            raise EmitError(f"tensor '{name}': shape {list(t.shape)}, the layer needs {list(shape)}")
        if not np.isfinite(t).all():
            raise EmitError(f"tensor '{name}': contains non-finite values")
        self.used.add(name)
        return t

    def array(self, packed):
        self.flash_floats += packed.size
        body = []
        vals = [c_float(v) for v in packed]
        for i in range(0, len(vals), 8):
            body.append("      " + ", ".join(vals[i:i + 8]) + ",")
        return (f"  alignas(16) static constexpr float packed[{packed.size}] = {{\n" + "\n".join(body) + "\n  };\n")

    def conv(self, name, cin, cout, k, stride, act):
        """A folded convolution: weight OHWI [cout][k][k][cin] + bias [cout]."""
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            bn = name.replace("conv", "bn") if "downsample" not in name else name[:-1] + "1"
            if f"{bn}.{leaf}" in self.tensors:
                raise EmitError(f"tensor '{bn}.{leaf}': batch norm not folded (the firmware runs folded "
                                f"convolutions only; convert with tools/convert.py --fold-bn all)")
        w = self.take(name + ".weight", (cout, k, k, cin))
        b = self.take(name + ".bias", (cout,))
        ident = c_ident(name)
        packed = pack(w.reshape(cout, k * k * cin), b)
        self.structs.append(
            f"struct {ident} {{  // {name}: conv {k}x{k}/{stride}, {cin} -> {cout}, {act}\n"
            f"  static constexpr int cin = {cin}, cout = {cout}, kernel = {k}, stride = {stride};\n"
            f"  static constexpr edgenn::Activation activation = edgenn::Activation::{act};\n"
            + self.array(packed) + "};\n")
        return ident

    def linear(self, name, fin, fout):
        w = self.take(name + ".weight", (fout, fin))
        b = self.take(name + ".bias", (fout,))
        ident = c_ident(name)
        self.structs.append(
            f"struct {ident} {{  // {name}: linear {fin} -> {fout}\n"
            f"  static constexpr int in_features = {fin}, out_features = {fout};\n"
            + self.array(pack(w, b)) + "};\n")
        return ident


def out_size(n, k, s):
    p = k // 2
    return (n + 2 * p - k) // s + 1


def basic_block(em, prefix, h, w, cin, cout, stride):
    """Returns (C++ type, out h, out w)."""
    c1 = em.conv(prefix + ".conv1", cin, cout, 3, stride, "relu")
    c2 = em.conv(prefix + ".conv2", cout, cout, 3, 1, "relu")
    args = [f"layers::{c1}", f"layers::{c2}"]
    if stride != 1 or cin != cout:
        args.append(f"layers::{em.conv(prefix + '.downsample.0', cin, cout, 1, stride, 'none')}")
    t = f"edgenn::firmware::BasicBlock<Arch, {h}, {w}, {', '.join(args)}>"
    return t, out_size(h, 3, stride), out_size(w, 3, stride)


def chain(blocks):
    return "edgenn::firmware::Chain<Arch,\n    " + ",\n    ".join(blocks) + ">"


def router_literal(r):
    rules = {"argmax_in_hard", "hard_mass"}
    checks = {"off", "before_extension", "after_extension"}
    units = {"nats", "normalized"}
    for key, allowed in (("hard_rule", rules), ("cloud_check", checks), ("entropy_unit", units)):
        if r.get(key) not in allowed:
            raise EmitError(f"edgenn.router: '{key}' must be one of {sorted(allowed)}, got {r.get(key)!r}")
    t = r.get("entropy_threshold")
    if t is None:
        thr = "std::numeric_limits<float>::infinity()"
    elif isinstance(t, (int, float)) and math.isfinite(t):
        thr = c_float(np.float32(t))
    else:
        raise EmitError(f"edgenn.router: 'entropy_threshold' must be a finite number or null, got {t!r}")
    m = r.get("hard_mass_threshold", -1.0)
    if not isinstance(m, (int, float)) or not math.isfinite(m):
        raise EmitError(f"edgenn.router: 'hard_mass_threshold' must be a finite number, got {m!r}")
    ns = "edgenn::meanet::"
    return (f"{ns}RouterConfig{{{ns}HardRule::{r['hard_rule']}, {c_float(np.float32(m))}, "
            f"{ns}CloudCheck::{r['cloud_check']}, {ns}EntropyUnit::{r['entropy_unit']}, {thr}}}")


def emit(path, namespace):
    tensors, meta = safetensors_io.read(path)
    if meta.get("edgenn.format") != "1":
        raise EmitError(f"{path}: metadata 'edgenn.format' is {meta.get('edgenn.format')!r}, expected \"1\"")
    try:
        model = json.loads(meta["edgenn.model"])
    except (KeyError, ValueError) as e:
        raise EmitError(f"{path}: metadata 'edgenn.model' missing or not JSON ({e})") from None
    if model.get("arch") != "meanet":
        raise EmitError(f"{path}: architecture '{model.get('arch')}' is not supported by the firmware emitter "
                        f"(it emits MEANet edge networks)")
    if "edgenn.router" not in meta:
        raise EmitError(f"{path}: no 'edgenn.router' metadata (router thresholds): run edgenn-calibrate first")
    router = json.loads(meta["edgenn.router"])
    hp, inp = model["hparams"], model["input"]
    mh = hp["main"]
    depth, width, in_ch, ncls = mh["depth"], mh["width"], mh["in_ch"], mh["num_classes"]
    if (depth - 2) % 6 or depth < 8:
        raise EmitError(f"{path}: hparams.main.depth {depth} is not 6n+2")
    H, W = inp["height"], inp["width"]
    if inp["channels"] != in_ch or len(inp["mean"]) != in_ch or len(inp["std"]) != in_ch:
        raise EmitError(f"{path}: input channels / normalisation do not match hparams.main.in_ch {in_ch}")
    hard = hp["hard_classes"]
    if not hard or len(set(hard)) != len(hard) or any(not 0 <= c < ncls for c in hard):
        raise EmitError(f"{path}: hparams.hard_classes {hard} is not a list of distinct classes in [0, {ncls})")
    em = Emitter(tensors)

    # Main block (ResNet-CIFAR): conv1, three stages of n BasicBlocks at w, 2w, 4w.
    n = (depth - 2) // 6
    blocks = [f"edgenn::firmware::Conv<Arch, {H}, {W}, layers::{em.conv('main.conv1', in_ch, width, 3, 1, 'relu')}>"]
    h, w, c = H, W, width
    for stage in range(3):
        cout = width << stage
        for i in range(n):
            t, h, w = basic_block(em, f"main.layer{stage + 1}.{i}", h, w, c, cout, 2 if stage > 0 and i == 0 else 1)
            blocks.append(t)
            c = cout
    main_t, main_c, mh_, mw_ = chain(blocks), c, h, w
    main_fc = em.linear("main.fc", c, ncls)

    # Adaptive block on the input.
    stem = hp["adaptive_stem"]
    blocks = [f"edgenn::firmware::Conv<Arch, {H}, {W}, layers::{em.conv('adaptive.conv1', in_ch, stem, 3, 1, 'relu')}>"]
    h, w, c = H, W, stem
    for i, (ch, s) in enumerate(hp["adaptive_blocks"]):
        t, h, w = basic_block(em, f"adaptive.blocks.{i}", h, w, c, ch, s)
        blocks.append(t)
        c = ch
    if (h, w) != (mh_, mw_):
        raise EmitError(f"{path}: adaptive features are {h}x{w}, main features {mh_}x{mw_}: they cannot be concatenated")
    adaptive_t = chain(blocks)

    # Extension block on concat(main features, adaptive features).
    blocks, c = [], main_c + c
    for i, (ch, s) in enumerate(hp["extension_blocks"]):
        t, h, w = basic_block(em, f"extension.blocks.{i}", h, w, c, ch, s)
        blocks.append(t)
        c = ch
    extension_t = chain(blocks)
    ext_fc = em.linear("extension.fc", c, len(hard))

    unexpected = sorted(set(tensors) - em.used)
    if unexpected:
        raise EmitError(f"tensor '{unexpected[0]}': not part of the MEANet structure the firmware runs"
                        + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))

    raw = open(path, "rb").read()
    digest = hashlib.sha256(raw).hexdigest()
    classes = model.get("classes", [str(i) for i in range(ncls)])
    if len(classes) != ncls:
        raise EmitError(f"{path}: {len(classes)} class names for {ncls} classes")
    params = sum(int(t.size) for t in tensors.values())
    cal = router.get("calibration", {})
    q = json.dumps

    out = []
    out.append(f"// Generated by tools/emit_header.py {EMITTER_VERSION} from {os.path.basename(path)}\n"
               f"// (sha256 {digest}). Do not edit: regenerate from the weights file.\n"
               f"// MEANet edge network, {params} parameters; weights pre-packed for the scalar backend,\n"
               f"// {em.flash_floats * 4} bytes of flash. Router: {json.dumps({k: v for k, v in router.items() if k != 'calibration'})}\n")
    out.append("#pragma once\n\n#include <cstdint>\n#include <limits>\n\n#include \"edgenn/firmware/static_model.hpp\"\n\n")
    out.append(f"namespace {namespace} {{\n\n// The packed layout below is the scalar backend's.\nusing Arch = edgenn::simd::scalar;\n\n")
    out.append("namespace layers {\n\n" + "\n".join(em.structs) + "\n}  // namespace layers\n\n")
    out.append("struct Meta {\n"
               f"  static constexpr int in_height = {H}, in_width = {W}, in_channels = {in_ch};\n"
               f"  // x = (pixel / 255 - mean[c]) / stdv[c]\n"
               f"  static constexpr float mean[{in_ch}] = {{{', '.join(c_float(np.float32(v)) for v in inp['mean'])}}};\n"
               f"  static constexpr float stdv[{in_ch}] = {{{', '.join(c_float(np.float32(v)) for v in inp['std'])}}};\n"
               f"  static constexpr int num_classes = {ncls};\n"
               f"  static constexpr const char* class_names[{ncls}] = {{{', '.join(q(s) for s in classes)}}};\n"
               f"  // extension output h is class hard_classes[h]\n"
               f"  static constexpr int hard_classes[{len(hard)}] = {{{', '.join(str(c) for c in hard)}}};\n"
               f"  static constexpr edgenn::meanet::RouterConfig router =\n      {router_literal(router)};\n"
               f"  static constexpr std::int64_t parameters = {params};\n"
               f"  static constexpr const char* weights_sha256 = {q(digest)};\n"
               f"  // Router calibration (edgenn-calibrate, validation split): accuracy {cal.get('val_accuracy')}, "
               f"exit fractions main/extension/cloud {cal.get('val_exit_fractions')}\n"
               "};\n\n")
    out.append(f"using Main = {main_t};\n")
    out.append(f"using MainHead = edgenn::firmware::PoolLinear<Arch, Main, layers::{main_fc}>;\n")
    out.append(f"using Adaptive = {adaptive_t};\n")
    out.append(f"using Extension = {extension_t};\n")
    out.append(f"using ExtensionHead = edgenn::firmware::PoolLinear<Arch, Extension, layers::{ext_fc}>;\n")
    out.append("using Model = edgenn::firmware::StaticMEANet<Arch, Meta, Main, MainHead, Adaptive, Extension, ExtensionHead>;\n")
    out.append(f"\n}}  // namespace {namespace}\n")
    return "".join(out), params, em.flash_floats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", help="edgenn weights file (.safetensors)")
    ap.add_argument("--out", required=True, help="output header")
    ap.add_argument("--namespace", default="edgenn_model", help="C++ namespace of the model (default edgenn_model)")
    a = ap.parse_args()
    if not a.namespace.replace("_", "").isalnum() or a.namespace[0].isdigit():
        print(f"error: --namespace '{a.namespace}' is not a C++ identifier", file=sys.stderr)
        return 2
    try:
        text, params, floats = emit(a.weights, a.namespace)
    except EmitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {a.weights}: cannot read the weights file ({type(e).__name__}: {e})", file=sys.stderr)
        return 1
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, a.out)
    print(f"wrote {a.out}: {params} parameters, {floats * 4} bytes of packed weights")
    return 0


if __name__ == "__main__":
    sys.exit(main())
