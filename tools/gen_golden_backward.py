#!/usr/bin/python3
"""PyTorch autograd golden vectors for the backward kernels (tests/test_golden_backward.cpp).

  /usr/bin/python3 tools/gen_golden_backward.py            # (re)write tests/golden/backward/*.safetensors
  /usr/bin/python3 tools/gen_golden_backward.py --check    # recompute and compare with the committed files

Every case draws its inputs from numpy's PCG64 with a fixed seed, runs the op with
torch.nn.functional (CPU, float32) and back-propagates the random linear functional
L = sum(r * y) with torch.autograd (so dL/dy = r, stored as "dy"); the cross-entropy cases
back-propagate the loss itself. Tensors are stored in edgenn's layouts: activations NHWC,
convolution weights and their gradients OHWI ([out][kh][kw][in/groups]), linear weights
[out][in]. The metadata holds the op name and its parameters as JSON. --check fails if an
input differs at all or an output by more than float rounding of another summation order
(oneDNN picks other kernels on another CPU; pyref/compare.py).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyref import safetensors_io  # noqa: E402
from pyref.compare import same_output  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "golden", "backward")

# Tensors that are inputs of a case (compared exactly by --check); everything else is an output.
INPUTS = {"x", "weight", "bias", "dy", "gamma", "beta", "running_mean", "running_var", "a", "b", "logits", "labels"}


def nhwc(t):
    return t.detach().permute(0, 2, 3, 1).contiguous().numpy()


def ohwi(t):
    return t.detach().permute(0, 2, 3, 1).contiguous().numpy()


def leaf(array):
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).requires_grad_(True)


def backprop(y, rng):
    """Back-propagates L = sum(r * y) for a random r; returns r."""
    r = torch.from_numpy(rng.standard_normal(tuple(y.shape)).astype(np.float32))
    (y * r).sum().backward()
    return r


def conv_case(rng, n, h, w, cin, cout, k, s=1, pad=(0, 0, 0, 0), dil=1, groups=1, bias=True):
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (s, s) if isinstance(s, int) else s
    dh, dw = (dil, dil) if isinstance(dil, int) else dil
    top, left, bottom, right = pad
    x = leaf(rng.standard_normal((n, cin, h, w)))
    wt = leaf(rng.standard_normal((cout, cin // groups, kh, kw)) * 0.3)
    b = leaf(rng.standard_normal(cout)) if bias else None
    y = F.conv2d(F.pad(x, (left, right, top, bottom)), wt, b, stride=(sh, sw), dilation=(dh, dw), groups=groups)
    r = backprop(y, rng)
    tensors = {"x": nhwc(x), "weight": ohwi(wt)}
    if b is not None:
        tensors["bias"] = b.detach().numpy()
    tensors.update({"dy": nhwc(r), "dx": nhwc(x.grad), "dweight": ohwi(wt.grad)})
    if b is not None:
        tensors["dbias"] = b.grad.numpy()
    params = dict(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw, pad_top=top,
                  pad_left=left, pad_bottom=bottom, pad_right=right, groups=groups)
    return "conv2d", params, tensors


def linear_case(r):
    x = leaf(r.standard_normal((6, 70)))
    w = leaf(r.standard_normal((13, 70)) * 0.2)
    b = leaf(r.standard_normal(13))
    dy = backprop(F.linear(x, w, b), r)
    return "linear", {}, {"x": x.detach().numpy(), "weight": w.detach().numpy(), "bias": b.detach().numpy(),
                          "dy": dy.numpy(), "dx": x.grad.numpy(), "dweight": w.grad.numpy(), "dbias": b.grad.numpy()}


def batchnorm_case(r, activation="none"):
    """Training mode: batch statistics, running-statistics update, and the gradients."""
    c = 19
    offset = r.uniform(-3.0, 3.0, (1, c, 1, 1))  # channels with a mean far from zero
    x = leaf(r.standard_normal((2, c, 6, 5)) * r.uniform(0.5, 2.0, (1, c, 1, 1)) + offset)
    g, b = leaf(r.uniform(0.5, 1.5, c)), leaf(r.standard_normal(c))
    rm = torch.from_numpy(r.standard_normal(c).astype(np.float32))
    rv = torch.from_numpy(r.uniform(0.5, 2.0, c).astype(np.float32))
    rm0, rv0 = rm.clone(), rv.clone()
    y = F.batch_norm(x, rm, rv, g, b, training=True, momentum=0.1, eps=1e-5)
    if activation == "relu":
        y = F.relu(y)
    dy = backprop(y, r)
    xd = x.detach().double()
    mean = xd.mean(dim=(0, 2, 3))
    invstd = 1.0 / torch.sqrt(xd.var(dim=(0, 2, 3), unbiased=False) + 1e-5)
    return "batchnorm_train", dict(eps=1e-5, momentum=0.1, activation=activation), {
        "x": nhwc(x), "gamma": g.detach().numpy(), "beta": b.detach().numpy(), "running_mean": rm0.numpy(),
        "running_var": rv0.numpy(), "dy": nhwc(dy), "y": nhwc(y), "mean": mean.float().numpy(),
        "invstd": invstd.float().numpy(), "running_mean_after": rm.numpy(), "running_var_after": rv.numpy(),
        "dx": nhwc(x.grad), "dgamma": g.grad.numpy(), "dbeta": b.grad.numpy()}


def activation_case(r, name):
    xs = r.standard_normal((1, 21, 5, 6)) * 4.0
    xs.flat[::17] = 0.0  # exactly on the kinks: no gradient there
    if name == "relu6":
        xs.flat[5::23] = 6.0
    x = leaf(xs)
    y = F.relu(x) if name == "relu" else F.relu6(x)
    dy = backprop(y, r)
    return "activation", dict(activation=name), {"x": nhwc(x), "y": nhwc(y), "dy": nhwc(dy), "dx": nhwc(x.grad)}


def add_case(r):
    a, b = leaf(r.standard_normal((1, 21, 5, 6))), leaf(r.standard_normal((1, 21, 5, 6)))
    y = F.relu(a + b)
    dy = backprop(y, r)
    return "add", dict(activation="relu"), {"a": nhwc(a), "b": nhwc(b), "y": nhwc(y), "dy": nhwc(dy),
                                             "da": nhwc(a.grad), "db": nhwc(b.grad)}


def pool_case(r, op, k, s, p, count_include_pad=True):
    # Max pooling gets values on a coarse grid: many windows hold ties, and PyTorch gives the
    # gradient to the first maximum in scan order.
    xs = r.standard_normal((1, 13, 11, 12))
    if op == "max_pool2d":
        xs = np.round(xs * 2.0)
    x = leaf(xs)
    if op == "max_pool2d":
        y = F.max_pool2d(x, k, s, p)
    else:
        y = F.avg_pool2d(x, k, s, p, count_include_pad=count_include_pad)
    dy = backprop(y, r)
    return op, dict(kernel=k, stride=s, pad=p, count_include_pad=count_include_pad), {
        "x": nhwc(x), "dy": nhwc(dy), "dx": nhwc(x.grad)}


def global_pool_case(r):
    x = leaf(r.standard_normal((2, 35, 5, 5)))
    dy = backprop(F.adaptive_avg_pool2d(x, 1).flatten(1), r)
    return "global_avg_pool", {}, {"x": nhwc(x), "dy": dy.numpy(), "dx": nhwc(x.grad)}


def cross_entropy_case(r, smoothing):
    z = leaf(r.standard_normal((9, 10)) * 3.0)
    labels = torch.from_numpy(r.integers(0, 10, 9).astype(np.int64))
    loss = F.cross_entropy(z, labels, label_smoothing=smoothing)
    loss.backward()
    return "cross_entropy", dict(label_smoothing=smoothing), {
        "logits": z.detach().numpy(), "labels": labels.numpy(), "loss": loss.detach().reshape(1).numpy(),
        "dlogits": z.grad.numpy()}


def cases():
    """(name, seed, builder) for every golden file."""
    yield "conv3x3_s1", 101, lambda r: conv_case(r, 2, 9, 9, 16, 16, 3, 1, (1, 1, 1, 1))
    yield "conv3x3_s2", 102, lambda r: conv_case(r, 1, 11, 10, 16, 32, 3, 2, (1, 1, 1, 1), bias=False)
    yield "conv1x1", 103, lambda r: conv_case(r, 2, 7, 5, 40, 23, 1)
    yield "conv1x1_s2", 104, lambda r: conv_case(r, 1, 9, 9, 16, 32, 1, 2, bias=False)
    yield "conv5x5_dilated_asym", 105, lambda r: conv_case(r, 2, 12, 13, 6, 10, (5, 3), (2, 1), (3, 1, 0, 2),
                                                           dil=(1, 2), groups=2)
    yield "conv7x7_s3_groups", 106, lambda r: conv_case(r, 1, 15, 15, 9, 12, 7, 3, (3, 3, 3, 3), groups=3)
    yield "conv_stem_1ch", 107, lambda r: conv_case(r, 2, 10, 10, 1, 16, 3, 1, (1, 1, 1, 1))
    yield "depthwise3x3_s1", 108, lambda r: conv_case(r, 1, 10, 9, 24, 24, 3, 1, (1, 1, 1, 1), groups=24)
    yield "depthwise3x3_s2", 109, lambda r: conv_case(r, 1, 11, 10, 37, 37, 3, 2, (1, 1, 1, 1), groups=37)
    yield "depthwise5x5", 110, lambda r: conv_case(r, 1, 9, 8, 20, 20, 5, 1, (2, 2, 2, 2), groups=20)
    yield "linear", 111, linear_case
    yield "batchnorm_train", 112, batchnorm_case
    yield "batchnorm_train_relu", 113, lambda r: batchnorm_case(r, "relu")
    yield "relu", 114, lambda r: activation_case(r, "relu")
    yield "relu6", 115, lambda r: activation_case(r, "relu6")
    yield "add_relu", 116, add_case
    yield "max_pool", 117, lambda r: pool_case(r, "max_pool2d", 3, 2, 1)
    yield "max_pool_2x2", 118, lambda r: pool_case(r, "max_pool2d", 2, 2, 0)
    yield "avg_pool", 119, lambda r: pool_case(r, "avg_pool2d", 3, 2, 1, count_include_pad=True)
    yield "avg_pool_exclude_pad", 120, lambda r: pool_case(r, "avg_pool2d", 3, 2, 1, count_include_pad=False)
    yield "global_avg_pool", 121, global_pool_case
    yield "cross_entropy", 122, lambda r: cross_entropy_case(r, 0.0)
    yield "cross_entropy_smoothing", 123, lambda r: cross_entropy_case(r, 0.1)


def build(name, seed, fn):
    torch.manual_seed(seed)
    op, params, tensors = fn(np.random.default_rng(seed))
    meta = {"op": op, "params": json.dumps(params, sort_keys=True), "case": name,
            "generator": "tools/gen_golden_backward.py", "torch": torch.__version__}
    return tensors, meta


def compare(name, path, tensors, meta):
    """Problems between a committed file and a fresh computation (empty list: equal)."""
    old, old_meta = safetensors_io.read(path)
    problems = []
    if set(old) != set(tensors):
        problems.append(f"tensor names differ: {sorted(old)} vs {sorted(tensors)}")
    for k, v in tensors.items():
        if k not in old:
            continue
        if old[k].shape != v.shape:
            problems.append(f"{k}: shape {old[k].shape} vs {v.shape}")
        elif k in INPUTS:
            if not np.array_equal(old[k], v):
                problems.append(f"{k}: input differs")
        elif not same_output(old[k], v):
            problems.append(f"{k}: max abs diff {np.abs(old[k] - v).max():.3g}")
    if old_meta.get("op") != meta["op"] or json.loads(old_meta.get("params", "{}")) != json.loads(meta["params"]):
        problems.append("op or params differ")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    ap.add_argument("--dir", default=OUT_DIR)
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.dir, exist_ok=True)
    failures = 0
    all_cases = list(cases())
    for name, seed, fn in all_cases:
        tensors, meta = build(name, seed, fn)
        path = os.path.join(args.dir, name + ".safetensors")
        if not args.check:
            safetensors_io.write(path, tensors, meta)
            continue
        if not os.path.exists(path):
            print(f"FAIL {name}: {path} is missing")
            failures += 1
            continue
        problems = compare(name, path, tensors, meta)
        print(("ok   " if not problems else "FAIL ") + name + ("" if not problems else ": " + "; ".join(problems)))
        failures += bool(problems)
    if args.check:
        print(f"backward golden vectors: {failures} of {len(all_cases)} cases differ")
        sys.exit(1 if failures else 0)
    print(f"wrote {len(all_cases)} golden files to {args.dir}")


if __name__ == "__main__":
    main()
