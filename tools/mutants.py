#!/usr/bin/python3
"""Deliberate kernel bugs: every one must make the test suite fail.

  tools/mutants.py [--build DIR] [--jobs N] [--only NAME,...] [--list]

Copies the working tree (without build/ and .git) to DIR/src, builds the kernel test programs
once unmodified (they must pass), then for each mutant below: changes one line of one kernel
header in the copy, rebuilds the test programs that cover that kernel, runs the cases of the
test files named for it, and expects at least one to fail. A mutant whose tests still pass
"survived": the run ends with exit 1 and names it. The working tree itself is never touched.
`tools/test.sh --only mutants` runs this.

The mutants are small and realistic (an off-by-one on a boundary, a dropped tail iteration,
a stride applied twice, a normalisation swapped), mostly in the SIMD fast paths that the
reference comparison must catch, and one in a naive reference kernel (the fast kernel's tests
then disagree with it).
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = "include/edgenn/kernels/"

# The test program each test file is compiled into (tests/CMakeLists.txt: an area's files are
# one program); a mutant runs only the named files' cases (doctest --source-file).
PROGRAM = {
    "test_conv2d": "test_kernels", "test_depthwise": "test_kernels", "test_kernels": "test_kernels",
    "test_winograd": "test_kernels", "test_backward": "test_kernels",
    "test_golden": "test_models", "test_golden_backward": "test_models",
    "test_train": "test_train",
}

# name, file, exact text (must occur exactly once), replacement, test files that must catch it
MUTANTS = [
    ("conv2d-interior-columns", K + "conv2d.hpp",
     "int xa = int(div_up(p.pad_left, p.stride_w));",
     "int xa = int(p.pad_left / p.stride_w);",  # first unchecked column one too early at stride 2
     ["test_conv2d"]),
    ("depthwise3x3-row-stride", K + "depthwise.hpp",
     "const int y = oy * S - p.pad_top + ky;",
     "const int y = oy * S - p.pad_top + ky * S;",  # kernel rows strided like outputs (s2 only)
     ["test_depthwise"]),
    ("gemm-k-tail", K + "gemm.hpp",
     "for (; k < kc; ++k) {",
     "for (; k + 1 < kc; ++k) {",  # last reduction step dropped when K is not a multiple of the unroll
     ["test_conv2d", "test_kernels"]),
    ("softmax-tail-unshifted", K + "softmax.hpp",
     "const V e = exp(V::load(xr + i) - vmax);",
     "const V e = exp(V::load(xr + i));",  # one vector of the row not shifted by the maximum
     ["test_kernels"]),
    ("avgpool-count-include-pad", K + "pooling.hpp",
     "p.count_include_pad ? (ye - y0) * (xe - x0) : (yi - ys) * (xi - xs)",
     "p.count_include_pad ? (yi - ys) * (xi - xs) : (ye - y0) * (xe - x0)",  # divisor modes swapped
     ["test_kernels"]),
    ("conv2d-weight-grad-not-cleared", K + "conv2d_backward.hpp",
     "for (index_t i = 0; i < wsize; ++i) dw[i] = 0.0f;",
     "for (index_t i = 1; i < wsize; ++i) dw[i] = 0.0f;",  # first weight gradient keeps its old value
     ["test_backward"]),
    ("weight-grad-tap-rows", K + "conv2d_backward.hpp",
     "const int y0 = imax(oy0, ylo), y1 = imin(oy0 + n, yhi);",
     "const int y0 = imax(oy0, ylo), y1 = imin(oy0 + n, yhi - 1);",  # the last in-bounds row dropped
     ["test_backward"]),
    ("input-grad-interior-test", K + "conv2d_backward.hpp",
     "if (row_inside && mx - qx_max >= 0 && mx - tx.q0 < re.OW) {",
     "if (row_inside && mx - qx_max >= -1 && mx - tx.q0 < re.OW) {",  # a border pixel taken as interior
     ["test_backward"]),
    ("partial-input-grad-channels", "include/edgenn/train/layers.hpp",
     "std::copy_n(w + r * l.cin + dx_from, cin, weight_slice.data() + r * cin);",
     "std::copy_n(w + r * l.cin, cin, weight_slice.data() + r * cin);",  # weights of the frozen channels
     ["test_train"]),
    ("winograd-input-grad-unflipped", K + "winograd.hpp",
     "(grad ? 8 - t : t) * tap_stride",
     "t * tap_stride",  # the input gradient correlates with the kernel not turned by 180 degrees
     ["test_winograd"]),
    ("winograd-tile-last-row", K + "winograd.hpp",
     "std::min(T4, out.h() - y0)",
     "std::min(T4 - 1, out.h() - y0)",  # each output tile's last row left unwritten
     ["test_winograd"]),
    ("winograd-sums-one-chunk", K + "winograd.hpp",
     "sums + index_t(p) * cout * cin, t0 > 0);",
     "sums + index_t(p) * cout * cin, false);",  # the weight gradient keeps only the last chunk of tiles
     ["test_winograd"]),
    ("winograd-sums-last-panel-narrow", K + "winograd.hpp",
     "const int pv = need <= 1 ? 1 : need <= 2 ? 2 : 4;",
     "const int pv = need <= 2 ? need : 2;",  # a last column panel of 3 vectors summed on 2
     ["test_winograd"]),
    ("winograd-partial-input-grad", "include/edgenn/train/layers.hpp",
     "kernels::pack_winograd_weights<Arch>(cin, l.cout, w, kernels::WinogradPass::input_grad, nullptr, dst);",
     "kernels::pack_winograd_weights<Arch>(cin, l.cout, l.weight.data(), kernels::WinogradPass::input_grad, nullptr, dst);",
     ["test_train"]),  # the partial input gradient from the whole weights, not the trainable channels'
    ("bn-channel-group-constants", K + "batchnorm_train.hpp",
     "const int c = g0 + i;\n      const double s",
     "const int c = i;\n      const double s",  # every 64-channel group of the BN input gradient uses the first group's constants
     ["test_backward"]),
    ("bn-normalize-group-constants", K + "batchnorm_train.hpp",
     "const int c = g0 + i;\n        mu_g[i]",
     "const int c = i;\n        mu_g[i]",  # every 64-channel group of the BN normalisation uses the first group's statistics
     ["test_backward"]),
    ("slice-weight-grad-overwritten", "include/edgenn/train/layers.hpp",
     "kernels::conv2d_backward_weights<Arch>(p, xs, g, dwr, dbr, w, a > b0)",
     "kernels::conv2d_backward_weights<Arch>(p, xs, g, dwr, dbr, w, false)",
     ["test_train"]),  # each batch slice's dW replaces the previous slices' instead of adding to them
    ("slice-bn-sums-overwritten", "include/edgenn/train/layers.hpp",
     "shift, sums, sums + C, a > b0)",
     "shift, sums, sums + C, false)",
     ["test_train"]),  # the BN statistics of the last batch slice only
    ("bn-mask-from-input-no-invstd", K + "batchnorm_train.hpp",
     "if (gamma) scale = scale * load_n<Arch, F>(gamma + c0, n);",
     "if (gamma) scale = load_n<Arch, F>(gamma + c0, n);",  # the mask recomputed with gamma but not invstd
     ["test_backward", "test_train"]),
    ("producer-sums-wrong-items", "include/edgenn/train/layers.hpp",
     "EDGENN_TRY(producer->add_backward_sums(r, a, xs, items(dx, a, e)));",
     "EDGENN_TRY(producer->add_backward_sums(r, b0, xs, items(dx, a, e)));",
     ["test_train"]),  # the block's first BN sums pair each slice's dx with the range's first items' z
    ("producer-sums-skip-first-slice", "include/edgenn/train/layers.hpp",
     "if (feed_producer) EDGENN_TRY(",
     "if (feed_producer && a > b0) EDGENN_TRY(",
     ["test_train"]),  # the block's first BN sums miss each range's first slice
    ("cross-entropy-label-smoothing", K + "loss.hpp",
     "on = 1.0 - eps + off;",
     "on = 1.0 - eps;",  # target class misses its share of the smoothing mass
     ["test_backward", "test_golden_backward"]),
    ("reference-conv-dilation", K + "reference/conv2d.hpp",
     "const int iy = oy * p.stride_h - p.pad_top + ky * p.dilation_h;",
     "const int iy = oy * p.stride_h - p.pad_top + ky;",  # the naive reference ignores dilation
     ["test_conv2d", "test_golden"]),
]


def log(msg):
    print(msg, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def copy_tree(dst):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    # Fresh timestamps (shutil.copy, not copy2): files restored after an earlier mutant must
    # look newer than the objects built from them, or the baseline would reuse mutant builds.
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(".git", "build", "__pycache__"),
                    copy_function=shutil.copy)


def build(bdir, targets, jobs):
    programs = sorted({PROGRAM[t] for t in targets})
    r = run(["cmake", "--build", bdir, "-j", str(jobs), "--target"] + programs)
    if r.returncode != 0:
        sys.exit(f"mutants: build of {' '.join(programs)} failed:\n{r.stdout[-4000:]}")


def run_tests(bdir, targets, timeout):
    """Returns the test files whose cases failed (non-zero exit or timeout)."""
    failed = []
    for t in targets:
        try:
            r = run([os.path.join(bdir, "tests", PROGRAM[t]), f"--source-file=*/{t}.cpp", "--no-intro=true",
                     "--minimal=true"], timeout=timeout, cwd=bdir)
            if r.returncode != 0:
                failed.append(t)
        except subprocess.TimeoutExpired:
            failed.append(t + " (timeout)")
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "mutants"), help="scratch directory")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--only", default="", help="comma-separated mutant names")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per test program")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    mutants = MUTANTS
    if args.only:
        names = args.only.split(",")
        unknown = [n for n in names if n not in {m[0] for m in MUTANTS}]
        if unknown:
            sys.exit(f"mutants: unknown mutant(s) {', '.join(unknown)}; --list shows them")
        mutants = [m for m in MUTANTS if m[0] in names]
    if args.list:
        for name, path, old, new, targets in mutants:
            print(f"{name:32s} {path}: '{old}' -> '{new}'  [{', '.join(targets)}]")
        return 0

    scratch = os.path.abspath(args.build)
    src, bdir = os.path.join(scratch, "src"), os.path.join(scratch, "build")
    log(f"mutants: copying the working tree to {src}")
    copy_tree(src)
    # Each mutation must apply to the tree as it is: an edit elsewhere must not silently turn
    # a mutant into a no-op.
    for name, path, old, new, targets in mutants:
        n = open(os.path.join(src, path)).read().count(old)
        if n != 1:
            sys.exit(f"mutants: {name}: '{old}' occurs {n} times in {path} (must be once); update tools/mutants.py")
    r = run(["cmake", "-S", src, "-B", bdir, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DEDGENN_NATIVE=ON",
             "-DEDGENN_BUILD_TOOLS=OFF", "-DEDGENN_BUILD_EXAMPLES=OFF"])
    if r.returncode != 0:
        sys.exit(f"mutants: configure failed:\n{r.stdout[-4000:]}")
    all_targets = sorted({t for m in mutants for t in m[4]})
    t0 = time.time()
    build(bdir, all_targets, args.jobs)
    failed = run_tests(bdir, all_targets, args.timeout)
    if failed:
        sys.exit(f"mutants: the unmodified tree already fails {', '.join(failed)}: fix that first")
    log(f"mutants: unmodified tree passes {', '.join(all_targets)} ({time.time() - t0:.0f} s)")

    survivors = []
    log(f"{'mutant':32s} {'result':8s} {'caught by':40s} time")
    for name, path, old, new, targets in mutants:
        t0 = time.time()
        file = os.path.join(src, path)
        original = open(file).read()
        try:
            with open(file, "w") as f:
                f.write(original.replace(old, new))
            build(bdir, targets, args.jobs)
            failed = run_tests(bdir, targets, args.timeout)
        finally:
            with open(file, "w") as f:
                f.write(original)
        result = "killed" if failed else "SURVIVED"
        if not failed:
            survivors.append(name)
        log(f"{name:32s} {result:8s} {', '.join(failed) or '-':40s} {time.time() - t0:.0f} s")
    if survivors:
        log(f"mutants: {len(survivors)} of {len(mutants)} survived (the tests did not notice): {', '.join(survivors)}")
        return 1
    log(f"mutants: all {len(mutants)} deliberate kernel bugs make the tests fail")
    return 0


if __name__ == "__main__":
    sys.exit(main())
