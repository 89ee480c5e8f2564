#!/usr/bin/env bash
# GPU benchmark (<= 5 minutes, JSON): 2D U-Net fp32 vs AMP images/s, the LGG epoch time and GPU busy
# fraction through the project's loader, 3D SegResNet patches/s (see scripts/gpu_check.py).
#
#   scripts/gpu_check.sh --json runs/gpu_check.json
#   scripts/gpu_check.sh --steps 100 --amp off,auto,fp16 --json runs/gpu_check.json
# Without a GPU it prints what it would measure (a dry run) and exits 0.
#
# Python: $GPU_CHECK_PYTHON if set; else .venv, made with `make install` when it is
# not installed yet (as `make test` does); if that fails (no network), a python3 that
# already has torch with CUDA and the project's dependencies, with platform/ on its path.
# Exit status: 0 done (or dry run without a GPU), 3 no usable Python environment, else the check failed.
# On a bare CUDA image that has torch but not monai/nibabel/pydicom (and no network), copy
# those three packages from .venv's site-packages into an ignored folder, carry it, and run
#   GPU_CHECK_PYTHON=python3 PYTHONPATH=<that folder> scripts/gpu_check.sh
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STAMP="$VENV/.tumorbench-installed"
DEPS_PROBE='import torch, tumorbench.models, tumorbench.training.tasks'

# No GPU: a dry run (what would be measured), exit 0, so CPU-only CI can run this script.
no_gpu() {
    echo "gpu_check: no CUDA GPU: $1" >&2
    if [[ -n "${PY:-}" ]]; then exec "$PY" scripts/gpu_check.py --dry-run "${ARGS[@]}"; fi
    for candidate in "${GPU_CHECK_PYTHON:-}" "$VENV/bin/python" python3; do
        if [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null 2>&1; then
            exec "$candidate" scripts/gpu_check.py --dry-run "${ARGS[@]}"
        fi
    done
    echo "gpu_check dry run: would measure 2D U-Net fp32 vs AMP img/s, GPU busy fraction, LGG epoch time," \
         "3D SegResNet patches/s"
    exit 0
}
ARGS=("$@")

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
