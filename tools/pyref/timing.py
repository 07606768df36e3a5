"""Median wall time of a call: the Python side of bench/median_time.hpp (same procedure)."""
import time


def median_seconds(fn, min_time, warmup):
    """Median seconds per call over at least min_time seconds and 5 calls, after warmup calls."""
    for _ in range(warmup):
        fn()
    t = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(t) < 5:
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    t.sort()
    return t[len(t) // 2]
