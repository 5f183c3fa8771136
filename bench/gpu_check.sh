#!/usr/bin/env bash
# GPU figures on a lent NVIDIA GPU (issue 42, item 5): the CUDA paths users take, at most 8 minutes,
# one record (bench/results/gpu_check.json; the steps and their limits: bench/gpu_check.py).
#
#   bench/gpu_check.sh [--out PATH] [--budget-s 470] [--data-config configs/data/ml-1m.yaml]
#
# PYTHON picks the interpreter (default: .venv/bin/python when present, else python). Without a
# CUDA device every GPU-bound step is skipped in seconds, each with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then python="$PYTHON"
elif [[ -x .venv/bin/python ]]; then python=.venv/bin/python
else python=python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# the last resort: the steps keep to --budget-s themselves, this ends anything that still hangs
exec timeout -k 15 480 "$python" bench/gpu_check.py "$@"
