#!/usr/bin/python3
"""tools/emit_header.py refuses what the firmware cannot run, naming the tensor or key.

  /usr/bin/python3 examples/firmware/test_emit_header.py weights/meanet_mcu.safetensors

Starts from a valid weights file, breaks one thing at a time (in a temporary copy) and checks
that the emitter fails with a message naming the culprit; the unbroken file must convert, and
its packed arrays must hold exactly the file's weights and biases.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from pyref import safetensors_io  # noqa: E402

EMIT = os.path.join(ROOT, "tools", "emit_header.py")


def run(path, out):
    p = subprocess.run([sys.executable, EMIT, path, "--out", out], capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "weights", "meanet_mcu.safetensors")
    tensors, meta = safetensors_io.read(src)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model.hpp")
        rc, msg = run(src, out)
        if rc != 0:
            print(f"FAIL: the valid file did not convert: {msg}")
            return 1
        # The packed main.fc (64 -> 10, panels of 4 columns: [bias 4][64 x 4]) against the file.
        text = open(out).read()
        body = re.search(r"struct main_fc \{.*?packed\[(\d+)\] = \{(.*?)\};", text, re.S)
        vals = np.array([float.fromhex(v.strip().rstrip("f")) for v in body.group(2).replace("\n", "").split(",")
                         if v.strip()], dtype=np.float32)
        w, b = tensors["main.fc.weight"], tensors["main.fc.bias"]
        panel = vals[:4 * 65].reshape(65, 4)
        if not (np.array_equal(panel[0], b[:4]) and np.array_equal(panel[1:], w[:4].T)):
            print("FAIL: packed main.fc does not hold the file's weights in the scalar panel layout")
            failures += 1
        if len(vals) != int(body.group(1)) or len(vals) != 3 * 65 * 4:
            print(f"FAIL: packed main.fc has {len(vals)} floats, expected {3 * 65 * 4}")
            failures += 1

        def case(name, expect, mutate_tensors=None, mutate_meta=None):
            nonlocal failures
            t = dict(tensors)
            m = dict(meta)
            if mutate_tensors:
                mutate_tensors(t)
            if mutate_meta:
                mutate_meta(m)
            p = os.path.join(tmp, name + ".safetensors")
            safetensors_io.write(p, t, m)
            rc, msg = run(p, out)
            ok = rc != 0 and expect in msg
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {msg.strip()}")
            failures += not ok

        def add(t, k, v):
            t[k] = v

        def drop(t, k):
            del t[k]

        def set_(t, k, v):
            t[k] = v

        case("unfolded_bn", "tensor 'main.layer1.0.bn1.running_mean'",
             lambda t: add(t, "main.layer1.0.bn1.running_mean", np.zeros(16, np.float32)))
        case("missing_tensor", "tensor 'adaptive.blocks.1.conv2.bias'", lambda t: drop(t, "adaptive.blocks.1.conv2.bias"))
        case("wrong_shape", "tensor 'extension.fc.weight'",
             lambda t: set_(t, "extension.fc.weight", np.zeros((5, 33), np.float32)))
        case("non_finite", "tensor 'main.layer3.0.conv2.weight'",
             lambda t: set_(t, "main.layer3.0.conv2.weight",
                            np.where(np.arange(t["main.layer3.0.conv2.weight"].size).reshape(
                                t["main.layer3.0.conv2.weight"].shape) == 7, np.inf,
                                t["main.layer3.0.conv2.weight"]).astype(np.float32)))
        case("not_float32", "tensor 'main.fc.bias'", lambda t: set_(t, "main.fc.bias", t["main.fc.bias"].astype(np.float16)))
        case("unexpected_tensor", "tensor 'extension.blocks.0.extra.weight'",
             lambda t: add(t, "extension.blocks.0.extra.weight", np.zeros(3, np.float32)))
        case("no_router", "edgenn.router", mutate_meta=lambda m: m.pop("edgenn.router"))

        def other_arch(m):
            info = json.loads(m["edgenn.model"])
            info["arch"] = "mobilenet_v2"
            m["edgenn.model"] = json.dumps(info)
        case("other_arch", "architecture 'mobilenet_v2'", mutate_meta=other_arch)
    print("emit_header rejections: " + ("ok" if failures == 0 else f"{failures} FAILED"))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
