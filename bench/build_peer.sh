#!/usr/bin/env bash
# Build the peer (mamba-ssm 2.3.2.post1, CUDA selective_scan) from its PyPI sdist for sm_90 only,
# into DEST (default /tmp/peer), for a same-run comparison in bench/bench_scan.py. Offline: the sdist
# comes from .peer/ (fetch it once with
#   MAMBA_SKIP_CUDA_BUILD=TRUE pip download --no-deps --no-binary :all: --no-build-isolation \
#       mamba-ssm==2.3.2.post1 -d .peer ;  pip download --no-deps einops -d .peer ).
# The peer's code is never committed; this script only builds it where the benchmark runs.
set -euo pipefail
DEST=${1:-/tmp/peer}
SRC=$(cd "${PEER_SDIST_DIR:-.peer}" && pwd)
work=$(mktemp -d)
tar xzf "$SRC/mamba_ssm-2.3.2.post1.tar.gz" -C "$work"
cd "$work/mamba_ssm-2.3.2.post1"
python3 - <<'PY'
s = open("setup.py").read()
marker = "    # HACK: The compiler flag"
assert marker in s
s = s.replace(marker, '    cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]  # H100/H200 only\n' + marker, 1)
open("setup.py", "w").write(s)
PY
MAMBA_FORCE_BUILD=TRUE MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index --target "$DEST" .
cp "$SRC"/einops-*.whl "$DEST"/ 2>/dev/null || true
echo "peer built into $DEST"
