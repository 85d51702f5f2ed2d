#!/usr/bin/env bash
# CI, no GPU: assemble every kernels/*.ptx with ptxas 13.0 (the PTX ISA of the CUDA 13.0
# driver's JIT) for the .target it declares, and fail on
#   - a syntax error or any other ptxas failure,
#   - a .version above 9.0,
#   - any spill or local memory: non-zero "spill stores/loads" or "stack frame" in the
#     -v report, or LDL/STL instructions in the SASS,
#   - a kernel file marked "ci: requires M1 M2 ..." whose SASS lacks one of the SASS
#     mnemonics it names (HMMA: mma.sync tensor cores; HGMMA: wgmma; UTMALDG: bulk
#     tensor loads), matched as a word prefix (HGMMA.64x256x16.F32, UTMALDG.2D),
#   - a setmaxnreg that ptxas ignores (warning C7508).
# ptxas, cuobjdump and nvdisasm come from PyPI wheels, hash-pinned (.ci/requirements-ptxas.txt).
#   usage: .ci/ptxas.sh            (tools cached in $PTX_TOOLS, default ~/.cache/nnkern-ptx-tools-13.0.88)
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${PTX_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/nnkern-ptx-tools-13.0.88}
if [ ! -x "$TOOLS/nvidia/cu13/bin/ptxas" ] || [ ! -x "$TOOLS/nvidia/cu13/bin/cuobjdump" ]; then
  python3 -m pip install -q --no-deps --only-binary=:all: --no-compile --require-hashes \
      --target "$TOOLS" -r .ci/requirements-ptxas.txt
  chmod +x "$TOOLS"/nvidia/cu13/bin/{ptxas,cuobjdump,nvdisasm} 2>/dev/null || true
fi
BIN=$TOOLS/nvidia/cu13/bin
"$BIN/ptxas" --version | tail -2 | head -1
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
fail=0
bad() { echo "    FAIL: $*"; fail=$((fail + 1)); }
for f in kernels/*.ptx; do
  arch=$(awk '$1 == ".target" { print $2; exit }' "$f")
  ver=$(awk '$1 == ".version" { print $2; exit }' "$f")
  echo "--- $f (.version $ver, -arch=$arch)"
  if [ -z "$arch" ] || [ -z "$ver" ]; then bad "no .target or .version"; continue; fi
  if awk -v v="$ver" 'BEGIN { split(v, p, "."); exit !(p[1] * 10 + p[2] > 90) }'; then
    bad ".version $ver is above 9.0"
  fi
  cubin="$OUT/$(basename "$f" .ptx).cubin"
  if ! "$BIN/ptxas" -v -arch="$arch" -O3 "$f" -o "$cubin" > "$OUT/log" 2>&1; then
    sed 's/^/    /' "$OUT/log"; bad "ptxas failed"; continue
  fi
  grep -E 'Compiling entry|Used [0-9]+ registers|stack frame' "$OUT/log" | sed 's/^ptxas info    : /    /'
  if grep -E '[1-9][0-9]* bytes (stack frame|spill stores|spill loads)' "$OUT/log" >/dev/null; then
    bad "spills or stack frame"
  fi
  sass=$("$BIN/cuobjdump" -sass "$cubin")
  if grep -qE '\b(LDL|STL)\b' <<< "$sass"; then bad "local memory (LDL/STL) in SASS"; fi
  if grep -q 'C7508' "$OUT/log"; then bad "setmaxnreg ignored by ptxas (C7508)"; fi
  echo "    SASS: $(grep -oE '\b(HMMA|HGMMA|UTMALDG|SYNCS|USETMAXREG|LDSM|LDGSTS|FFMA|LDS|LDG)\b' <<< "$sass" | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"
  for want in $(sed -n 's|^// ci: requires \([A-Z0-9 ]*\).*|\1|p' "$f"); do
    if ! grep -qE "\b$want(\b|\.)" <<< "$sass"; then bad "marked 'ci: requires $want' but the SASS has no $want"; fi
  done
done
echo "ptxas check: $fail failure(s)"
[ "$fail" -eq 0 ]
