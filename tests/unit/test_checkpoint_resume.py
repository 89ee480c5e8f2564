"""Which checkpoint a cross-validation trial's fold resumes from (no Ray cluster: get_checkpoint is stubbed)."""

from __future__ import annotations

import pytest
import ray.train
import torch

from tumorbench.errors import DataError
from tumorbench.training.checkpoint import fold_checkpoint_name, resume_latest
from tumorbench.training.state import LoopState


def _resume(monkeypatch, path, fold):
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None if path is None else ray.train.Checkpoint(str(path)))
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    return resume_latest(model, optimizer, scheduler, precision=None, fold=fold)


def test_a_fold_never_reads_another_folds_checkpoint(monkeypatch, tmp_path):
    # At fold 2's start a rank's latest checkpoint may be fold 0's, which Train (keeping one) has deleted:
    # the name says it is another fold's, so it is not opened.
    gone = tmp_path / fold_checkpoint_name(0, 7)
    assert gone.name == "fold_0_epoch_0007" and not gone.exists()
    assert vars(_resume(monkeypatch, gone, fold=2)) == vars(LoopState())
    assert vars(_resume(monkeypatch, None, fold=0)) == vars(LoopState())
    # this fold's latest checkpoint missing is a real error, named with its path
    with pytest.raises(DataError, match="fold_2_epoch_0003"):
        _resume(monkeypatch, tmp_path / fold_checkpoint_name(2, 3), fold=2)
