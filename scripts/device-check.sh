#!/usr/bin/env bash
# The GPU check, run ON the GPU machine from the repository root, over the executables that
# scripts/gpu-prepare.sh built elsewhere (default folder .devbin):
#   1. the CUDA tests (tests/cuda.rs, tests/ptx_kernels.rs, with the GPU-vs-executor
#      comparisons: the SGEMM and optimizers, and on an sm_90 GPU the sm_90a GEMM against
#      the executor's sm_90 model, sm90_gpu_and_executor_agree_bit_for_bit, which prints
#      how many elements differ and by how many ulps) and the library's unit tests with
#      --include-ignored and REQUIRE_GPU=1 (a missing GPU fails them); TESTS=all runs the
#      CPU-only test binaries too;
#   2. the cuda bench (ours beside cuBLAS, TFLOP/s from CUDA events, one training step),
#      with short criterion settings; first it prints the bf16 4096^3 and 8192^3 table
#      (the sm_90a kernel, the mma.sync kernel, % of cuBLAS; lines "bf16 gemm ...").
#   3. the trainer (.devbin/nnkern, --backend cuda: steps replayed as CUDA graphs, and
#      launch by launch with NNKERN_CUDA_GRAPHS=0) beside PyTorch on the same GPU, through
#      scripts/compare_peers.py --device cuda: every epoch's time, the 10 epochs' training
#      time, and the targets (10 epochs < 1 s, >= 5x PyTorch; lines "target: ... PASS|FAIL").
# Prints a PASS/FAIL summary; full logs and criterion's output go to $OUT.
#   usage: bash .devbin/device-check.sh [all|tests|bench|train]     (about 5-8 minutes in all)
# knobs: BUDGET_S (stop starting new steps after this, default 420), PER_STEP_TIMEOUT (240),
#        BENCH_WARMUP/BENCH_TIME/BENCH_SAMPLES (1/2/10), BENCH_FILTER, PROPTEST_CASES (24),
#        PYTHON (python3, with torch), TRAIN_SEEDS (0), DRY=1 (print the steps, run nothing)
set -u
D=$(cd "$(dirname "$0")" && pwd)
WHAT=${1:-all}
OUT=${OUT:-/tmp/devout}; mkdir -p "$OUT"
LOG=$OUT/device-check.log; : > "$LOG"
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-420}
export REQUIRE_GPU=1 RUST_BACKTRACE=1 PROPTEST_CASES=${PROPTEST_CASES:-24}
say() { echo "$*" | tee -a "$LOG"; }
case "$WHAT" in all|tests|bench|train) ;; *) echo "usage: $0 [all|tests|bench|train]" >&2; exit 2 ;; esac
DRY=${DRY:-0}
say "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
# libcublas.so.13 may sit outside the loader's cache on the GPU image.
if ! ldconfig -p 2>/dev/null | grep -q 'libcublas.so.13 '; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 \
           $(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null); do
    [ -e "$d/libcublas.so.13" ] && export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} && break
  done
fi
say "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
declare -a SUMMARY=(); nfail=0
step() {
  local name=$1; shift
  if [ $(( $(date +%s) - T0 )) -ge "$BUDGET_S" ]; then SUMMARY+=("SKIP(budget) $name"); return; fi
  say "-- $name: $*"
  if [ "$DRY" = 1 ]; then SUMMARY+=("DRY $name"); return; fi
  local s
  s=$(date +%s)
  timeout --kill-after=10 "${PER_STEP_TIMEOUT:-240}" "$@" > "$OUT/cur.log" 2>&1
  local rc=$?
  cat "$OUT/cur.log" >> "$LOG"
  grep -E '^test .* FAILED|^test result|panicked at|CUDA device:|time:|thrpt:|^[a-z0-9_]+/|^bf16 gemm|elements differ|^target:|^\| |^GPU:|epochs ' "$OUT/cur.log" | head -80
  local st=PASS; [ $rc -eq 0 ] || { st=FAIL; nfail=$((nfail + 1)); }
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && st=TIMEOUT
  SUMMARY+=("$st $name rc=$rc $(( $(date +%s) - s ))s"); say "   => $st"
}
if [ "$WHAT" = all ] || [ "$WHAT" = tests ]; then
  # The GPU tests and the library's unit tests (device errors, JIT log); the CPU-only
  # binaries only with TESTS=all, to spend device time on what needs the device.
  if [ "${TESTS:-gpu}" = all ]; then set -- "$D"/test/*; else set -- "$D"/test/test-cuda "$D"/test/test-ptx_kernels "$D"/test/rlib-nnkern; fi
  for t in "$@"; do
    [ -x "$t" ] || continue
    step "$(basename "$t")" "$t" --include-ignored --test-threads=1
  done
  # The trainer's GPU test (graph replay against launch by launch); its other tests run the
  # executor and the cargo-built binary, which is not here.
  t=$D/test/test-train_cuda
  if [ -x "$t" ] && [ "${TESTS:-gpu}" != all ]; then
    step "test-train_cuda (gpu_)" "$t" --include-ignored --test-threads=1 gpu_
  fi
fi
if [ "$WHAT" = all ] || [ "$WHAT" = bench ]; then
  export CRITERION_HOME=$OUT/criterion
  for b in "$D"/bench/*; do
    [ -x "$b" ] || continue
    step "bench $(basename "$b")" "$b" --bench --noplot --warm-up-time "${BENCH_WARMUP:-1}" \
      --measurement-time "${BENCH_TIME:-2}" --sample-size "${BENCH_SAMPLES:-10}" ${BENCH_FILTER:+"$BENCH_FILTER"}
  done
  [ -d "$OUT/criterion" ] && tar czf "$OUT/criterion.tgz" -C "$OUT" criterion && rm -rf "$OUT/criterion"
fi
if [ "$WHAT" = all ] || [ "$WHAT" = train ]; then
  # Run from the repository root: the script and the bundled data are in the working tree.
  PY=${PYTHON:-python3}
  if [ -x "$D/nnkern" ] && [ -f scripts/compare_peers.py ]; then
    step "train beside torch" "$PY" scripts/compare_peers.py --device cuda --nnkern-exe "$D/nnkern" \
      --python "$PY" --peers torch --graphs both --seeds "${TRAIN_SEEDS:-0}" --check-targets
  else
    SUMMARY+=("SKIP train: no $D/nnkern or no scripts/compare_peers.py here ($(pwd))")
  fi
fi
rm -f "$OUT/cur.log"
{ echo "== summary ($(( $(date +%s) - T0 ))s, $nfail not passing)"; printf '%s\n' "${SUMMARY[@]}"; } | tee "$OUT/summary.txt" | tee -a "$LOG"
[ "$nfail" -eq 0 ]
