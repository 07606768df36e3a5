#!/usr/bin/python3
"""A client of the edgenn cloud protocol written only from docs/protocol.md (pyzmq + numpy).

Run by CTest (net_python_protocol_client). It writes a small model file, asks the server's
helper mode for reference logits, starts `edgenn-cloud` on a loopback port and checks:
classify replies (single, batched, pipelined, float32 input, REQ socket) against the
reference; the stats reply; error replies for malformed messages; graceful shutdown on
SIGTERM with queued requests (all answered, exit status 0); and CURVE with an authorised
and an unauthorised client key.
"""
import argparse
import json
import os
import queue
import re
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import zmq

# docs/protocol.md section 2: 48 bytes, little-endian, no padding.
HEADER = struct.Struct("<4sHHHHB3xQIIIIQ")
MAGIC, VERSION = b"ENN1", 1
CLASSIFY_REQUEST, CLASSIFY_REPLY, ERROR_REPLY, STATS_REQUEST, STATS_REPLY = 1, 2, 3, 4, 5
DT_NONE, DT_UINT8, DT_FLOAT32, DT_UTF8 = 0, 1, 2, 3
FLAG_RETRY = 1
ERRORS = {1: "bad_frames", 2: "bad_header", 3: "unsupported_version", 4: "unknown_type", 5: "bad_dtype",
          6: "bad_size", 7: "bad_shape", 8: "bad_count", 9: "too_large", 10: "overloaded",
          11: "shutting_down", 12: "internal"}
TIMEOUT_MS = 20000  # generous: CI machines are slow, a working server answers in milliseconds

assert HEADER.size == 48


def header(msg_type, request_id, dtype=DT_NONE, dims=(0, 0, 0, 0), payload_bytes=0, flags=0, error=0, version=VERSION):
    return HEADER.pack(MAGIC, version, msg_type, flags, error, dtype, request_id, *dims, payload_bytes)


def classify_request(request_id, images):
    dtype = DT_UINT8 if images.dtype == np.uint8 else DT_FLOAT32
    data = images.astype("<f4").tobytes() if dtype == DT_FLOAT32 else images.tobytes()
    return [header(CLASSIFY_REQUEST, request_id, dtype, images.shape, len(data)), data]


def parse_reply(frames):
    assert len(frames) == 2, f"a reply has 2 frames, got {len(frames)}"
    magic, version, msg_type, flags, error, dtype, rid, d0, d1, d2, d3, nbytes = HEADER.unpack(frames[0])
    assert magic == MAGIC and version == VERSION, (magic, version)
    payload = frames[1]
    assert nbytes == len(payload), (nbytes, len(payload))
    reply = {"type": msg_type, "id": rid, "error": error, "dtype": dtype, "dims": (d0, d1, d2, d3), "payload": payload}
    if msg_type == CLASSIFY_REPLY:
        assert dtype == DT_FLOAT32 and d2 == 1 and d3 == 1
        reply["logits"] = np.frombuffer(payload, "<f4").reshape(d0, d1)
    elif msg_type in (ERROR_REPLY, STATS_REPLY):
        assert dtype == DT_UTF8
        reply["text"] = payload.decode("utf-8")
    return reply


def receive(sock, timeout_ms=TIMEOUT_MS):
    if not sock.poll(timeout_ms):
        return None
    return parse_reply(sock.recv_multipart())


def expect_reply(sock, timeout_ms=TIMEOUT_MS):
    r = receive(sock, timeout_ms)
    assert r is not None, "no reply"
    return r


class Server:
    """edgenn-cloud as a child process; stdout lines are collected by a reader thread."""

    def __init__(self, cloud, args):
        self.proc = subprocess.Popen([cloud] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.log = []
        threading.Thread(target=self._read, daemon=True).start()
        self.endpoint = None
        deadline = time.time() + 60
        while self.endpoint is None:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                self.kill()
                raise RuntimeError(f"edgenn-cloud did not report its endpoint within 60 s; output: {self.log}")
            m = re.search(r"listening on (\S+)", line)
            if m:
                self.endpoint = m.group(1)

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.log.append(line)
            self.lines.put(line)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout=60):
        """The exit status, without signalling: for a server already told to stop (a second
        signal would be a second stop request, or hit the default action once the server has
        finished draining)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def dealer(ctx, endpoint, curve=None):
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    if curve:
        s.curve_serverkey, s.curve_publickey, s.curve_secretkey = curve
    s.connect(endpoint)
    return s


def read_key(path):
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(b"#"):
                return line
    raise ValueError(f"no key in {path}")


def check_plain(args, model, images, reference):
    srv = Server(args.cloud, ["--model", model, "--bind", "tcp://127.0.0.1:*", "--workers", "2",
                              "--max-batch", "8", "--max-wait-ms", "2", "--stats-interval", "0"])
    ctx = zmq.Context()
    try:
        s = dealer(ctx, srv.endpoint)
        n = len(images)

        # One image per request, then several images in one request.
        s.send_multipart(classify_request(1, images[:1]))
        r = expect_reply(s)
        assert r["type"] == CLASSIFY_REPLY and r["id"] == 1, r
        np.testing.assert_allclose(r["logits"], reference[:1], rtol=0, atol=1e-4)
        s.send_multipart(classify_request(2, images))
        r = expect_reply(s)
        assert r["id"] == 2 and r["logits"].shape == reference.shape
        np.testing.assert_allclose(r["logits"], reference, rtol=0, atol=1e-4)

        # Pipelined: every image in flight at once; replies may come in any order.
        for i in range(n):
            s.send_multipart(classify_request(100 + i, images[i:i + 1]))
        seen = {}
        for _ in range(n):
            r = expect_reply(s)
            assert r["type"] == CLASSIFY_REPLY
            seen[r["id"]] = r["logits"]
        assert sorted(seen) == list(range(100, 100 + n))
        for i in range(n):
            np.testing.assert_allclose(seen[100 + i], reference[i:i + 1], rtol=0, atol=1e-4)

        # Stats: the model's input and normalisation, the counters.
        s.send_multipart([header(STATS_REQUEST, 7), b""])
        r = expect_reply(s)
        assert r["type"] == STATS_REPLY and r["id"] == 7
        stats = json.loads(r["text"])
        inp = stats["model"]["input"]
        assert (inp["height"], inp["width"], inp["channels"]) == images.shape[1:], inp
        assert stats["model"]["num_classes"] == reference.shape[1]
        assert stats["requests"] == 2 + n and stats["images"] == 2 * n + 1, stats
        assert stats["protocol_version"] == 1 and stats["state"] == "serving"

        # float32 input, normalised by the client with the mean/std from the stats reply.
        mean, std = np.array(inp["mean"], np.float32), np.array(inp["std"], np.float32)
        x = ((images.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
        s.send_multipart(classify_request(8, x))
        r = expect_reply(s)
        assert r["type"] == CLASSIFY_REPLY, r
        np.testing.assert_allclose(r["logits"], reference, rtol=0, atol=1e-4)

        # A resend (RETRY flag) is answered like the original.
        data = images[:1].tobytes()
        s.send_multipart([header(CLASSIFY_REQUEST, 9, DT_UINT8, images[:1].shape, len(data), flags=FLAG_RETRY), data])
        assert expect_reply(s)["type"] == CLASSIFY_REPLY

        # Malformed messages: error replies with the documented codes; the server keeps serving.
        img = images[:1]
        good = classify_request(42, img)
        bad = [
            ([good[0]], 1, 42),                                                       # one frame
            ([good[0], good[1], b"x"], 1, 42),                                        # three frames
            ([b"garbage", good[1]], 2, 0),                                            # header not 48 bytes
            ([b"XNN1" + good[0][4:], good[1]], 2, 0),                                 # magic
            ([header(CLASSIFY_REQUEST, 42, DT_UINT8, img.shape, img.nbytes, version=2), good[1]], 3, 0),
            ([header(77, 42, DT_UINT8, img.shape, img.nbytes), good[1]], 4, 42),      # unknown type
            ([header(CLASSIFY_REQUEST, 42, DT_UINT8, img.shape, img.nbytes, flags=4), good[1]], 2, 42),
            ([header(CLASSIFY_REQUEST, 42, DT_UTF8, img.shape, img.nbytes), good[1]], 5, 42),
            ([header(CLASSIFY_REQUEST, 42, DT_UINT8, img.shape, img.nbytes), good[1][:-1]], 6, 42),
            ([header(CLASSIFY_REQUEST, 42, DT_UINT8, (1, 27, 28, 1), 27 * 28), b"\0" * (27 * 28)], 7, 42),
            ([header(CLASSIFY_REQUEST, 42, DT_UINT8, (0, 28, 28, 1), 0), b""], 8, 42),
        ]
        for frames, code, rid in bad:
            s.send_multipart(frames)
            r = expect_reply(s)
            assert r["type"] == ERROR_REPLY, r
            assert r["error"] == code, (ERRORS.get(r["error"]), ERRORS[code], r.get("text"))
            assert r["id"] == rid and r["text"], r
        s.send_multipart(good)
        r = expect_reply(s)
        assert r["type"] == CLASSIFY_REPLY and r["id"] == 42
        np.testing.assert_allclose(r["logits"], reference[:1], rtol=0, atol=1e-4)

        # A REQ socket: the server echoes the envelope delimiter.
        q = ctx.socket(zmq.REQ)
        q.linger = 0
        q.connect(srv.endpoint)
        q.send_multipart(classify_request(5, images[:2]))
        assert q.poll(TIMEOUT_MS), "no reply on the REQ socket"
        r = parse_reply(q.recv_multipart())
        np.testing.assert_allclose(r["logits"], reference[:2], rtol=0, atol=1e-4)
        q.close()
        s.close()
        assert srv.stop() == 0, srv.log
        refused = [l for l in srv.log if "refused a message" in l]
        assert len(refused) == len(bad), refused
    finally:
        srv.kill()
        ctx.destroy(linger=0)  # also closes sockets a failed check left open (term() would hang)
    print(f"plain: {n} images, pipelined, float32, REQ, stats and {len(bad)} error replies ok")


def check_graceful_shutdown(args, model, images, reference):
    # Requests wait in the batcher (long max-wait); SIGTERM must still answer all of them.
    srv = Server(args.cloud, ["--model", model, "--bind", "tcp://127.0.0.1:*", "--max-batch", "1000",
                              "--max-wait-ms", "30000", "--stats-interval", "0"])
    ctx = zmq.Context()
    try:
        s = dealer(ctx, srv.endpoint)
        n = len(images)
        for i in range(n):
            s.send_multipart(classify_request(200 + i, images[i:i + 1]))
        s.send_multipart([header(STATS_REQUEST, 300), b""])
        r = expect_reply(s)  # stats are answered at once, the classify requests wait
        assert r["type"] == STATS_REPLY
        assert json.loads(r["text"])["queue"]["requests"] == n
        srv.proc.send_signal(signal.SIGTERM)
        got = {}
        for _ in range(n):
            r = expect_reply(s)
            assert r["type"] == CLASSIFY_REPLY, r
            got[r["id"]] = r["logits"]
        for i in range(n):
            np.testing.assert_allclose(got[200 + i], reference[i:i + 1], rtol=0, atol=1e-4)
        status = srv.wait()
        assert status == 0, (status, srv.log)
        assert any("stopping" in l for l in srv.log), srv.log
        s.close()
    finally:
        srv.kill()
        ctx.destroy(linger=0)  # also closes sockets a failed check left open (term() would hang)
    print(f"graceful shutdown: {n} queued requests answered after SIGTERM, exit status 0")


def check_curve(args, model, images, reference, workdir):
    if not zmq.has("curve"):
        print("curve: skipped (no CURVE in this libzmq)")
        return
    for name in ("server", "edge_ok", "edge_other"):
        subprocess.run([args.keygen, os.path.join(workdir, name), "--force"], check=True, stdout=subprocess.DEVNULL)
    key = lambda n, ext: read_key(os.path.join(workdir, n + ext))
    authorized = os.path.join(workdir, "authorized_keys.txt")
    with open(authorized, "wb") as f:
        f.write(b"# edge devices allowed to use the cloud\n" + key("edge_ok", ".pub") + b"\n")
    srv = Server(args.cloud, ["--model", model, "--bind", "tcp://127.0.0.1:*", "--stats-interval", "0",
                              "--curve-secret-key", os.path.join(workdir, "server.key"),
                              "--authorized-keys", authorized])
    ctx = zmq.Context()
    try:
        server_pub = key("server", ".pub")
        ok = dealer(ctx, srv.endpoint, (server_pub, key("edge_ok", ".pub"), key("edge_ok", ".key")))
        ok.send_multipart(classify_request(1, images[:3]))
        r = expect_reply(ok)
        np.testing.assert_allclose(r["logits"], reference[:3], rtol=0, atol=1e-4)
        other = dealer(ctx, srv.endpoint, (server_pub, key("edge_other", ".pub"), key("edge_other", ".key")))
        other.send_multipart(classify_request(1, images[:1]))
        assert receive(other, 1500) is None, "an unauthorised client got an answer"
        plain = dealer(ctx, srv.endpoint)
        plain.send_multipart(classify_request(1, images[:1]))
        assert receive(plain, 500) is None, "a client without CURVE got an answer"
        for s in (ok, other, plain):
            s.close()
        assert srv.stop() == 0
        assert any("denied a CURVE client" in l for l in srv.log), srv.log
    finally:
        srv.kill()
        ctx.destroy(linger=0)  # also closes sockets a failed check left open (term() would hang)
    print("curve: authorised client served, unauthorised and plain clients got nothing")


def main():
    sys.stdout.reconfigure(line_buffering=True)  # progress lines reach CTest's log even on a timeout
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cloud", required=True, help="edgenn-cloud program")
    ap.add_argument("--model-writer", required=True, help="edgenn-cloud-load program (writes the synthetic model)")
    ap.add_argument("--keygen", required=True, help="edgenn-keygen program")
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)

    model = os.path.join(args.workdir, "model.safetensors")
    subprocess.run([args.model_writer, "--write-model", model, "--depth", "8", "--width", "4"], check=True,
                   stdout=subprocess.DEVNULL)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(12, 28, 28, 1), dtype=np.uint8)
    images_path, logits_path = os.path.join(args.workdir, "images.u8"), os.path.join(args.workdir, "logits.f32")
    images.tofile(images_path)
    subprocess.run([args.cloud, "--model", model, "--infer", images_path, "--out", logits_path], check=True,
                   stdout=subprocess.DEVNULL)
    reference = np.fromfile(logits_path, "<f4").reshape(len(images), -1)

    check_plain(args, model, images, reference)
    check_graceful_shutdown(args, model, images, reference)
    check_curve(args, model, images, reference, args.workdir)
    print("python protocol client: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
