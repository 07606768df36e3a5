"""Minimal safetensors reader/writer (numpy), matching include/edgenn/io/safetensors.hpp.

Layout: u64 little-endian header length N, N bytes of JSON header, tensor bytes. The header
is padded with spaces so the byte buffer starts at a 64-byte file offset; tensors are
stored contiguously in the given order (no holes, as the format requires).
"""
import json
import struct

import numpy as np

_DTYPES = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("int64"): "I64",
           np.dtype("int32"): "I32", np.dtype("int16"): "I16", np.dtype("int8"): "I8",
           np.dtype("uint8"): "U8", np.dtype("uint16"): "U16", np.dtype("uint32"): "U32",
           np.dtype("uint64"): "U64", np.dtype("bool"): "BOOL", np.dtype("float16"): "F16"}
_NAMES = {v: k for k, v in _DTYPES.items()}


def serialize(tensors, metadata=None):
    """tensors: dict name -> numpy array (insertion order is the storage order)."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, off = [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype not in _DTYPES:
            raise ValueError(f"tensor {name!r}: unsupported dtype {arr.dtype}")
        b = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPES[arr.dtype], "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-(8 + len(h))) % 64)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def write(path, tensors, metadata=None):
    import os
    data = serialize(tensors, metadata)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read(path):
    """Returns (dict name -> numpy array, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(raw[base + b:base + e], dtype=_NAMES[info["dtype"]]).reshape(info["shape"]).copy()
    return out, meta
