#!/usr/bin/python3
"""Write the sample images of examples/classify_images/samples from the Fashion-MNIST test set.

  /usr/bin/python3 tools/make_sample_images.py [--out examples/classify_images/samples]

Two images per class as 28x28 grayscale PNG (test images 0.., named INDEX_CLASS.png, the
pixels exactly those of the IDX file), two of them also as JPEG, and one 112x112 RGB PNG
with inverted grey levels (a "photo": exercises colour conversion, resizing and --invert).
PNGs are written with zlib only; JPEGs need python3-pil.
"""
import argparse
import os
import struct
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyref import data  # noqa: E402

CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def write_png(path, img):
    """img: HxW (grey) or HxWx3 (RGB) uint8."""
    h, w = img.shape[:2]
    color = 2 if img.ndim == 3 else 0
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                  "examples", "classify_images", "samples"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    x, y = data.load_split("test")
    picked = []
    for c in range(10):
        picked += [int(i) for i in np.flatnonzero(y == c)[:2]]
    for i in sorted(picked):
        write_png(os.path.join(a.out, f"{i:04d}_{CLASSES[y[i]]}.png"), x[i])
    try:
        from PIL import Image
        for i in sorted(picked)[:2]:
            Image.fromarray(x[i]).save(os.path.join(a.out, f"{i:04d}_{CLASSES[y[i]]}.jpg"), quality=95)
    except ImportError:
        print("python3-pil missing: no JPEG samples written")
    i = sorted(picked)[2]
    big = np.kron(255 - x[i], np.ones((4, 4), dtype=np.uint8))
    write_png(os.path.join(a.out, f"photo_inverted_{i:04d}_{CLASSES[y[i]]}.png"), np.stack([big] * 3, axis=-1))
    print(f"wrote {len(picked)} PNG + JPEG + photo samples to {a.out}")


if __name__ == "__main__":
    main()
