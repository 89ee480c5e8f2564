"""scripts/gpu_check: a dry run without a GPU, and its measurements run (on the CPU, tiny) without error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from tests.conftest import load_script

REPO = Path(__file__).resolve().parents[2]


def _module():
    return load_script("scripts/gpu_check.py")


def test_dry_run_says_what_it_would_measure_and_exits_0(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--dry-run", "--json", str(tmp_path / "g.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for section in ("amp:", "lgg_epoch:", "segresnet3d:", "GPU busy fraction"):
        assert section in done.stdout
    assert not (tmp_path / "g.json").exists()  # a dry run writes nothing


def test_sections_run_on_cpu(tmp_path):
    gpu_check = _module()
    args = gpu_check._parse(["--patch", "16", "--lgg", str(tmp_path / "absent")])
    result = gpu_check.segresnet3d(args, torch.device("cpu"), steps=1)
    assert result["patch"] == [2, 4, 16, 16, 16] and result["patches_per_s"] > 0
    assert gpu_check.lgg_epoch(args, torch.device("cpu")) == {"skipped": f"no LGG data at {tmp_path / 'absent'}"}
    with gpu_check.BusySampler() as busy:  # no nvidia-smi here: no samples, no error
        pass
    assert busy.busy_fraction() is None
