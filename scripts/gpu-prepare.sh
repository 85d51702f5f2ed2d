#!/usr/bin/env bash
# Build, on a machine without a GPU, everything the GPU check runs, into one folder to carry
# to the GPU machine (which has no Rust toolchain): the test executables and the criterion
# bench executable built with --features cublas, the trainer binary (nnkern, with its CUDA
# backend) for the comparison beside PyTorch, plus scripts/device-check.sh.
# DRY=1: print what would be built and copied, build nothing. The sm_90a
# GEMM needs nothing extra: its PTX is embedded, the tests pick it on an sm_90 GPU and
# compare it with the executor's sm_90 model, and the bench times it beside cuBLAS.
#   usage: scripts/gpu-prepare.sh [DIR=.devbin]
# Add "/.devbin/" to .git/info/exclude once, so the folder travels as an ignored path.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.devbin}
# The trainer's CUDA backend too, so that train_cuda.rs (its GPU graph test) is built.
FEATURES=${FEATURES:-cublas,nnkern-train/cuda}
LOG=${BUILD_LOG:-/tmp/gpu-prepare.log}
if [ "${DRY:-0}" = 1 ]; then
  echo "would build: cargo test --release --features $FEATURES --no-run -> $DIR/test/"
  echo "would build: cargo bench --features $FEATURES --bench cuda --no-run -> $DIR/bench/"
  echo "would build: cargo build --release -p nnkern-train --features cuda --bin nnkern -> $DIR/nnkern"
  echo "would copy: scripts/device-check.sh -> $DIR/"
  exit 0
fi
rm -rf "$DIR"; mkdir -p "$DIR/test" "$DIR/bench"
cargo test --release --features "$FEATURES" --no-run --message-format=json 2>>"$LOG" |
  jq -r 'select(.reason=="compiler-artifact" and .executable!=null and .profile.test)
         | "\(.target.kind[0])-\(.target.name) \(.executable)"' |
  while read -r name exe; do cp "$exe" "$DIR/test/$name"; done
cargo bench --features "$FEATURES" --bench cuda --no-run --message-format=json 2>>"$LOG" |
  jq -r 'select(.reason=="compiler-artifact" and .executable!=null and .target.kind[0]=="bench")
         | "\(.target.name) \(.executable)"' |
  while read -r name exe; do cp "$exe" "$DIR/bench/$name"; done
cargo build --release -p nnkern-train --features cuda --bin nnkern --message-format=json 2>>"$LOG" |
  jq -r 'select(.reason=="compiler-artifact" and .executable!=null and .target.name=="nnkern") | .executable' |
  while read -r exe; do cp "$exe" "$DIR/nnkern"; done
[ -x "$DIR/nnkern" ] || { echo "the trainer binary was not built (see $LOG)" >&2; exit 1; }
cp scripts/device-check.sh "$DIR/"
# Debug info is not needed there; keep the carry small.
strip "$DIR"/test/* "$DIR"/bench/* "$DIR"/nnkern 2>/dev/null || true
ls -la "$DIR"/test "$DIR"/bench "$DIR"/nnkern | sed 's/^/  /'
for f in "$DIR"/test/* "$DIR"/bench/* "$DIR"/nnkern; do
  echo "  $(basename "$f"): needs $(objdump -T "$f" | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1)"
done
total=$(du -sb "$DIR" | cut -f1)
echo "carry: $((total / 1024)) KiB (limit 64 MiB with the working tree)"
[ "$total" -lt $((60 * 1024 * 1024)) ]
