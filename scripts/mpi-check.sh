#!/usr/bin/env bash
# The trainer's data-parallel mode over MPI (feature `mpi` of nnkern-train):
# installs Debian's OpenMPI and libclang when missing (any that cannot be
# installed fails the check), lints the feature, runs the MPI tests
# (train/tests/train_mpi.rs: 2 ranks under mpirun on this machine), then the
# default experiment under `mpirun -np 2` for each of SEEDS, which must reach
# a median test accuracy of at least MIN_ACC (0.955).
#
#   scripts/mpi-check.sh                      # seeds 0..4
#   SEEDS="0" NP=2 scripts/mpi-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2 3 4"}
NP=${NP:-2}
MIN_ACC=${MIN_ACC:-0.955}

missing=()
for pkg in libopenmpi-dev openmpi-bin libclang-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v mpirun >/dev/null || { echo "mpirun not found after installing openmpi-bin" >&2; exit 1; }
mpirun --version | head -1

# CI runs as root, maybe without ssh: allow root, launch locally only, shared memory.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(mpirun -np "$NP" --oversubscribe --bind-to none --mca btl self,vader --mca plm isolated)

cargo clippy -p nnkern-train --all-targets --features mpi -- -D warnings
cargo test --release -p nnkern-train --features mpi --lib --test train_mpi --test train_cli

cargo build --release -p nnkern-train --features mpi --bin nnkern
bin="${CARGO_TARGET_DIR:-target}/release/nnkern"
accs=()
for seed in $SEEDS; do
  out=$("${MPIRUN[@]}" "$bin" train --distributed mpi --quiet --seed "$seed")
  acc=$(printf '%s\n' "$out" | sed -n 's/.*test_accuracy: \([0-9.]*\).*/\1/p' | tail -1)
  [ -n "$acc" ] || { echo "seed $seed: no test accuracy in: $out" >&2; exit 1; }
  echo "seed $seed: $out"
  accs+=("$acc")
done
median=$(printf '%s\n' "${accs[@]}" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}')
echo "mpirun -np $NP nnkern train --distributed mpi: median test accuracy $median over ${#accs[@]} seeds (need >= $MIN_ACC)"
awk -v m="$median" -v t="$MIN_ACC" 'BEGIN {exit !(m >= t)}' || { echo "median test accuracy $median < $MIN_ACC" >&2; exit 1; }
