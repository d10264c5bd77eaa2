#!/usr/bin/env bash
# Build the peer — mamba-ssm 2.3.2.post1 (CUDA selective scan, its Mamba model and generate()) and
# causal-conv1d 1.7.0 (the conv kernels its model and decoder use) — from their PyPI sdists for sm_90 only,
# both in parallel, into DEST (default /tmp/peer), for same-run comparisons in bench/bench_scan.py,
# bench/bench_generate.py and bench/bench_e2e.py. Offline: the sdists come from .peer/ (fetch them once with
#   MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE pip download --no-deps --no-binary :all: \
#       --no-build-isolation mamba-ssm==2.3.2.post1 causal-conv1d==1.7.0 -d .peer ; pip download --no-deps einops -d .peer )
# Seen on an H200 host: mamba-ssm ~2.5 min, causal-conv1d ~7 min. PEER_ONLY=mamba builds mamba-ssm alone.
# The peer's code is never committed; this script only builds it where the benchmark runs.
set -euo pipefail
DEST=${1:-/tmp/peer}
SRC=$(cd "${PEER_SDIST_DIR:-.peer}" && pwd)
JOBS=${MAX_JOBS:-16}

build() {  # build NAME-VERSION (sdist in $SRC) for sm_90 only into $DEST
  local pkg=$1 work
  work=$(mktemp -d)
  tar xzf "$SRC/$pkg.tar.gz" -C "$work"
  cd "$work/$pkg"
  python3 - <<'PY'
s = open("setup.py").read()
marker = "    # HACK: The compiler flag"
assert marker in s, "setup.py layout changed: cannot restrict the build to sm_90"
s = s.replace(marker, '    cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]  # H100/H200 only\n' + marker, 1)
open("setup.py", "w").write(s)
PY
  MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE MAX_JOBS=$JOBS \
    python3 -m pip install -q --no-build-isolation --no-deps --no-index --target "$DEST" . > "$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log"; echo "FAILED to build $pkg"; return 1; }
  echo "built $pkg"
}

mkdir -p "$DEST"
t0=$(date +%s)
build mamba_ssm-2.3.2.post1 & m=$!
c=""
if [ "${PEER_ONLY:-}" != "mamba" ]; then build causal_conv1d-1.7.0 & c=$!; fi
wait $m
[ -n "$c" ] && wait $c
cp "$SRC"/einops-*.whl "$DEST"/ 2>/dev/null && (cd "$DEST" && python3 -m zipfile -e einops-*.whl . ) || true
echo "peer built into $DEST in $(( $(date +%s) - t0 )) s"
