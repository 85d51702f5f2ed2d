#!/usr/bin/env python3
"""Times nnkern's `cblas_sgemm` beside OpenBLAS and BLIS, in one process, and
prints one Markdown table (GFLOP/s per library, nnkern's share of the measured
FMA peak, nnkern ÷ the best peer).

    cargo build --release
    python3 scripts/gemm_peers.py                    # 1 and 2 threads, every shape
    python3 scripts/gemm_peers.py --threads 1 --shapes squares,training
    python3 scripts/gemm_peers.py --isa avx2         # nnkern and the peers on their AVX2 kernels
    python3 scripts/gemm_peers.py --extra old=/path/to/other/libnnkern.so

The peers, installed when missing (so it works on a fresh Debian/Ubuntu machine):
- OpenBLAS as numpy bundles it (`numpy.libs/libscipy_openblas64_*.so`, ILP64,
  symbol `scipy_cblas_sgemm64_`); numpy goes into a private virtual environment,
  `target/peers-venv`, and is only the carrier of that library: this script
  loads it with ctypes and never imports numpy.
- BLIS from Debian's `libblis4-pthread` (apt-get). Installing it makes BLIS the
  system's `libblas.so.3`; the script puts the netlib reference back afterwards
  (`update-alternatives --set libblas.so.3-x86_64-linux-gnu
  /usr/lib/x86_64-linux-gnu/blas/libblas.so.3`) when that is installed.

Method. Every library is called as a user would: the CBLAS signature, row-major,
`CblasTrans` for a transposed view ("A=T": op(A) is the transpose of a row-major
k×m array). All libraries live in this one process and are timed alternately,
repeat by repeat, in an order that rotates each repeat; the figure is the median.
With one thread the clock is this thread's CPU time (every library computes on
the calling thread then), which other processes on a shared machine do not
inflate; with more threads it is wall time, and after each sample the script
waits until the process is idle, so one library's spinning workers do not steal
cores from the next; rows above one thread also time nnkern at one thread on
the same wall clock, for the last column (two threads against one). The thread count is set through each library's own call
(`nnkern_set_num_threads`, `openblas_set_num_threads`,
`bli_thread_set_num_threads`), after the environment variables (NNKERN_NUM_THREADS,
OPENBLAS_NUM_THREADS, BLIS_NUM_THREADS) sized the pools before loading. Each
result is checked against OpenBLAS's: |x − y| ≤ 2·γ_{k+2}·(|A|·|B|)_ij.
The calls of a sample run in a loop compiled at start-up with the system's C
compiler (`cc`), so a call costs what it costs a C caller: through ctypes each
call adds a few µs of Python (about 3.5–4 µs on a Zen 5 core), which pulls the
ratios of µs-sized products towards 1. Without `cc` the calls go through ctypes
and the header says so.

`--extra LABEL=PATH` adds other builds of nnkern (e.g. an older commit's
`libnnkern.so`) as further columns, timed alternately with the rest; `--isa`
forces the ISA nnkern dispatches (NNKERN_ISA) and, unless `--peers-native`,
OpenBLAS's matching kernels (OPENBLAS_CORETYPE); BLIS keeps its own choice
(the header names every library's kernel). Needs Linux x86-64,
Python 3.9+ (stdlib + ctypes).
"""

import argparse
import array
import ctypes
import glob
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "target", "peers-venv")
BLIS_SO = "/usr/lib/x86_64-linux-gnu/blis-pthread/libblis.so.4"
NETLIB_BLAS = "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3"
BLAS_ALTERNATIVE = "libblas.so.3-x86_64-linux-gnu"

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

# (group, name, M, K, N, A is a transposed view, B is a transposed view)
SHAPES = [
    ("small", "64^2", 64, 64, 64, False, False),
    ("small", "128^2", 128, 128, 128, False, False),
    ("small", "(48,64,64)", 48, 64, 64, False, False),
    ("small", "(64,128,64)", 64, 128, 64, False, False),
    ("squares", "256^2", 256, 256, 256, False, False),
    ("squares", "512^2", 512, 512, 512, False, False),
    ("squares", "1024^2", 1024, 1024, 1024, False, False),
    ("squares", "2048^2", 2048, 2048, 2048, False, False),
    ("training", "(32,784,500)", 32, 784, 500, False, False),
    ("training", "(32,784,500) B=T", 32, 784, 500, False, True),
    ("training", "(32,500,784)", 32, 500, 784, False, False),
    ("training", "(32,500,784) B=T", 32, 500, 784, False, True),
    ("training", "(784,32,500)", 784, 32, 500, False, False),
    ("training", "(784,32,500) A=T", 784, 32, 500, True, False),
    ("tiny", "(32,500,10)", 32, 500, 10, False, False),
    ("tiny", "(32,500,10) B=T", 32, 500, 10, False, True),
    ("tiny", "(500,32,10)", 500, 32, 10, False, False),
    ("tiny", "(500,32,10) A=T", 500, 32, 10, True, False),
    ("tiny", "(32,10,500)", 32, 10, 500, False, False),
    ("tiny", "(32,10,500) B=T", 32, 10, 500, False, True),
    ("big", "(8000,784,500)", 8000, 784, 500, False, False),
]

# OpenBLAS's name for the kernels matching nnkern's forced ISA. (BLIS 0.9
# takes BLIS_ARCH_TYPE only as a numeric id and aborts on an id its build
# lacks, so it keeps its own choice; the header names the kernel it runs.)
OPENBLAS_CORES = {"avx2": "Haswell", "avx512": "SkylakeX"}


def note(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    note("+ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------- peers setup


PYLIB = os.path.join(ROOT, "target", "peers-pylib")


def numpy_dir(python, path=None):
    """numpy's package directory and version as `python` sees it (with
    `path` first on its module path), or None."""
    env = dict(os.environ, PYTHONPATH=path) if path else None
    try:
        out = subprocess.run(
            [python, "-c", "import os, numpy; print(os.path.dirname(numpy.__file__)); print(numpy.__version__)"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.split("\n")
        return out[0], out[1]
    except (OSError, subprocess.CalledProcessError):
        return None


def find_openblas(args):
    """(path, description) of numpy's bundled OpenBLAS, installing numpy into
    the private venv when no interpreter at hand has it."""
    if args.openblas:
        return args.openblas, "given"
    venv_python = os.path.join(VENV, "bin", "python")
    found = numpy_dir(venv_python) if os.path.exists(venv_python) else None
    if found is None and os.path.isdir(PYLIB):
        found = numpy_dir(sys.executable, PYLIB)
    if found is None:
        found = numpy_dir(sys.executable)
    if found is None:
        if args.no_install:
            return None, "numpy not found (--no-install)"
        note(f"installing numpy into {VENV} (the OpenBLAS carrier)")
        try:
            run([sys.executable, "-m", "venv", VENV])
            run([venv_python, "-m", "pip", "install", "--quiet", "numpy"])
            found = numpy_dir(venv_python)
        except (OSError, subprocess.CalledProcessError):
            # No venv module (Debian without python3-venv): a plain target dir.
            note(f"venv failed; installing numpy into {PYLIB} instead")
            try:
                run([sys.executable, "-m", "pip", "install", "--quiet", "--target", PYLIB, "numpy"])
                found = numpy_dir(sys.executable, PYLIB)
            except (OSError, subprocess.CalledProcessError):
                found = None
        if found is None:
            return None, "numpy could not be installed (pip, venv)"
    pkg, version = found
    libs = sorted(glob.glob(os.path.join(os.path.dirname(pkg), "numpy.libs", "libscipy_openblas*.so*")))
    if not libs:
        return None, f"numpy {version} at {pkg} bundles no libscipy_openblas (a system BLAS build?)"
    return libs[0], f"numpy {version}"


def as_root(cmd):
    return cmd if os.geteuid() == 0 else ["sudo", "-n"] + cmd


def find_blis(args):
    """Path of Debian's pthreads BLIS, installing `libblis4-pthread` when
    missing and restoring the netlib `libblas.so.3` alternative afterwards."""
    if args.blis:
        return args.blis
    if os.path.exists(BLIS_SO):
        return BLIS_SO
    if args.no_install or not shutil.which("apt-get"):
        note("BLIS not found (no apt-get, or --no-install): its column is left out")
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        try:
            run(as_root(["apt-get", "install", "-y", "-qq", "libblis4-pthread"]), env=env)
        except subprocess.CalledProcessError:
            run(as_root(["apt-get", "update", "-qq"]), env=env)
            run(as_root(["apt-get", "install", "-y", "-qq", "libblis4-pthread"]), env=env)
    except (OSError, subprocess.CalledProcessError) as e:
        note(f"installing libblis4-pthread failed ({e}): BLIS is left out")
        return None
    if os.path.exists(NETLIB_BLAS):
        run(as_root(["update-alternatives", "--set", BLAS_ALTERNATIVE, NETLIB_BLAS]))
    else:
        note(f"note: {NETLIB_BLAS} (netlib libblas3) is not installed, so BLIS stays the system's libblas.so.3")
    return BLIS_SO if os.path.exists(BLIS_SO) else None


# ------------------------------------------------------------------ libraries

c_int, c_i64, c_float, c_double, c_char_p = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_double, ctypes.c_char_p
FP = ctypes.POINTER(ctypes.c_float)


class Lib:
    """One `cblas_sgemm` provider."""

    def __init__(self, label, path, symbol, int_type, set_threads):
        self.label = label
        self.path = path
        # A private copy of a library loaded twice (two nnkern builds share a
        # soname) would be the same handle; distinct paths load distinct copies.
        self.dll = ctypes.CDLL(path)
        self.fn = getattr(self.dll, symbol)
        i = int_type
        self.fn.argtypes = [c_int, c_int, c_int, i, i, i, c_float, FP, i, FP, i, c_float, FP, i]
        self.fn.restype = None
        self._set_threads = set_threads
        self.info = ""

    def set_threads(self, n):
        self._set_threads(self.dll, n)

    def sgemm(self, ta, tb, m, n, k, a, lda, b, ldb, c, ldc):
        self.fn(ROW_MAJOR, ta, tb, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, ldc)

    def sgemm_loop(self, iters, ta, tb, m, n, k, a, lda, b, ldb, c, ldc):
        """`iters` calls, in the compiled loop when there is one."""
        if LOOP is None:
            for _ in range(iters):
                self.sgemm(ta, tb, m, n, k, a, lda, b, ldb, c, ldc)
            return
        loop = LOOP.loop64 if self.fn.argtypes[3] is c_i64 else LOOP.loop32
        loop(ctypes.cast(self.fn, ctypes.c_void_p), iters, ROW_MAJOR, ta, tb, m, n, k, a, lda, b, ldb, c, ldc)


# The timed loop, in C: `iters` calls of a CBLAS sgemm (32- or 64-bit integers).
LOOP_C = r"""
#include <stdint.h>
typedef void (*sgemm32)(int, int, int, int, int, int, float, const float *, int,
                        const float *, int, float, float *, int);
typedef void (*sgemm64)(int, int, int, int64_t, int64_t, int64_t, float, const float *,
                        int64_t, const float *, int64_t, float, float *, int64_t);
void loop32(void *f, int64_t iters, int order, int ta, int tb, int64_t m, int64_t n,
            int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, float *c,
            int64_t ldc) {
    for (int64_t i = 0; i < iters; i++)
        ((sgemm32)f)(order, ta, tb, (int)m, (int)n, (int)k, 1.0f, a, (int)lda, b, (int)ldb,
                     0.0f, c, (int)ldc);
}
void loop64(void *f, int64_t iters, int order, int ta, int tb, int64_t m, int64_t n,
            int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, float *c,
            int64_t ldc) {
    for (int64_t i = 0; i < iters; i++)
        ((sgemm64)f)(order, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
}
"""


def compile_loop():
    """The compiled call loop (ctypes handle), or None (and why) without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None, "no C compiler (cc) found"
    out_dir = os.path.join(ROOT, "target", "gemm-peers")
    os.makedirs(out_dir, exist_ok=True)
    src, so = os.path.join(out_dir, "loop.c"), os.path.join(out_dir, "loop.so")
    with open(src, "w") as f:
        f.write(LOOP_C)
    done = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", so, src], capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"{cc} failed: {done.stderr.strip()[:200]}"
    dll = ctypes.CDLL(so)
    args = [ctypes.c_void_p, c_i64, c_int, c_int, c_int, c_i64, c_i64, c_i64, FP, c_i64, FP, c_i64, FP, c_i64]
    for name in ("loop32", "loop64"):
        getattr(dll, name).argtypes = args
        getattr(dll, name).restype = None
    return dll, cc


LOOP = None


def optional(dll, name, restype, argtypes=()):
    try:
        f = getattr(dll, name)
    except AttributeError:
        return None
    f.restype, f.argtypes = restype, list(argtypes)
    return f


def load_nnkern(label, path):
    def set_threads(dll, n):
        f = optional(dll, "nnkern_set_num_threads", c_int, [c_i64])
        if f is None or f(n) != 0:
            raise SystemExit(f"{path}: nnkern_set_num_threads({n}) failed")

    lib = Lib(label, path, "cblas_sgemm", c_int, set_threads)
    active = optional(lib.dll, "nnkern_active_isa", c_int)
    name = optional(lib.dll, "nnkern_isa_name", c_char_p, [c_int])
    lib.isa = name(active()).decode() if active and name else "?"
    peak = optional(lib.dll, "nnkern_fma_peak_gflops", c_double)
    lib.peak = peak() if peak else None
    version = optional(lib.dll, "nnkern_version", c_char_p)
    lib.info = f"nnkern {version().decode() if version else '?'} ({path}), ISA {lib.isa}"
    return lib


def load_openblas(path, how):
    def set_threads(dll, n):
        for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads"):
            f = optional(dll, name, None, [c_int])
            if f is not None:
                f(n)
                return
        raise SystemExit(f"{path}: no openblas_set_num_threads")

    symbol = "scipy_cblas_sgemm64_"
    lib = Lib("OpenBLAS", path, symbol, c_i64, set_threads)
    config = optional(lib.dll, "scipy_openblas_get_config64_", c_char_p)
    core = optional(lib.dll, "scipy_openblas_get_corename64_", c_char_p)
    lib.info = (
        f"OpenBLAS {config().decode().split()[1] if config else '?'} ({how}), "
        f"kernel {core().decode() if core else '?'}"
    )
    return lib


def load_blis(path):
    def set_threads(dll, n):
        f = optional(dll, "bli_thread_set_num_threads", None, [c_i64])
        if f is None:
            raise SystemExit(f"{path}: no bli_thread_set_num_threads")
        f(n)

    lib = Lib("BLIS", path, "cblas_sgemm", c_int, set_threads)
    version = optional(lib.dll, "bli_info_get_version_str", c_char_p)
    arch_id = optional(lib.dll, "bli_arch_query_id", c_int)
    arch_str = optional(lib.dll, "bli_arch_string", c_char_p, [c_int])
    arch = arch_str(arch_id()).decode() if arch_id and arch_str else "?"
    lib.info = f"BLIS {version().decode() if version else '?'} (Debian libblis4-pthread), kernel {arch}"
    return lib


# ---------------------------------------------------------------- measuring


def cpu_model():
    fields = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return (
        f"{fields.get('Model name', '?')} (family {fields.get('CPU family', '?')}, "
        f"model {fields.get('Model', '?')}, {os.cpu_count()} CPUs)"
    )


def load_average():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def matrix(rows, cols, rng):
    data = array.array("f", (rng.random() - 0.5 for _ in range(rows * cols)))
    return data, (ctypes.c_float * len(data)).from_buffer(data)


def wait_idle(limit=1.0):
    """Sleeps until this process uses (almost) no CPU: the previous library's
    worker threads have stopped spinning."""
    t_end = time.perf_counter() + limit
    while time.perf_counter() < t_end:
        c0 = time.process_time()
        time.sleep(0.005)
        if time.process_time() - c0 < 0.0005:
            return


def check(name, k, m, n, got, want, scale):
    """|got − want| ≤ 2·γ_{k+2}·scale elementwise (both results carry at most
    γ_{k+2}·(|A|·|B|)_ij of rounding error; γ_j ≈ j·2⁻²⁴)."""
    gamma = (k + 2) * 2.0**-24 * 1.01
    worst = 0.0
    for g, w, s in zip(got, want, scale):
        err = abs(g - w)
        tol = 2.0 * gamma * s + 1e-30
        if not err <= tol:
            raise SystemExit(f"{name}: results differ from OpenBLAS's by {err:g} (allowed {tol:g})")
        worst = max(worst, err / tol)
    return worst


class OwnOneThread:
    """nnkern at one thread, as a further column of a row above one thread."""

    label = "nnkern 1T"

    def __init__(self, ours):
        self.ours = ours

    def set_threads(self, n):
        self.ours.set_threads(n)

    def sgemm(self, *args):
        self.ours.sgemm(*args)

    def sgemm_loop(self, *args):
        self.ours.sgemm_loop(*args)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lib", default=os.path.join(ROOT, "target", "release", "libnnkern.so"), help="nnkern cdylib")
    parser.add_argument("--extra", action="append", default=[], metavar="LABEL=PATH", help="another nnkern build to time")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--shapes", default="squares,training,tiny,big", help="groups: squares,training,tiny,big (default), small")
    parser.add_argument("--only", help="shape names separated by ';' (e.g. '512^2;(32,784,500) B=T')")
    parser.add_argument("--repeats", type=int, default=15, help="alternating repeats per shape (median taken)")
    parser.add_argument("--sample", type=float, default=0.01, help="seconds per timed sample (calls batched)")
    parser.add_argument("--sample-threads", type=float, default=0.1, help="seconds per timed sample above 1 thread")
    parser.add_argument("--isa", help="force nnkern's ISA (NNKERN_ISA): avx2, avx512, scalar")
    parser.add_argument("--peers-native", action="store_true", help="with --isa, leave the peers on their own choice")
    parser.add_argument("--openblas", help="path of an OpenBLAS with scipy_cblas_sgemm64_ (default: numpy's)")
    parser.add_argument("--blis", help=f"path of a BLIS (default {BLIS_SO})")
    parser.add_argument("--no-install", action="store_true", help="install nothing; leave out missing peers")
    parser.add_argument("--no-check", action="store_true", help="skip the result comparison")
    args = parser.parse_args()

    threads = [int(t) for t in args.threads.split(",")]
    groups = set(args.shapes.split(","))
    shapes = [s for s in SHAPES if s[0] in groups]
    if args.only:
        names = set(args.only.split(";"))
        shapes = [s for s in SHAPES if s[1] in names]
    if not shapes:
        raise SystemExit(f"no shapes selected (names: {', '.join(s[1] for s in SHAPES)})")
    if not os.path.exists(args.lib):
        raise SystemExit(f"{args.lib} not found: build it with `cargo build --release`")

    openblas_path, openblas_how = find_openblas(args)
    blis_path = find_blis(args)

    # Pools sized before loading; the per-round counts come from the calls.
    most = str(max(threads))
    for var in ("NNKERN_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS"):
        os.environ[var] = most
    os.environ.pop("OMP_NUM_THREADS", None)
    if args.isa:
        os.environ["NNKERN_ISA"] = args.isa
        if not args.peers_native and args.isa in OPENBLAS_CORES:
            os.environ["OPENBLAS_CORETYPE"] = OPENBLAS_CORES[args.isa]

    ours = load_nnkern("nnkern", os.path.abspath(args.lib))
    extras = []
    for spec in args.extra:
        label, _, path = spec.partition("=")
        if not path or not os.path.exists(path):
            raise SystemExit(f"--extra {spec}: expected LABEL=PATH to an existing libnnkern.so")
        extras.append(load_nnkern(label, os.path.abspath(path)))
    peers = []
    if openblas_path:
        peers.append(load_openblas(openblas_path, openblas_how))
    else:
        note(f"OpenBLAS left out: {openblas_how}")
    if blis_path:
        peers.append(load_blis(blis_path))
    libs = [ours] + extras + peers
    reference = peers[0] if peers and peers[0].label == "OpenBLAS" else None
    global LOOP
    LOOP, loop_how = compile_loop()

    load_before = load_average()
    print(f"CPU: {cpu_model()}")
    for lib in libs:
        print(f"- {lib.label}: {lib.info}")
    peak = ours.peak
    peak_text = f"{peak:.1f} GFLOP/s" if peak else "? (this build has no nnkern_fma_peak_gflops)"
    print(f"- one-core f32 FMA peak of nnkern's ISA ({ours.isa}), nnkern's probe: {peak_text}")
    print(
        f"- median of {args.repeats} alternating repeats; clock: thread CPU time at 1 thread, wall time above; "
        f"load average before: {load_before}"
    )
    if LOOP is not None:
        print(f"- calls of a sample in a C loop compiled by {loop_how}")
    else:
        print(f"- calls from Python through ctypes ({loop_how}): a few µs of overhead per call")
    print()
    head = ["shape (M,K,N)", "threads"] + [lib.label for lib in libs]
    head += ["nnkern % of peak", "nnkern ÷ best peer", "nnkern ÷ its 1 thread (wall)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")

    rng = random.Random(0)
    for _, name, m, k, n, a_t, b_t in shapes:
        a_store, a_ptr = matrix(k, m, rng) if a_t else matrix(m, k, rng)
        b_store, b_ptr = matrix(n, k, rng) if b_t else matrix(k, n, rng)
        ta, tb = (TRANS if a_t else NO_TRANS), (TRANS if b_t else NO_TRANS)
        lda, ldb = (m if a_t else k), (k if b_t else n)
        outs = {}
        for label in [lib.label for lib in libs] + [OwnOneThread.label]:
            data = array.array("f", bytes(4 * m * n))
            outs[label] = (data, (ctypes.c_float * (m * n)).from_buffer(data))

        def call(lib, c_ptr=None):
            lib.sgemm(ta, tb, m, n, k, a_ptr, lda, b_ptr, ldb, c_ptr or outs[lib.label][1], n)

        def calls(lib, iters):
            lib.sgemm_loop(iters, ta, tb, m, n, k, a_ptr, lda, b_ptr, ldb, outs[lib.label][1], n)

        flops = 2.0 * m * n * k
        scale = None
        for t in threads:
            for lib in libs:
                lib.set_threads(t)
                call(lib)
            if reference and not args.no_check:
                if scale is None:
                    # Error scale (|A|·|B|)_ij, computed by OpenBLAS on absolute values.
                    abs_a = array.array("f", map(abs, a_store))
                    abs_b = array.array("f", map(abs, b_store))
                    scale = array.array("f", bytes(4 * m * n))
                    reference.sgemm(
                        ta, tb, m, n, k,
                        (ctypes.c_float * len(abs_a)).from_buffer(abs_a), lda,
                        (ctypes.c_float * len(abs_b)).from_buffer(abs_b), ldb,
                        (ctypes.c_float * len(scale)).from_buffer(scale), n,
                    )
                want = outs[reference.label][0]
                for lib in libs:
                    if lib is not reference:
                        check(f"{name} {lib.label} {t}T", k, m, n, outs[lib.label][0], want, scale)
            clock = time.thread_time if t == 1 else time.perf_counter
            # Calls per sample from one timed call of ours.
            t0 = clock()
            calls(ours, 1)
            one = max(clock() - t0, 1e-7)
            # Samples with more threads are longer: each starts after the
            # process has gone idle, so the other cores start cold (measured:
            # (32,784,500) on 2 threads at 58 GFLOP/s with 10 ms samples and
            # 93 with 100 ms on a 2-vCPU VM); a longer sample dilutes that.
            sample = args.sample if t == 1 else args.sample_threads
            inner = max(1, int(sample / one))
            # Above one thread, nnkern at one thread is timed beside the rest
            # on the same wall clock, so the ratio of the two is not a ratio of
            # two clocks (thread CPU time vs wall time).
            own_one = OwnOneThread(ours)
            timed = libs + ([own_one] if t > 1 else [])
            times = {lib.label: [] for lib in timed}
            for r in range(args.repeats):
                order = timed[r % len(timed):] + timed[: r % len(timed)]
                for lib in order:
                    if t > 1:
                        wait_idle()
                    if lib is own_one:
                        own_one.set_threads(1)
                    t0 = clock()
                    calls(lib, inner)
                    times[lib.label].append((clock() - t0) / inner)
                    if lib is own_one:
                        own_one.set_threads(t)
            gflops = {label: flops / statistics.median(ts) / 1e9 for label, ts in times.items()}
            best_peer = max((gflops[p.label] for p in peers), default=None)
            row = [name, str(t)] + [f"{gflops[lib.label]:.1f}" for lib in libs]
            row.append(f"{100 * gflops['nnkern'] / (peak * t):.0f}%" if peak else "?")
            row.append(f"{gflops['nnkern'] / best_peer:.2f}" if best_peer else "?")
            row.append(f"{gflops['nnkern'] / gflops[own_one.label]:.2f}" if t > 1 else "—")
            print("| " + " | ".join(row) + " |", flush=True)
    print()
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
