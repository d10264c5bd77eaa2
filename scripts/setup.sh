#!/usr/bin/env bash
# Set up mambaseq in a virtual environment (.venv by default) on a fresh machine.
#   bash scripts/setup.sh [VENV_DIR]
# Installs the real example data from Debian packages where apt exists (human/chimp/gorilla/orangutan chr22
# alignment, human chr20 FASTA, espeak-ng + sox for spoken digits); without them the pipelines fall back to
# clearly-labelled synthetic data. CPU machines get the local torch 2.13.0 CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    echo "[setup] apt: maffilter-examples vt-examples espeak-ng sox"
    if ! { $SUDO apt-get update -qq && \
           DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq maffilter-examples vt-examples espeak-ng sox >/dev/null; }; then
      echo "[setup] apt install failed: pipelines will use their synthetic fallbacks (labelled as such)"
    fi
  else
    echo "[setup] not root and no sudo: skipping apt data packages (synthetic fallbacks will be used)"
  fi
fi

python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first and pinned: on a CPU machine this takes the local 2.13.0 CPU build instead of CUDA wheels.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[test]"
echo "[setup] done: $("$VENV/bin/mambaseq" info)"
