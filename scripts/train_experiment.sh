#!/usr/bin/env bash
# Runs the default experiment (`nnkern train`: 784-500-10 ReLU, Adam, batch 32,
# 10 epochs on the bundled digits) once per seed, as a whole process each, and
# prints for every run: the epoch time (median of epochs 2-10, validation
# included), the late/early epoch ratio (median of epochs 8-10 over 2-4: a
# value well above 1 means later epochs slowed down, e.g. on subnormals), the
# wall time of the whole process, its peak resident memory, and the test
# accuracy; then the medians over the seeds.
#
#   scripts/train_experiment.sh                 # seeds 0..4
#   SEEDS="0 1 2" scripts/train_experiment.sh --threads 1   # extra options go to `nnkern train`
#
# Needs python3 (standard library only) to time the process and read its
# peak RSS (wait4's ru_maxrss); without it, `/usr/bin/time -v nnkern train`
# prints the same "Maximum resident set size".
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2 3 4"}
cargo build --release --quiet
exec python3 - "target/release/nnkern" "$SEEDS" "$@" <<'PY'
import json, os, statistics, subprocess, sys, tempfile, time

binary, seeds, extra = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
rows = []
print(f"{'seed':>4} {'epoch s':>8} {'late/early':>10} {'total s':>8} {'peak RSS MB':>11} {'test acc':>8}")
with tempfile.TemporaryDirectory() as tmp:
    for seed in seeds:
        metrics = os.path.join(tmp, f"m{seed}.jsonl")
        cmd = [binary, "train", "--quiet", "--seed", seed, "--metrics", metrics, *extra]
        start = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - start
        if status != 0:
            sys.exit(f"{' '.join(cmd)} failed with status {status}")
        lines = [json.loads(l) for l in open(metrics)]
        epochs = [l["epoch_seconds"] for l in lines if "epoch" in l]
        final = lines[-1]
        later = epochs[1:] if len(epochs) > 1 else epochs
        epoch_s = statistics.median(later)
        ratio = statistics.median(epochs[-3:]) / statistics.median(epochs[1:4]) if len(epochs) >= 6 else float("nan")
        rss_mb = usage.ru_maxrss * 1024 / 1e6  # ru_maxrss is in KiB on Linux
        rows.append((epoch_s, ratio, wall, rss_mb, final["test_acc"]))
        print(f"{seed:>4} {epoch_s:8.4f} {ratio:10.2f} {wall:8.3f} {rss_mb:11.1f} {final['test_acc']:8.4f}", flush=True)
med = [statistics.median(c) for c in zip(*rows)]
print(f"{'median':>4} {med[0]:8.4f} {med[1]:10.2f} {med[2]:8.3f} {med[3]:11.1f} {med[4]:8.4f}")
print(f"test accuracy over {len(rows)} seeds: median {med[4]:.4f} [min {min(r[4] for r in rows):.4f}, max {max(r[4] for r in rows):.4f}]")
PY
