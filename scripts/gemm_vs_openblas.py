#!/usr/bin/env python3
"""Times nnkern's `cblas_sgemm` (from the cdylib) beside numpy's OpenBLAS, in
one process, on the shapes of the project's anchors, and prints GFLOP/s and
the ratio per shape.

    cargo build --release
    pip install numpy
    python3 scripts/gemm_vs_openblas.py --threads 1
    python3 scripts/gemm_vs_openblas.py --threads 2

Each library is called the way a user would: ours through the standard CBLAS
signature (row-major, `CblasTrans` for the transposed views), numpy through
`matmul` on the same arrays (a transposed view is `.T` of a row-major array).
The two are timed alternately, repeat by repeat, and each result is checked
against the other. With one thread the clock is this thread's CPU time, which
other processes on a shared machine do not inflate; with more, wall time.
"""

import argparse
import ctypes
import os
import statistics
import sys
import time

CBLAS_ROW_MAJOR = 101
CBLAS_NO_TRANS = 111
CBLAS_TRANS = 112

# (name, M, K, N, A is a transposed view, B is a transposed view)
SHAPES = [
    ("64^2", 64, 64, 64, False, False),
    ("128^2", 128, 128, 128, False, False),
    ("256^2", 256, 256, 256, False, False),
    ("512^2", 512, 512, 512, False, False),
    ("1024^2", 1024, 1024, 1024, False, False),
    ("2048^2", 2048, 2048, 2048, False, False),
    ("(32,784,500)", 32, 784, 500, False, False),
    ("(32,784,500) B=T", 32, 784, 500, False, True),
    ("(32,500,10)", 32, 500, 10, False, False),
    ("(784,32,500)", 784, 32, 500, False, False),
    ("(784,32,500) A=T", 784, 32, 500, True, False),
    ("(500,32,10) A=T", 500, 32, 10, True, False),
    ("(32,10,500)", 32, 10, 500, False, False),
    ("(32,10,500) B=T", 32, 10, 500, False, True),
    ("(32,500,784)", 32, 500, 784, False, False),
    ("(32,500,784) B=T", 32, 500, 784, False, True),
    ("(8000,784,500)", 8000, 784, 500, False, False),
]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lib", default=os.path.join(here, "..", "target", "release", "libnnkern.so"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per library per shape")
    args = parser.parse_args()

    # Both libraries read their thread count at load time.
    os.environ["NNKERN_NUM_THREADS"] = str(args.threads)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    try:
        import numpy as np
    except ImportError:
        sys.exit("numpy is not installed: pip install numpy")

    if not os.path.exists(args.lib):
        sys.exit(f"{args.lib} not found: build it with `cargo build --release`")
    lib = ctypes.CDLL(os.path.abspath(args.lib))
    try:
        sgemm = lib.cblas_sgemm
    except AttributeError:
        print(f"error: {args.lib} does not export cblas_sgemm (this build has no C ABI)", file=sys.stderr)
        sys.exit(2)
    c_int, c_float, fp = ctypes.c_int, ctypes.c_float, ctypes.POINTER(ctypes.c_float)
    sgemm.argtypes = [c_int, c_int, c_int, c_int, c_int, c_int, c_float, fp, c_int, fp, c_int, c_float, fp, c_int]
    sgemm.restype = None

    clock = time.thread_time if args.threads == 1 else time.perf_counter
    blas = [
        b.get("version", "?") + " " + b.get("name", "")
        for b in [np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})]
    ][0]
    print(f"numpy {np.__version__} ({blas.strip()}), threads {args.threads}, "
          f"clock {'thread CPU time' if args.threads == 1 else 'wall'}")
    print(f"{'shape (M,K,N)':>18} {'nnkern':>8} {'OpenBLAS':>9} {'ratio':>6}   GFLOP/s, medians")

    rng = np.random.default_rng(0)
    ratios = []
    for name, m, k, n, a_t, b_t in SHAPES:
        a_store = rng.standard_normal((k, m) if a_t else (m, k), dtype=np.float32)
        b_store = rng.standard_normal((n, k) if b_t else (k, n), dtype=np.float32)
        a = a_store.T if a_t else a_store
        b = b_store.T if b_t else b_store
        c_ours = np.zeros((m, n), dtype=np.float32)
        c_np = np.zeros((m, n), dtype=np.float32)
        pa = a_store.ctypes.data_as(fp)
        pb = b_store.ctypes.data_as(fp)
        pc = c_ours.ctypes.data_as(fp)
        ta, tb = (CBLAS_TRANS if a_t else CBLAS_NO_TRANS), (CBLAS_TRANS if b_t else CBLAS_NO_TRANS)
        lda, ldb = a_store.shape[1], b_store.shape[1]

        def ours():
            sgemm(CBLAS_ROW_MAJOR, ta, tb, m, n, k, 1.0, pa, lda, pb, ldb, 0.0, pc, n)

        def theirs():
            np.matmul(a, b, out=c_np)

        ours()
        theirs()
        err = float(np.max(np.abs(c_ours - c_np))) if m * n else 0.0
        scale = float(np.max(np.abs(a)) * np.max(np.abs(b)) * k) if m * n * k else 1.0
        if err > 1e-5 * scale:
            sys.exit(f"{name}: results differ by {err} (scale {scale})")

        flops = 2.0 * m * n * k
        # Repeats per timed sample so that one sample takes ~2 ms or more.
        t0 = clock()
        ours()
        one = max(clock() - t0, 1e-7)
        reps = max(1, int(0.002 / one))
        samples = max(5, int(args.min_time / (one * reps)))
        t_ours, t_np = [], []
        for _ in range(samples):
            for f, out in ((ours, t_ours), (theirs, t_np)):
                t0 = clock()
                for _ in range(reps):
                    f()
                out.append((clock() - t0) / reps)
        g_ours = flops / statistics.median(t_ours) / 1e9
        g_np = flops / statistics.median(t_np) / 1e9
        ratios.append(g_ours / g_np)
        print(f"{name:>18} {g_ours:8.1f} {g_np:9.1f} {g_ours / g_np:6.2f}")
    print(f"geometric mean of ratios: {statistics.geometric_mean(ratios):.2f}")


if __name__ == "__main__":
    main()
