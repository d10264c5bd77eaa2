#!/usr/bin/env bash
# One call on a lent H200 for issue 12 (everything that must share one run): install, build the peer in the
# background, the fused block's GPU tests, a profile of one training step, our rows, the peer's rows once it
# is built, our LM rows again (uncontended by the peer's compilers), and the merged table. Files go to $OUT.
#   carry: .whl .peer      budget: BUDGET_S seconds in all (default 570)
# The device tool sends the session's own checkout; from another worktree, copy the tree (git archive HEAD,
# plus .whl/ and .peer/) into an ignored folder of that checkout, carry that folder and cd into it first.
set -uo pipefail
T0=$(date +%s); BUDGET=${BUDGET_S:-570}
el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . > /dev/null 2>&1 || exit 1
python3 -c "import mambaseq.kernels as k; print('kernels from', k.__file__)"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv,noheader
if [ "${SKIP_PEER:-0}" != 1 ]; then
  ( MAX_JOBS=${PEER_JOBS:-5} bash bench/build_peer.sh /tmp/peer > "$OUT/peer_build.log" 2>&1; touch /tmp/peer_done ) &
fi
el "GPU tests: fused block, then the scan kernels (changed: z row stride, gated-output store)"
timeout 150 python3 -m pytest -q -n 6 -p no:cacheprovider tests/test_mamba_inner.py \
  tests/test_kernels_scan_triton.py::test_scan_triton_gpu -k "gpu or argument or reference_function" 2>&1 | tail -12 | tee "$OUT/tests.log"
el "ours, every row (the peer still compiling beside it)"
timeout 150 python3 bench/bench_e2e.py run --sides ours --timeout 75 --name e2e_ours_a.json 2>&1 | tail -9
el "profile: ours, one LM training step"
timeout 60 python3 bench/bench_e2e.py profile --side ours --only lm_train_b8_L2048 2>&1 | head -40
if [ "${SKIP_PEER:-0}" != 1 ]; then
  el "waiting for the peer build"
  while [ ! -f /tmp/peer_done ] && [ "$(left)" -gt 150 ]; do sleep 5; done
  tail -3 "$OUT/peer_build.log"
  el "peer, every row"
  timeout $(( $(left) - 60 )) python3 bench/bench_e2e.py run --sides peer --name e2e_peer.json 2>&1 | tail -9
fi
if [ "$(left)" -gt 45 ]; then
  el "ours again, LM rows (no compiler beside it)"
  timeout $(( $(left) - 10 )) python3 bench/bench_e2e.py run --sides ours --only lm_train_b8_L2048 lm_train_b1_L131072 \
    --name e2e_ours_b.json 2>&1 | tail -4
fi
el "merged table"
python3 bench/bench_e2e.py table $(ls "$OUT"/e2e_ours_a.json "$OUT"/e2e_peer.json "$OUT"/e2e_ours_b.json 2>/dev/null) \
  --name e2e_final.json
el done
