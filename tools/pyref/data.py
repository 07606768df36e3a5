"""Fashion-MNIST loading, the fixed validation split, and augmentation.

The split rule is shared with the C++ trainer (include/edgenn/train/data.hpp) and
documented in docs/data.md: training image i (0-based, file order) belongs to the
validation split iff i % 12 == 11. That gives 5000 validation and 55000 training
images; the 10k test set is never used for any choice.
"""
import gzip
import os
import struct

import numpy as np

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN = 0.2860
STD = 0.3530
VAL_MODULUS = 12
VAL_REMAINDER = 11


def _read_idx(path, expected_magic):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: truncated IDX header")
    magic, count = struct.unpack(">II", raw[:8])
    if magic != expected_magic:
        raise ValueError(f"{path}: bad IDX magic 0x{magic:08x}, expected 0x{expected_magic:08x}")
    if expected_magic == 0x803:
        rows, cols = struct.unpack(">II", raw[8:16])
        data = np.frombuffer(raw, dtype=np.uint8, offset=16)
        if data.size != count * rows * cols:
            raise ValueError(f"{path}: expected {count * rows * cols} pixels, found {data.size}")
        return data.reshape(count, rows, cols)
    data = np.frombuffer(raw, dtype=np.uint8, offset=8)
    if data.size != count:
        raise ValueError(f"{path}: expected {count} labels, found {data.size}")
    return data


def load_split(split, root=DEFAULT_ROOT):
    """Returns (images uint8 [N,28,28], labels int64 [N]) for 'train', 'val', 'trainval' or 'test'."""
    if split == "test":
        x = _read_idx(os.path.join(root, "t10k-images-idx3-ubyte.gz"), 0x803)
        y = _read_idx(os.path.join(root, "t10k-labels-idx1-ubyte.gz"), 0x801)
        return x, y.astype(np.int64)
    x = _read_idx(os.path.join(root, "train-images-idx3-ubyte.gz"), 0x803)
    y = _read_idx(os.path.join(root, "train-labels-idx1-ubyte.gz"), 0x801).astype(np.int64)
    if split == "trainval":
        return x, y
    is_val = (np.arange(len(y)) % VAL_MODULUS) == VAL_REMAINDER
    if split == "val":
        return x[is_val], y[is_val]
    if split == "train":
        return x[~is_val], y[~is_val]
    raise ValueError(f"unknown split {split!r}")


def normalize(images_u8):
    """uint8 [N,28,28] -> float32 [N,1,28,28], (x/255 - MEAN) / STD."""
    x = images_u8.astype(np.float32) / 255.0
    return ((x - MEAN) / STD)[:, None, :, :]


def augment(batch_u8, rng, pad=2, flip=True, erase=0.0):
    """Random crop with zero padding (in pixel space, before normalisation) and horizontal flip.

    The same rule is implemented by the C++ trainer: offsets dy,dx uniform in [0, 2*pad],
    flip with probability 1/2, drawn per image in that order. With erase > 0, random erasing
    (Zhong et al. 2020) follows: see erase_random().
    """
    n, h, w = batch_u8.shape
    padded = np.zeros((n, h + 2 * pad, w + 2 * pad), dtype=np.uint8)
    padded[:, pad:pad + h, pad:pad + w] = batch_u8
    out = np.empty_like(batch_u8)
    offs = rng.integers(0, 2 * pad + 1, size=(n, 2))
    flips = rng.integers(0, 2, size=n) if flip else np.zeros(n, dtype=np.int64)
    for i in range(n):
        dy, dx = offs[i]
        crop = padded[i, dy:dy + h, dx:dx + w]
        out[i] = crop[:, ::-1] if flips[i] else crop
    if erase > 0:
        erase_random(out, rng, erase)
    return out


def erase_random(batch_u8, rng, prob, area=(0.02, 0.4), aspect=(0.3, 3.3)):
    """Random erasing in place: with probability prob, one rectangle of each image (area a
    uniform fraction of the image, log-uniform aspect ratio) is filled with uniform random
    pixels. Used by the cloud recipe only (the C++ trainer's recipes do not erase)."""
    n, h, w = batch_u8.shape
    for i in range(n):
        if rng.random() >= prob:
            continue
        for _ in range(10):  # retry when the rectangle does not fit
            target = rng.uniform(*area) * h * w
            ratio = np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1])))
            eh, ew = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
            if 0 < eh < h and 0 < ew < w:
                y0, x0 = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
                batch_u8[i, y0:y0 + eh, x0:x0 + ew] = rng.integers(0, 256, size=(eh, ew), dtype=np.uint8)
                break
