#!/usr/bin/python3
"""torch.optim golden vectors for edgenn's optimizers (tests/test_optim.cpp).

  /usr/bin/python3 tools/gen_golden_optim.py           # (re)write tests/golden/optim/*.safetensors
  /usr/bin/python3 tools/gen_golden_optim.py --check   # recompute and compare with the committed files

Each case runs torch.optim (CPU, float32, PyTorch 1.13 single-tensor path) for a few steps on
two parameter tensors of odd sizes with random gradients (numpy PCG64, fixed seed) and a
learning rate that changes every step (cosine_lr of tools/train_reference.py). Stored: the
initial parameters p0_<i>, the gradients g_<i> [steps][n], the learning rates lr [steps]
(float64), the parameters after every step p_<i> [steps][n], and the config as JSON metadata.
Decoupled weight decay for SGD (SGDW) is PyTorch's SGD without weight decay after
p.mul_(1 - lr * wd), the rule AdamW uses.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyref import safetensors_io  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "golden", "optim")
STEPS = 6
SIZES = (37, 5)

CASES = {
    "sgd_plain": dict(opt="sgd", lr=0.1),
    "sgd_momentum_wd": dict(opt="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4),
    "sgd_dampening": dict(opt="sgd", lr=0.05, momentum=0.8, dampening=0.3, weight_decay=1e-2),
    "sgd_nesterov_wd": dict(opt="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd_decoupled_wd": dict(opt="sgd", lr=0.1, momentum=0.9, weight_decay=1e-2, decoupled=True),
    "adam": dict(opt="adam", lr=1e-2),
    "adam_wd": dict(opt="adam", lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2),
    "adamw": dict(opt="adamw", lr=1e-2, weight_decay=5e-2),
}


def cosine_lr(base, epoch, step, steps_per_epoch, epochs):
    t = (epoch * steps_per_epoch + step) / (epochs * steps_per_epoch)
    return 0.5 * base * (1.0 + np.cos(np.pi * t))


def run(name, cfg):
    rng = np.random.default_rng([7, len(name), sum(map(ord, name))])
    p0 = [rng.standard_normal(n).astype(np.float32) for n in SIZES]
    grads = [rng.standard_normal((STEPS, n)).astype(np.float32) for n in SIZES]
    params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    wd = cfg.get("weight_decay", 0.0)
    if cfg["opt"] == "sgd":
        opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.0),
                              dampening=cfg.get("dampening", 0.0), nesterov=cfg.get("nesterov", False),
                              weight_decay=0.0 if cfg.get("decoupled") else wd)
    elif cfg["opt"] == "adam":
        opt = torch.optim.Adam(params, lr=cfg["lr"], betas=cfg.get("betas", (0.9, 0.999)),
                               eps=cfg.get("eps", 1e-8), weight_decay=wd)
    else:
        opt = torch.optim.AdamW(params, lr=cfg["lr"], betas=cfg.get("betas", (0.9, 0.999)),
                                eps=cfg.get("eps", 1e-8), weight_decay=wd)
    lrs, hist = [], [[] for _ in SIZES]
    for s in range(STEPS):
        lr = cosine_lr(cfg["lr"], 0, s, STEPS, 2)
        lrs.append(lr)
        for g in opt.param_groups:
            g["lr"] = lr
        for i, p in enumerate(params):
            p.grad = torch.from_numpy(grads[i][s].copy())
        if cfg["opt"] == "sgd" and cfg.get("decoupled"):
            with torch.no_grad():
                for p in params:
                    p.mul_(1 - lr * wd)
        opt.step()
        for i, p in enumerate(params):
            hist[i].append(p.detach().numpy().copy())
    tensors = {"lr": np.array(lrs, dtype=np.float64)}
    for i in range(len(SIZES)):
        tensors[f"p0_{i}"] = p0[i]
        tensors[f"g_{i}"] = grads[i]
        tensors[f"p_{i}"] = np.stack(hist[i])
    meta = {"config": json.dumps(cfg), "torch": torch.__version__}
    return tensors, meta


NET_DIR = os.path.join(OUT_DIR, "net")


def tiny_resnet():
    """A tiny ResNet in training mode, two SGD steps (momentum 0.9, wd 5e-4, cosine lr):
    stem conv3x3(1->4)+BN+ReLU, BasicBlock(4->8, stride 2, 1x1 projection), BasicBlock(8->8),
    global average pooling, linear 8->3, cross-entropy. Stored (edgenn names and layouts:
    NHWC, OHWI): the initial parameters and BN state, the inputs and labels of both steps,
    the loss and logits of step 1, every parameter gradient of step 1 ("grad.<name>"), and
    parameters and running statistics after step 2 ("final.<name>")."""
    torch.manual_seed(0)
    rng = np.random.default_rng([11, 2])
    import torch.nn as nn

    def cbn(cin, cout, k, s):
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout))

    class Block(nn.Module):
        def __init__(self, cin, cout, s):
            super().__init__()
            self.a, self.b = cbn(cin, cout, 3, s), cbn(cout, cout, 3, 1)
            self.d = cbn(cin, cout, 1, s) if (s != 1 or cin != cout) else None

        def forward(self, x):
            sc = self.d(x) if self.d is not None else x
            return torch.relu(self.b(torch.relu(self.a(x))) + sc)

    stem, b0, b1, fc = cbn(1, 4, 3, 1), Block(4, 8, 2), Block(8, 8, 1), nn.Linear(8, 3)
    mods = nn.ModuleList([stem, b0, b1, fc])
    for m in mods.modules():  # non-trivial BN affine parameters and running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.from_numpy(rng.uniform(0.5, 1.5, m.num_features).astype(np.float32))
            m.bias.data = torch.from_numpy(rng.uniform(-0.2, 0.2, m.num_features).astype(np.float32))
            m.running_mean.data = torch.from_numpy(rng.uniform(-0.1, 0.1, m.num_features).astype(np.float32))
            m.running_var.data = torch.from_numpy(rng.uniform(0.8, 1.2, m.num_features).astype(np.float32))

    def run(x):
        h = torch.relu(stem(x))
        h = b1(b0(h))
        return fc(h.mean((2, 3)))

    names = {}  # edgenn name -> torch tensor

    def add_cbn(prefix_conv, prefix_bn, m):
        names[prefix_conv + ".weight"] = m[0].weight
        names[prefix_bn + ".weight"] = m[1].weight
        names[prefix_bn + ".bias"] = m[1].bias
        names[prefix_bn + ".running_mean"] = m[1].running_mean
        names[prefix_bn + ".running_var"] = m[1].running_var

    add_cbn("conv1", "bn1", stem)
    for i, b in enumerate((b0, b1)):
        p = f"layer.{i}"
        add_cbn(p + ".conv1", p + ".bn1", b.a)
        add_cbn(p + ".conv2", p + ".bn2", b.b)
        if b.d is not None:
            add_cbn(p + ".downsample.0", p + ".downsample.1", b.d)
    names["fc.weight"] = fc.weight
    names["fc.bias"] = fc.bias

    def to_np(t):
        a = t.detach().numpy().copy()
        return a.transpose(0, 2, 3, 1).copy() if a.ndim == 4 else a

    tensors = {}
    for k, t in names.items():
        tensors["init." + k] = to_np(t)
    params = [p for p in mods.parameters()]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    mods.train()
    for step in range(2):
        x = rng.standard_normal((5, 1, 7, 7)).astype(np.float32)
        y = rng.integers(0, 3, 5)
        tensors[f"x{step}"] = x.transpose(0, 2, 3, 1).copy()
        tensors[f"y{step}"] = y.astype(np.int32)
        lr = cosine_lr(0.1, 0, step, 2, 1)
        for g in opt.param_groups:
            g["lr"] = lr
        logits = run(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        if step == 0:
            tensors["logits0"] = logits.detach().numpy().copy()
            tensors["loss0"] = np.array([float(loss)], dtype=np.float32)
            for k, t in names.items():
                if t.grad is not None:
                    tensors["grad." + k] = to_np(t.grad)
        opt.step()
    for k, t in names.items():
        tensors["final." + k] = to_np(t)
    return tensors, {"lr": "0.1", "momentum": "0.9", "weight_decay": "5e-4", "steps": "2", "torch": torch.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    bad = 0
    for name, cfg in CASES.items():
        tensors, meta = run(name, cfg)
        path = os.path.join(OUT_DIR, name + ".safetensors")
        if args.check:
            old, _ = safetensors_io.read(path)
            for k, v in tensors.items():
                # Parameters: float steps; the schedule's learning rates: numpy's cos, whose SIMD
                # code differs by an ulp between CPUs; the random inputs: exact.
                tol = 1e-6 if k.startswith("p_") else 1e-15 if k == "lr" else 0
                if old[k].shape != v.shape or np.max(np.abs(old[k] - v) / np.maximum(1, np.abs(v))) > tol:
                    print(f"{name}: {k} differs")
                    bad += 1
        else:
            safetensors_io.write(path, tensors, meta)
            print(f"wrote {path}")
    os.makedirs(NET_DIR, exist_ok=True)
    path = os.path.join(NET_DIR, "tiny_resnet.safetensors")
    tensors, meta = tiny_resnet()
    if args.check:
        old, _ = safetensors_io.read(path)
        for k, v in tensors.items():
            if old[k].shape != v.shape or np.max(np.abs(old[k] - v) / np.maximum(1, np.abs(v))) > 1e-5:
                print(f"tiny_resnet: {k} differs")
                bad += 1
    else:
        safetensors_io.write(path, tensors, meta)
        print(f"wrote {path}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
