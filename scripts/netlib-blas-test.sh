#!/usr/bin/env bash
# netlib's own level-3 BLAS testers, from Debian's libblas-test, run against
# libnnkern.so: the CBLAS tester xscblat3 (input sin3) for cblas_sgemm and the
# Fortran tester xblat3s (input sblat3.in) for sgemm_, with every routine but
# SGEMM switched off, N up to 65 and the error-exit tests on. Each tester runs
# with the reference BLAS (Debian's libblas3) for everything else and our
# library preloaded in front of it; the testers define cblas_xerbla/xerbla_
# themselves and count the error exits our library reports to them.
#
# Fails unless both testers report SGEMM's error exits and computational tests
# (both layouts for CBLAS) as PASSED, nothing FAILed or went undetected, and
# the testers' calls bound to our cblas_sgemm / sgemm_.
#   usage: scripts/netlib-blas-test.sh        (from anywhere; installs libblas-test
#          and libblas3 with apt-get when missing, as root or through sudo)
# knobs: NNKERN_LIB (default: build with cargo build --release -p nnkern-clib),
#        KEEP=1 leaves the work folder (printed) in place.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n--- %s\n' "$1"; }

if ! dpkg -s libblas-test libblas3 >/dev/null 2>&1; then
  step "installing libblas-test and the reference libblas3"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libblas-test libblas3 >/dev/null
fi
# The testers and the reference libblas.so.3 lie together (/usr/lib/<multiarch>/blas).
blas_dir=$(dirname "$(dpkg -L libblas-test | grep '/xscblat3$')")
for f in xscblat3 xblat3s libblas.so.3; do
  [ -e "$blas_dir/$f" ] || { echo "missing $blas_dir/$f after installing libblas-test libblas3" >&2; exit 1; }
done

if [ -z "${NNKERN_LIB:-}" ]; then
  step "cargo build --release -p nnkern-clib"
  cargo build --release -p nnkern-clib
  NNKERN_LIB=${CARGO_TARGET_DIR:-target}/release/libnnkern.so
fi
NNKERN_LIB=$(readlink -f "$NNKERN_LIB")
[ -f "$NNKERN_LIB" ] || { echo "no library at $NNKERN_LIB" >&2; exit 1; }

work=$(mktemp -d)
if [ "${KEEP:-0}" = 1 ]; then echo "work folder: $work"; else trap 'rm -rf "$work"' EXIT; fi
cd "$work"

# The testers' input files (their fixed-column format): error exits on (T),
# nine values of N from 0 to 65 (the testers' maximum), all routines but
# SGEMM off.
cat > sin3 <<'IN'
'SBLAT3.SNAP'     NAME OF SNAPSHOT OUTPUT FILE
-1                UNIT NUMBER OF SNAPSHOT FILE (NOT USED IF .LT. 0)
F        LOGICAL FLAG, T TO REWIND SNAPSHOT FILE AFTER EACH RECORD.
F        LOGICAL FLAG, T TO STOP ON FAILURES.
T        LOGICAL FLAG, T TO TEST ERROR EXITS.
2        0 TO TEST COLUMN-MAJOR, 1 TO TEST ROW-MAJOR, 2 TO TEST BOTH
16.0     THRESHOLD VALUE OF TEST RATIO
9                 NUMBER OF VALUES OF N
0 1 2 3 5 9 16 33 65 VALUES OF N
3                 NUMBER OF VALUES OF ALPHA
0.0 1.0 0.7       VALUES OF ALPHA
3                 NUMBER OF VALUES OF BETA
0.0 1.0 1.3       VALUES OF BETA
cblas_sgemm  T PUT F FOR NO TEST. SAME COLUMNS.
cblas_ssymm  F PUT F FOR NO TEST. SAME COLUMNS.
cblas_strmm  F PUT F FOR NO TEST. SAME COLUMNS.
cblas_strsm  F PUT F FOR NO TEST. SAME COLUMNS.
cblas_ssyrk  F PUT F FOR NO TEST. SAME COLUMNS.
cblas_ssyr2k F PUT F FOR NO TEST. SAME COLUMNS.
IN
cat > sblat3.in <<'IN'
'sblat3.out'      NAME OF SUMMARY OUTPUT FILE
6                 UNIT NUMBER OF SUMMARY FILE
'SBLAT3.SNAP'     NAME OF SNAPSHOT OUTPUT FILE
-1                UNIT NUMBER OF SNAPSHOT FILE (NOT USED IF .LT. 0)
F        LOGICAL FLAG, T TO REWIND SNAPSHOT FILE AFTER EACH RECORD.
F        LOGICAL FLAG, T TO STOP ON FAILURES.
T        LOGICAL FLAG, T TO TEST ERROR EXITS.
16.0     THRESHOLD VALUE OF TEST RATIO
9                 NUMBER OF VALUES OF N
0 1 2 3 5 9 16 33 65 VALUES OF N
3                 NUMBER OF VALUES OF ALPHA
0.0 1.0 0.7       VALUES OF ALPHA
3                 NUMBER OF VALUES OF BETA
0.0 1.0 1.3       VALUES OF BETA
SGEMM  T PUT F FOR NO TEST. SAME COLUMNS.
SSYMM  F PUT F FOR NO TEST. SAME COLUMNS.
STRMM  F PUT F FOR NO TEST. SAME COLUMNS.
STRSM  F PUT F FOR NO TEST. SAME COLUMNS.
SSYRK  F PUT F FOR NO TEST. SAME COLUMNS.
SSYR2K F PUT F FOR NO TEST. SAME COLUMNS.
IN

failed=0
# run NAME TESTER INPUT REPORT SYMBOL: runs the tester with our library preloaded
# (its dynamic-linker bindings logged), the report is REPORT (a file or -).
run() {
  local name=$1 tester=$2 input=$3 report=$4 symbol=$5 rc=0
  step "$name: $tester < $input, LD_PRELOAD=$NNKERN_LIB"
  LD_LIBRARY_PATH="$blas_dir" LD_PRELOAD="$NNKERN_LIB" LD_DEBUG=bindings LD_DEBUG_OUTPUT="$work/$name.ld" \
    "$blas_dir/$tester" < "$input" > "$name.stdout" 2> "$name.stderr" || rc=$?
  if [ "$report" = - ]; then cp "$name.stdout" "$name.report"; else cat "$name.stdout" "$report" > "$name.report"; fi
  grep -v '^ *$' "$name.report" || true
  if [ -s "$name.stderr" ]; then echo "stderr:"; cat "$name.stderr"; fi
  if [ "$rc" != 0 ]; then echo "FAILED: $tester exited with status $rc"; failed=1; fi
  # The tester's own calls must have reached our library, not the reference.
  if ! grep -qF "to $NNKERN_LIB [0]: normal symbol \`$symbol'" "$work/$name.ld".*; then
    echo "FAILED: $tester's $symbol did not bind to $NNKERN_LIB"; failed=1
  fi
}

expect() {  # expect NAME TEXT: the report holds the line TEXT
  if ! grep -qF -- "$2" "$1.report"; then echo "FAILED: $1: no line \"$2\""; failed=1; fi
}
reject() {  # reject NAME PATTERN: the report has no line matching PATTERN
  if grep -nE -- "$2" "$1.report"; then echo "FAILED: $1: the lines above match \"$2\""; failed=1; fi
}

run cblas xscblat3 sin3 - cblas_sgemm
run fortran xblat3s sblat3.in sblat3.out sgemm_

expect cblas "cblas_sgemm  PASSED THE TESTS OF ERROR-EXITS"
expect cblas "cblas_sgemm  PASSED THE COLUMN-MAJOR COMPUTATIONAL TESTS"
expect cblas "cblas_sgemm  PASSED THE ROW-MAJOR    COMPUTATIONAL TESTS"
expect fortran "SGEMM  PASSED THE TESTS OF ERROR-EXITS"
expect fortran "SGEMM  PASSED THE COMPUTATIONAL TESTS"
for name in cblas fortran; do
  reject "$name" "FAIL|NOT DETECTED|XERBLA WAS CALLED|SUSPECT|FATAL"
done

step "summary"
if [ "$failed" != 0 ]; then
  echo "netlib BLAS testers: FAILED"
  exit 1
fi
echo "netlib BLAS testers: cblas_sgemm and sgemm_ passed (error exits, computational tests)"
