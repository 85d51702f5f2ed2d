#!/usr/bin/env python3
"""The default training experiment in nnkern, NumPy (OpenBLAS) and PyTorch CPU,
on this machine, in one run; prints one Markdown table naming the CPU.

    python3 scripts/compare_peers.py                       # seeds 0, threads 1 and 2
    python3 scripts/compare_peers.py --seeds 0,1,2 --threads 1,2
    python3 scripts/compare_peers.py --peers numpy         # without PyTorch

The experiment (what `nnkern train` runs by default): MLP 784 -> 500 ReLU -> 10
softmax, Glorot-uniform weights, zero biases, Adam (lr 1e-3, betas 0.9/0.999,
epsilon 1e-7), categorical cross-entropy, batch 32, 10 epochs, the last 20% of the
8,000 bundled training digits held out for validation (evaluated every epoch,
inside the epoch's time), the rest shuffled every epoch, inputs x/255; then the
test loss and accuracy on the 2,000 test digits.

NumPy applies Adam in Keras's form (epsilon added to sqrt(v) before the bias
correction, as nnkern's default does); PyTorch uses torch.optim.Adam (epsilon after
the bias correction), the form its users get.

On a GPU (`--device cuda`): nnkern's CUDA backend (`nnkern train --backend cuda`,
steps replayed as CUDA graphs; `--graphs both` also times it launch by launch with
NNKERN_CUDA_GRAPHS=0) beside PyTorch on the same GPU (model, data and optimizer on
`cuda`, the epoch timed between two `torch.cuda.synchronize()`); the table then
adds each one's training time (the sum of the 10 epochs' times, validation
included) and `--check-targets` checks the targets: 10 epochs in < 1 s, at least
5x faster than PyTorch. A machine without cargo takes a prebuilt binary
(`--nnkern-exe`) and the Python it has (`--python`):

    python3 scripts/compare_peers.py --device cuda --nnkern-exe .devbin/nnkern \
        --python python3 --peers torch --check-targets
    python3 scripts/compare_peers.py --self-test      # the target checks, no GPU

Each run is a separate process: "epoch" is the median of epochs 2-10 (the first
one warms caches and JIT paths), "process" the whole process's wall time
(start-up and data loading included), "peak RSS" its maximum resident memory
(from wait4). Implementations alternate within each seed so that a change in
the machine's load hits all of them. Peers are installed when missing into a
private virtual environment, `target/peers-venv` (numpy; torch's CPU wheels).
"""

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "target", "peers-venv")
DATA = os.path.join(ROOT, "data", "mnist-10k")
EPOCHS, BATCH, HIDDEN, VAL_SPLIT = 10, 32, 500, 0.2
LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-7


# ---------------------------------------------------------------- the peers


def read_idx(name):
    """An IDX file of the bundled data as (dims, bytes)."""
    with gzip.open(os.path.join(DATA, name + ".gz"), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return dims, raw[4 + 4 * ndim :]


def load(np):
    def images(name):
        dims, b = read_idx(name)
        return np.frombuffer(b, dtype=np.uint8).reshape(dims[0], -1).astype(np.float32) / np.float32(255)

    def labels(name):
        _, b = read_idx(name)
        return np.frombuffer(b, dtype=np.uint8).astype(np.int64)

    x, y = images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte")
    xt, yt = images("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte")
    n_train = int(len(x) * (1 - VAL_SPLIT))
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), (xt, yt)


def worker_numpy(seed):
    import numpy as np

    (x, y), (xv, yv), (xt, yt) = load(np)
    rng = np.random.default_rng(seed)
    classes = int(max(y.max(), yt.max())) + 1

    def glorot(i, o):
        lim = np.sqrt(6.0 / (i + o))
        return rng.uniform(-lim, lim, size=(i, o)).astype(np.float32)

    params = [glorot(x.shape[1], HIDDEN), np.zeros(HIDDEN, np.float32), glorot(HIDDEN, classes), np.zeros(classes, np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    step = 0

    def forward(xb):
        h = xb @ params[0] + params[1]
        a = np.maximum(h, 0)
        z = a @ params[2] + params[3]
        return h, a, z

    def loss_acc(xs, ys):
        _, _, z = forward(xs)
        z = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        loss = float(np.mean(lse - z[np.arange(len(ys)), ys]))
        return loss, float(np.mean(z.argmax(axis=1) == ys))

    epochs = []
    for _ in range(EPOCHS):
        t0 = time.perf_counter()
        order = rng.permutation(len(x))
        for s in range(0, len(x), BATCH):
            idx = order[s : s + BATCH]
            xb, yb = x[idx], y[idx]
            h, a, z = forward(xb)
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(yb)), yb] -= 1
            dz = p / np.float32(len(yb))
            da = dz @ params[2].T
            dh = da * (h > 0)
            grads = [xb.T @ dh, dh.sum(axis=0), a.T @ dz, dz.sum(axis=0)]
            step += 1
            lr_t = LR * np.sqrt(1 - BETA2**step) / (1 - BETA1**step)
            for w, g, mm, vv in zip(params, grads, m, v):
                mm *= BETA1
                mm += (1 - BETA1) * g
                vv *= BETA2
                vv += (1 - BETA2) * g * g
                w -= (lr_t * mm / (np.sqrt(vv) + EPS)).astype(np.float32)
        loss_acc(xv, yv)
        epochs.append(time.perf_counter() - t0)
    test_loss, test_acc = loss_acc(xt, yt)
    return {"epoch_seconds": epochs, "test_loss": test_loss, "test_acc": test_acc, "numpy": np.__version__}


def worker_torch(seed, threads, device="cpu"):
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    (x, y), (xv, yv), (xt, yt) = [(torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)) for a, b in load(np)]
    classes = int(max(int(y.max()), int(yt.max()))) + 1
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, classes))
    for layer in (model[0], model[2]):
        torch.nn.init.xavier_uniform_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS)
    xent = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)

    def loss_acc(xs, ys):
        with torch.no_grad():
            z = model(xs)
            return float(xent(z, ys)), float((z.argmax(dim=1) == ys).float().mean())

    epochs = []
    for _ in range(EPOCHS):
        sync()
        t0 = time.perf_counter()
        order = torch.randperm(len(x), generator=gen).to(dev)
        for s in range(0, len(x), BATCH):
            idx = order[s : s + BATCH]
            opt.zero_grad(set_to_none=True)
            xent(model(x[idx]), y[idx]).backward()
            opt.step()
        loss_acc(xv, yv)
        sync()
        epochs.append(time.perf_counter() - t0)
    test_loss, test_acc = loss_acc(xt, yt)
    version = torch.__version__ + (f" on {torch.cuda.get_device_name(dev)}" if gpu else "")
    return {"epoch_seconds": epochs, "test_loss": test_loss, "test_acc": test_acc, "torch": version}


# ---------------------------------------------------------------- the driver


def sh(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, **kw)


def venv_python(peers):
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        sh([sys.executable, "-m", "venv", VENV])
    have = lambda mod: subprocess.run([py, "-c", f"import {mod}"], capture_output=True).returncode == 0
    if not have("numpy"):
        sh([py, "-m", "pip", "install", "--quiet", "numpy"])
    if "torch" in peers and not have("torch"):
        # The CPU wheels (a few hundred MB) where that index is reachable, else PyPI's.
        r = subprocess.run([py, "-m", "pip", "install", "--quiet", "torch", "--index-url", "https://download.pytorch.org/whl/cpu"])
        if r.returncode != 0:
            sh([py, "-m", "pip", "install", "--quiet", "torch"])
    return py


def timed(cmd, env):
    """Runs cmd; returns (wall seconds, peak RSS in MiB, stdout)."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        err = p.stderr.read().decode(errors="replace")
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{err}")
        out.seek(0)
        return wall, usage.ru_maxrss / 1024.0, out.read().decode()


def thread_env(threads):
    env = dict(os.environ)
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NNKERN_NUM_THREADS"):
        env[k] = str(threads)
    return env


def nnkern_cmd(exe, seed, threads, device, metrics):
    """The nnkern command line of one run."""
    cmd = [exe, "train", "--quiet", "--seed", str(seed), "--metrics", metrics]
    if device == "cuda":
        return cmd + ["--backend", "cuda"]
    return cmd + ["--threads", str(threads)]


def run_nnkern(exe, seed, threads, device="cpu", graphs=True):
    with tempfile.TemporaryDirectory() as d:
        metrics = os.path.join(d, "m.jsonl")
        cmd = nnkern_cmd(exe, seed, threads, device, metrics)
        env = thread_env(threads)
        if not graphs:
            env["NNKERN_CUDA_GRAPHS"] = "0"
        wall, rss, _ = timed(cmd, env)
        rows = [json.loads(l) for l in open(metrics)]
    epochs = [r["epoch_seconds"] for r in rows if "epoch" in r]
    final = [r for r in rows if "test_acc" in r][-1]
    return {"epoch_seconds": epochs, "test_acc": final["test_acc"], "wall": wall, "rss": rss}


def run_peer(py, peer, seed, threads, device="cpu"):
    cmd = [py, os.path.abspath(__file__), "--worker", peer, "--seed", str(seed), "--threads", str(threads)]
    cmd += ["--device", device]
    wall, rss, out = timed(cmd, thread_env(threads))
    r = json.loads(out.strip().splitlines()[-1])
    r.update(wall=wall, rss=rss)
    return r


def cpu_line():
    fields = {}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            k, _, v = line.partition(":")
            fields[k.strip()] = v.strip()
    except OSError:
        pass
    return (
        f"{fields.get('Model name', platform.processor())} (family {fields.get('CPU family', '?')}, "
        f"model {fields.get('Model', '?')}), {os.cpu_count()} CPUs"
    )


# The GPU targets: the default experiment's 10 epochs in under this many seconds
# of training time, and at least this many times faster than PyTorch on the GPU.
TARGET_SECONDS, TARGET_SPEEDUP = 1.0, 5.0


def check_targets(nnkern_total, torch_total):
    """[(description, passed)] for the GPU targets, from the training times (s)."""
    checks = [(f"10 epochs in < {TARGET_SECONDS:g} s of training time: {nnkern_total:.3f} s", nnkern_total < TARGET_SECONDS)]
    if torch_total is not None:
        ratio = torch_total / nnkern_total if nnkern_total > 0 else float("inf")
        checks.append((f">= {TARGET_SPEEDUP:g}x PyTorch on the same GPU: {ratio:.2f}x ({torch_total:.3f} s)", ratio >= TARGET_SPEEDUP))
    return checks


def self_test():
    """The target checks and the command lines, without a GPU."""
    ok = check_targets(0.5, 3.0)
    assert [p for _, p in ok] == [True, True], ok
    assert [p for _, p in check_targets(1.0, 10.0)] == [False, True]
    assert [p for _, p in check_targets(0.5, 2.4)] == [True, False]
    assert [p for _, p in check_targets(0.9, None)] == [True]
    assert nnkern_cmd("nk", 3, 2, "cuda", "m")[-2:] == ["--backend", "cuda"]
    assert "--threads" in nnkern_cmd("nk", 3, 2, "cpu", "m")
    assert "--backend" not in nnkern_cmd("nk", 3, 2, "cpu", "m")
    # A stand-in trainer: its epoch times tell whether NNKERN_CUDA_GRAPHS=0 reached it.
    with tempfile.TemporaryDirectory() as d:
        fake = os.path.join(d, "nnkern")
        with open(fake, "w") as f:
            f.write('#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --metrics ] && m=$2; shift; done\n'
                    't=0.05; [ "$NNKERN_CUDA_GRAPHS" = 0 ] && t=0.07\n'
                    'for e in 1 2 3 4 5 6 7 8 9 10; do echo "{\\"epoch\\": $e, \\"epoch_seconds\\": $t}" >> "$m"; done\n'
                    'echo \'{"test_acc": 0.9}\' >> "$m"\n')
        os.chmod(fake, 0o755)
        r = run_nnkern(fake, 0, 1, "cuda")
        assert r["epoch_seconds"] == [0.05] * 10 and r["test_acc"] == 0.9, r
        r = run_nnkern(fake, 0, 1, "cuda", graphs=False)
        assert r["epoch_seconds"] == [0.07] * 10, r
    print("self-test passed")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--peers", default="numpy,torch")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: nnkern's CUDA backend beside PyTorch on the GPU")
    ap.add_argument("--graphs", choices=["on", "off", "both"], default="on", help="with --device cuda: CUDA graphs (NNKERN_CUDA_GRAPHS)")
    ap.add_argument("--nnkern-exe", help="a prebuilt nnkern binary (no cargo build)")
    ap.add_argument("--python", help="the Python that runs the peers (no virtual environment, nothing installed)")
    ap.add_argument("--check-targets", action="store_true", help="with --device cuda: exit 3 when a GPU target is missed")
    ap.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.self_test:
        return self_test()
    if a.worker:
        threads = int(a.threads.split(",")[0])
        r = worker_numpy(a.seed) if a.worker == "numpy" else worker_torch(a.seed, threads, a.device)
        print(json.dumps(r))
        return
    gpu = a.device == "cuda"
    seeds = [int(s) for s in a.seeds.split(",")]
    # One thread on the GPU: the host side of either is one thread's work.
    threads = [1] if gpu else [int(t) for t in a.threads.split(",")]
    peers = [p for p in a.peers.split(",") if p]
    if gpu and "numpy" in peers:
        peers.remove("numpy")
    py = a.python or (venv_python(peers) if peers else None)
    if a.nnkern_exe:
        exe = os.path.abspath(a.nnkern_exe)
    else:
        build = ["cargo", "build", "--release", "--quiet", "-p", "nnkern-train", "--bin", "nnkern"]
        sh(build + (["--features", "cuda"] if gpu else []), cwd=ROOT)
        exe = os.path.join(ROOT, "target", "release", "nnkern")
    info = subprocess.run([exe, "info"], capture_output=True, text=True).stdout
    isa = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("isa:")), "")
    nk_impls = ["nnkern"]
    if gpu and a.graphs != "on":
        nk_impls = ["nnkern", "nnkern-nograph"] if a.graphs == "both" else ["nnkern-nograph"]
    results = {}
    for seed in seeds:
        for t in threads:
            for impl in nk_impls + peers:
                if impl.startswith("nnkern"):
                    r = run_nnkern(exe, seed, t, a.device, graphs=impl == "nnkern")
                else:
                    r = run_peer(py, impl, seed, t, a.device)
                results.setdefault((impl, t), []).append(r)
                e = statistics.median(r["epoch_seconds"][1:])
                print(f"{impl:7s} threads {t} seed {seed}: epoch {e:.4f} s, 10 epochs {sum(r['epoch_seconds']):.3f} s, "
                      f"process {r['wall']:.2f} s, RSS {r['rss']:.1f} MiB, test acc {r['test_acc']:.4f}, "
                      f"epochs {' '.join(f'{x:.4f}' for x in r['epoch_seconds'])}", file=sys.stderr, flush=True)
    versions = {}
    for (impl, _), rs in results.items():
        for k in ("numpy", "torch"):
            if k in rs[0]:
                versions[impl] = f"{impl} {rs[0][k]}"
    where = f"GPU: {gpu_line()}; host CPU: {cpu_line()}" if gpu else f"CPU: {cpu_line()}; nnkern ISA: {isa or 'see nnkern info'}"
    print(f"\n{where}; {time.strftime('%Y-%m-%d')}; seeds {a.seeds}; `python3 scripts/compare_peers.py "
          f"{' '.join(sys.argv[1:])}`\n")
    print("| implementation | threads | epoch (median of 2-10) | x nnkern | 10 epochs | process | peak RSS | test accuracy (median) |")
    print("|---|---|---|---|---|---|---|---|")
    base = {}
    total = {}
    totals = {}
    for (impl, t), rs in results.items():
        epoch = statistics.median(statistics.median(r["epoch_seconds"][1:]) for r in rs)
        total[impl] = statistics.median(sum(r["epoch_seconds"]) for r in rs)
        totals[(impl, t)] = total[impl]
        if impl == nk_impls[0]:
            base[t] = epoch
    for (impl, t), rs in results.items():
        epoch = statistics.median(statistics.median(r["epoch_seconds"][1:]) for r in rs)
        wall = statistics.median(r["wall"] for r in rs)
        rss = max(r["rss"] for r in rs)
        acc = statistics.median(r["test_acc"] for r in rs)
        name = versions.get(impl, impl)
        print(f"| {name} | {t} | {epoch:.4f} s | {epoch / base[t]:.2f} | {totals[(impl, t)]:.3f} s | {wall:.2f} s | {rss:.1f} MiB | {acc:.4f} |")
    if gpu:
        missed = 0
        for what, passed in check_targets(total[nk_impls[0]], total.get("torch")):
            print(f"target: {what}: {'PASS' if passed else 'FAIL'}")
            missed += not passed
        if a.check_targets and missed:
            raise SystemExit(3)


def gpu_line():
    try:
        q = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
        return subprocess.run(q, capture_output=True, text=True).stdout.strip() or "unknown"
    except OSError:
        return "unknown (no nvidia-smi)"


if __name__ == "__main__":
    main()
