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


def worker_torch(seed, threads):
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    (x, y), (xv, yv), (xt, yt) = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in load(np)]
    classes = int(max(int(y.max()), int(yt.max()))) + 1
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, classes))
    for layer in (model[0], model[2]):
        torch.nn.init.xavier_uniform_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS)
    xent = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)

    def loss_acc(xs, ys):
        with torch.no_grad():
            z = model(xs)
            return float(xent(z, ys)), float((z.argmax(dim=1) == ys).float().mean())

    epochs = []
    for _ in range(EPOCHS):
        t0 = time.perf_counter()
        order = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), BATCH):
            idx = order[s : s + BATCH]
            opt.zero_grad(set_to_none=True)
            xent(model(x[idx]), y[idx]).backward()
            opt.step()
        loss_acc(xv, yv)
        epochs.append(time.perf_counter() - t0)
    test_loss, test_acc = loss_acc(xt, yt)
    return {"epoch_seconds": epochs, "test_loss": test_loss, "test_acc": test_acc, "torch": torch.__version__}


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


def run_nnkern(exe, seed, threads):
    with tempfile.TemporaryDirectory() as d:
        metrics = os.path.join(d, "m.jsonl")
        cmd = [exe, "train", "--quiet", "--seed", str(seed), "--threads", str(threads), "--metrics", metrics]
        wall, rss, _ = timed(cmd, thread_env(threads))
        rows = [json.loads(l) for l in open(metrics)]
    epochs = [r["epoch_seconds"] for r in rows if "epoch" in r]
    final = [r for r in rows if "test_acc" in r][-1]
    return {"epoch_seconds": epochs, "test_acc": final["test_acc"], "wall": wall, "rss": rss}


def run_peer(py, peer, seed, threads):
    cmd = [py, os.path.abspath(__file__), "--worker", peer, "--seed", str(seed), "--threads", str(threads)]
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--peers", default="numpy,torch")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        threads = int(a.threads.split(",")[0])
        r = worker_numpy(a.seed) if a.worker == "numpy" else worker_torch(a.seed, threads)
        print(json.dumps(r))
        return
    seeds = [int(s) for s in a.seeds.split(",")]
    threads = [int(t) for t in a.threads.split(",")]
    peers = [p for p in a.peers.split(",") if p]
    py = venv_python(peers) if peers else None
    sh(["cargo", "build", "--release", "--quiet", "-p", "nnkern-train", "--bin", "nnkern"], cwd=ROOT)
    exe = os.path.join(ROOT, "target", "release", "nnkern")
    info = subprocess.run([exe, "info"], capture_output=True, text=True).stdout
    isa = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("isa:")), "")
    results = {}
    for seed in seeds:
        for t in threads:
            for impl in ["nnkern"] + peers:
                r = run_nnkern(exe, seed, t) if impl == "nnkern" else run_peer(py, impl, seed, t)
                results.setdefault((impl, t), []).append(r)
                e = statistics.median(r["epoch_seconds"][1:])
                print(f"{impl:7s} threads {t} seed {seed}: epoch {e:.4f} s, process {r['wall']:.2f} s, "
                      f"RSS {r['rss']:.1f} MiB, test acc {r['test_acc']:.4f}", file=sys.stderr, flush=True)
    versions = {}
    for (impl, _), rs in results.items():
        for k in ("numpy", "torch"):
            if k in rs[0]:
                versions[impl] = f"{impl} {rs[0][k]}"
    print(f"\nCPU: {cpu_line()}; nnkern ISA: {isa or 'see nnkern info'}; {time.strftime('%Y-%m-%d')}; "
          f"seeds {a.seeds}; `python3 scripts/compare_peers.py --seeds {a.seeds} --threads {a.threads} --peers {a.peers}`\n")
    print("| implementation | threads | epoch (median of 2-10) | x nnkern | process | peak RSS | test accuracy (median) |")
    print("|---|---|---|---|---|---|---|")
    base = {}
    for (impl, t), rs in results.items():
        epoch = statistics.median(statistics.median(r["epoch_seconds"][1:]) for r in rs)
        if impl == "nnkern":
            base[t] = epoch
    for (impl, t), rs in results.items():
        epoch = statistics.median(statistics.median(r["epoch_seconds"][1:]) for r in rs)
        wall = statistics.median(r["wall"] for r in rs)
        rss = max(r["rss"] for r in rs)
        acc = statistics.median(r["test_acc"] for r in rs)
        name = versions.get(impl, impl)
        print(f"| {name} | {t} | {epoch:.4f} s | {epoch / base[t]:.2f} | {wall:.2f} s | {rss:.1f} MiB | {acc:.4f} |")


if __name__ == "__main__":
    main()
