#!/usr/bin/env bash
# One command of the audio plan of issue 16 on a lent H200 (keep the machine warm between the commands:
# runs/ lives there). Files for the repo go to $OUT.
#   carry: .whl (hydra-core, omegaconf, antlr4-python3-runtime 4.9.3, soundfile, biopython: cp312 wheels)
#          and, on the first command, data/sc09.tgz, made here by
#            mambaseq audio prepare && tar -czf data/sc09.tgz -C data sc09      # ~31 MiB, SYNTHETIC digits
#   bash bench/run_audio_gpu.sh train       # x3: experiment=sc09_h200, train.steps_per_call steps each
#   bash bench/run_audio_gpu.sh finish      # samples, continuations, metrics; $OUT: metrics, listen.tgz
#   bash bench/run_audio_gpu.sh ablation train.max_steps=400   # --units 2 a command (repeat until "done"):
#        one variant trained and scored per command; 4 commands of ~5 min for the paper grid at 400 steps
# Extra Hydra overrides follow the action (e.g. train.steps_per_call=300); EXP picks another experiment.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
EXP=${EXP:-sc09_h200}
if [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . > /dev/null 2>&1 || exit 1
if [ ! -f data/sc09/manifest.json ]; then
  mkdir -p data && tar -xzf data/sc09.tgz -C data || { echo "no data/sc09: carry data/sc09.tgz"; exit 1; }
fi
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
action=${1:?usage: run_audio_gpu.sh train|finish|ablation [overrides]}; shift
run=runs/audio/synthetic_sashimi
case "$action" in
  train)
    python3 -m mambaseq audio train experiment="$EXP" --resume "$@" 2>&1 | tee "$OUT/train_$(date +%H%M%S).log"
    cp "$run/train_summary.json" "$OUT/" ;;
  finish)
    python3 -m mambaseq audio run experiment="$EXP" --resume "$@" 2>&1 | tee "$OUT/finish.log"
    cp "$run/metrics.json" "$run/train_summary.json" "$run/samples/samples.json" "$OUT/"
    # the listening page with what it shows (the first generate.mel_examples clips of each kind)
    (cd "$run" && tar -czf "$OUT/listen.tgz" listen.html samples/mel samples/mel_generated_vs_real.png \
        $(python3 -c "import re; print(' '.join(sorted(set(re.findall(r'src=\"(samples/[^\"]+\.wav)\"', open('listen.html').read())))))")) ;;
  ablation)
    python3 bench/bench_audio_ablation.py --data-dir data/sc09 --units "${UNITS:-2}" \
      experiment="${EXP_ABLATION:-sc09_gpu}" "$@" \
      2>&1 | tee "$OUT/ablation_$(date +%H%M%S).log"
    cp bench/results/audio_ablation_*.json "$OUT/" 2>/dev/null || true ;;
  *) echo "unknown action $action (train | finish | ablation)"; exit 2 ;;
esac
