#!/usr/bin/env bash
# GPU check: train the 2D U-Net with the project's AMP path for a fixed number of
# steps and print images/s, the AMP-vs-fp32 speed-up and peak GPU memory.
#
#   scripts/gpu_check.sh                         # 10 warm-up + 50 timed steps, fp32 vs auto (bf16/fp16)
#   scripts/gpu_check.sh --steps 100 --amp off,auto,fp16 --json runs/gpu_check.json
#
# Python: $GPU_CHECK_PYTHON if set; else .venv, made with `make install` when it is
# not installed yet (as `make test` does); if that fails (no network), a python3 that
# already has torch with CUDA and the project's dependencies, with platform/ on its path.
# Exit status: 0 done, 2 no CUDA GPU, 3 no usable Python environment, else the check failed.
# On a bare CUDA image that has torch but not monai/nibabel/pydicom (and no network), copy
# those three packages from .venv's site-packages into an ignored folder, carry it, and run
#   GPU_CHECK_PYTHON=python3 PYTHONPATH=<that folder> scripts/gpu_check.sh
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STAMP="$VENV/.tumorbench-installed"
DEPS_PROBE='import torch, tumorbench.models, tumorbench.training.tasks'

no_gpu() { echo "gpu_check: no CUDA GPU: $1" >&2; exit 2; }

command -v nvidia-smi >/dev/null 2>&1 || no_gpu "nvidia-smi not found"
nvidia-smi -L >/dev/null 2>&1 || no_gpu "nvidia-smi found no device (driver not loaded?)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [[ -n "${GPU_CHECK_PYTHON:-}" ]]; then
    PY=$GPU_CHECK_PYTHON
    export PYTHONPATH="$PWD/platform${PYTHONPATH:+:$PYTHONPATH}"
elif [[ -f "$STAMP" ]] || make install; then
    PY="$VENV/bin/python"
else
    echo "gpu_check: 'make install' failed; trying python3 with platform/ on PYTHONPATH" >&2
    PY=python3
    export PYTHONPATH="$PWD/platform${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "$DEPS_PROBE" 2>/dev/null; then
    echo "gpu_check: $PY cannot import torch and the project ($DEPS_PROBE):" >&2
    "$PY" -c "$DEPS_PROBE" 2>&1 | tail -n 3 >&2 || true
    echo "gpu_check: run 'make install', or set GPU_CHECK_PYTHON to a Python that has torch (CUDA) and" \
         "the packages of pyproject.toml (monai, timm, nibabel, pydicom, ...)" >&2
    exit 3
fi
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || no_gpu "$PY's torch sees none (a CPU-only torch build, or CUDA_VISIBLE_DEVICES hides it)"

exec "$PY" scripts/gpu_check.py "$@"
