#!/usr/bin/python3
"""PyTorch golden vectors for the kernel tests (tests/test_golden.cpp).

  /usr/bin/python3 tools/gen_golden.py            # (re)write tests/golden/*.safetensors
  /usr/bin/python3 tools/gen_golden.py --check    # recompute and compare with the committed files

Every case draws its inputs from numpy's PCG64 with a fixed seed, runs torch.nn.functional
(CPU, float32) and stores inputs, weights and outputs in edgenn's layouts: activations NHWC,
convolution weights OHWI ([out][kh][kw][in/groups]), linear weights [out][in]. The metadata
holds the op name and its parameters as JSON. --check fails if an input differs at all or an
output by more than float rounding of another summation order (oneDNN picks other kernels on
another CPU; pyref/compare.py).
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
OUT_DIR = os.path.join(ROOT, "tests", "golden")


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def act(y, name):
    return F.relu(y) if name == "relu" else F.relu6(y) if name == "relu6" else y


def conv_case(rng, n, h, w, cin, cout, k, s=1, pad=(0, 0, 0, 0), dil=1, groups=1, activation="none", residual=False,
              bias=True):
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (s, s) if isinstance(s, int) else s
    dh, dw = (dil, dil) if isinstance(dil, int) else dil
    top, left, bottom, right = pad
    x = torch.from_numpy(rng.standard_normal((n, cin, h, w)).astype(np.float32))
    wt = torch.from_numpy(rng.standard_normal((cout, cin // groups, kh, kw)).astype(np.float32) * 0.3)
    b = torch.from_numpy(rng.standard_normal(cout).astype(np.float32)) if bias else None
    y = F.conv2d(F.pad(x, (left, right, top, bottom)), wt, b, stride=(sh, sw), dilation=(dh, dw), groups=groups)
    tensors = {"x": nhwc(x), "weight": wt.permute(0, 2, 3, 1).contiguous().numpy()}
    if b is not None:
        tensors["bias"] = b.numpy()
    if residual:
        r = torch.from_numpy(rng.standard_normal(tuple(y.shape)).astype(np.float32))
        y = y + r
        tensors["residual"] = nhwc(r)
    tensors["y"] = nhwc(act(y, activation))
    params = dict(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw, pad_top=top,
                  pad_left=left, pad_bottom=bottom, pad_right=right, groups=groups, activation=activation)
    return "conv2d", params, tensors


def cases():
    """(name, seed, builder) for every golden file."""
    yield "conv3x3_s1", 1, lambda r: conv_case(r, 2, 9, 9, 16, 16, 3, 1, (1, 1, 1, 1), activation="relu")
    yield "conv3x3_s2", 2, lambda r: conv_case(r, 1, 11, 10, 16, 32, 3, 2, (1, 1, 1, 1))
    yield "conv3x3_residual", 3, lambda r: conv_case(r, 1, 7, 7, 24, 24, 3, 1, (1, 1, 1, 1), activation="relu",
                                                     residual=True)
    yield "conv1x1", 4, lambda r: conv_case(r, 2, 7, 5, 40, 23, 1, activation="relu6")
    yield "conv1x1_s2", 5, lambda r: conv_case(r, 1, 9, 9, 16, 32, 1, 2, bias=False)
    yield "conv5x5_dilated_asym", 6, lambda r: conv_case(r, 1, 12, 13, 6, 10, (5, 3), (2, 1), (3, 1, 0, 2),
                                                         dil=(1, 2), groups=2)
    yield "conv7x7_s3_groups", 7, lambda r: conv_case(r, 2, 15, 15, 9, 12, 7, 3, (3, 3, 3, 3), groups=3)
    yield "conv_stem_1ch", 8, lambda r: conv_case(r, 3, 28, 28, 1, 16, 3, 1, (1, 1, 1, 1), activation="relu")
    yield "depthwise3x3_s1", 9, lambda r: conv_case(r, 2, 14, 14, 48, 48, 3, 1, (1, 1, 1, 1), groups=48,
                                                    activation="relu6")
    yield "depthwise3x3_s2", 10, lambda r: conv_case(r, 1, 15, 14, 37, 37, 3, 2, (1, 1, 1, 1), groups=37)
    yield "depthwise5x5", 11, lambda r: conv_case(r, 1, 9, 8, 20, 20, 5, 1, (2, 2, 2, 2), groups=20,
                                                  activation="relu")
    yield "linear", 12, linear_case
    yield "batchnorm", 13, batchnorm_case
    yield "add_relu", 14, add_case
    yield "max_pool", 15, lambda r: pool_case(r, "max_pool2d", 3, 2, 1)
    yield "avg_pool", 16, lambda r: pool_case(r, "avg_pool2d", 3, 2, 1, count_include_pad=True)
    yield "avg_pool_exclude_pad", 17, lambda r: pool_case(r, "avg_pool2d", 3, 2, 1, count_include_pad=False)
    yield "global_avg_pool", 18, global_pool_case
    yield "softmax", 19, softmax_case


def linear_case(r):
    x = torch.from_numpy(r.standard_normal((5, 70)).astype(np.float32))
    w = torch.from_numpy(r.standard_normal((13, 70)).astype(np.float32) * 0.2)
    b = torch.from_numpy(r.standard_normal(13).astype(np.float32))
    return "linear", dict(activation="none"), {"x": x.numpy(), "weight": w.numpy(), "bias": b.numpy(),
                                               "y": F.linear(x, w, b).numpy()}


def batchnorm_case(r):
    x = torch.from_numpy(r.standard_normal((2, 19, 6, 5)).astype(np.float32))
    g, b, m = (torch.from_numpy(r.standard_normal(19).astype(np.float32)) for _ in range(3))
    v = torch.from_numpy(r.uniform(0.2, 2.0, 19).astype(np.float32))
    y = F.batch_norm(x, m, v, g, b, training=False, eps=1e-5)
    return "batchnorm", dict(eps=1e-5, activation="none"), {"x": nhwc(x), "gamma": g.numpy(), "beta": b.numpy(),
                                                            "mean": m.numpy(), "var": v.numpy(), "y": nhwc(y)}


def add_case(r):
    a = torch.from_numpy(r.standard_normal((2, 21, 5, 6)).astype(np.float32))
    b = torch.from_numpy(r.standard_normal((2, 21, 5, 6)).astype(np.float32))
    return "add", dict(activation="relu"), {"a": nhwc(a), "b": nhwc(b), "y": nhwc(F.relu(a + b))}


def pool_case(r, op, k, s, p, count_include_pad=True):
    x = torch.from_numpy(r.standard_normal((2, 13, 11, 12)).astype(np.float32))
    if op == "max_pool2d":
        y = F.max_pool2d(x, k, s, p)
    else:
        y = F.avg_pool2d(x, k, s, p, count_include_pad=count_include_pad)
    return op, dict(kernel=k, stride=s, pad=p, count_include_pad=count_include_pad), {"x": nhwc(x), "y": nhwc(y)}


def global_pool_case(r):
    x = torch.from_numpy(r.standard_normal((3, 35, 7, 7)).astype(np.float32))
    return "global_avg_pool", {}, {"x": nhwc(x), "y": F.adaptive_avg_pool2d(x, 1).flatten(1).numpy()}


def softmax_case(r):
    x = torch.from_numpy((r.standard_normal((6, 10)) * 5).astype(np.float32))
    x[0, 3] = 80.0  # exp would overflow without the max subtraction
    p = F.softmax(x, dim=1)
    h = torch.distributions.Categorical(probs=p).entropy()
    return "softmax", {}, {"x": x.numpy(), "softmax": p.numpy(), "log_softmax": F.log_softmax(x, dim=1).numpy(),
                           "entropy": h.numpy()}


def build(name, seed, fn):
    torch.manual_seed(seed)
    op, params, tensors = fn(np.random.default_rng(seed))
    meta = {"op": op, "params": json.dumps(params, sort_keys=True), "case": name,
            "generator": "tools/gen_golden.py", "torch": torch.__version__}
    return tensors, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    ap.add_argument("--dir", default=OUT_DIR)
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.dir, exist_ok=True)
    failures = 0
    for name, seed, fn in cases():
        tensors, meta = build(name, seed, fn)
        path = os.path.join(args.dir, name + ".safetensors")
        if not args.check:
            safetensors_io.write(path, tensors, meta)
            continue
        if not os.path.exists(path):
            print(f"FAIL {name}: {path} is missing")
            failures += 1
            continue
        old, old_meta = safetensors_io.read(path)
        problems = []
        if set(old) != set(tensors):
            problems.append(f"tensor names differ: {sorted(old)} vs {sorted(tensors)}")
        for k, v in tensors.items():
            if k not in old:
                continue
            if old[k].shape != v.shape:
                problems.append(f"{k}: shape {old[k].shape} vs {v.shape}")
            elif k in ("y", "softmax", "log_softmax", "entropy"):
                if not same_output(old[k], v):
                    problems.append(f"{k}: max abs diff {np.abs(old[k] - v).max():.3g}")
            elif not np.array_equal(old[k], v):
                problems.append(f"{k}: input differs")
        if old_meta.get("op") != meta["op"] or json.loads(old_meta.get("params", "{}")) != json.loads(meta["params"]):
            problems.append("op or params differ")
        status = "ok  " if not problems else "FAIL"
        print(f"{status} {name}" + ("" if not problems else ": " + "; ".join(problems)))
        failures += bool(problems)
    if args.check:
        print(f"golden vectors: {failures} of {len(list(cases()))} cases differ")
        sys.exit(1 if failures else 0)
    print(f"wrote {len(list(cases()))} golden files to {args.dir}")


if __name__ == "__main__":
    main()
