"""Under nested selection a fold's outer predictions and inner-chosen weights go through the fold's storage
(S3 here: a moto server on loopback), not its local folder: on a cluster, rank 0 and the trial reading them,
or a run resumed after a lost node, are on different machines. In-process, no Ray."""

from __future__ import annotations

import copy

import pytest
import torch
from test_nested_selection import _config

from conftest import write_blob_folders
from tumorbench import storage
from tumorbench.training import data as fold_data
from tumorbench.training.config import TrainConfigError
from tumorbench.training.loop import fit_fold, seed_everything
from tumorbench.training.nested import load_chosen, write_outer
from tumorbench.training.state import LoopState
from tumorbench.training.tasks import build_model
from tumorbench.training.trainer import run_storage
from tumorbench.tuning.trial import fold_predictions

pytestmark = pytest.mark.slow


def test_outer_predictions_written_on_one_node_are_read_on_another(local_s3, tmp_path):
    _, bucket = local_s3
    fold = f"{bucket}/searches/m/trial_1/fold_0"
    worker = _config(tmp_path).replace(out=str(tmp_path / "worker-node" / "fold_0"), storage=fold)
    records = [{"case_id": "yes/yes1.png", "patient_id": "yes/yes1.png", "y_true": 1, "p_1": 0.8}]
    write_outer(run_storage(worker), {"auc": 0.75, "epoch": 2}, records)
    assert not (tmp_path / "worker-node").exists()  # nothing kept on the worker's own disk
    assert storage.listing(fold) == ["outer/metrics.json", "outer/predictions.json"]
    trial = worker.replace(out=str(tmp_path / "trial-node" / "fold_0"))
    outer, got = fold_predictions(trial, run_storage(trial), checkpoint=f"{fold}/train/checkpoint_epoch_0002")
    assert outer == {"auc": 0.75, "epoch": 2} and got == records
    # A fold whose run wrote nothing is an error, not a silent fall-back to the inner validation predictions.
    missing = trial.replace(fold=1, storage=f"{bucket}/searches/m/trial_1/fold_1")
    with pytest.raises(TrainConfigError, match="fold 1: training finished without the outer fold's predictions"):
        fold_predictions(missing, run_storage(missing), checkpoint="unused")


def test_inner_choice_on_storage_survives_a_resume_on_another_node(local_s3, tmp_path):
    _, bucket = local_s3
    write_blob_folders(tmp_path / "data", n=15)
    first = _config(tmp_path).replace(out=str(tmp_path / "node-a"), storage=f"{bucket}/fold")
    fold_data.ensure_split_file(first, fold_data.load_catalog(first))
    cases = fold_data.fold_cases(first)
    seed_everything(first.seed)
    in_ch, out_ch = fold_data.io_channels(first, cases)
    model, _ = build_model(first, in_ch, out_ch)
    kept, states = {}, []

    def report(metrics, state, *_):
        if metrics["improved"]:
            kept[metrics["epoch"]] = copy.deepcopy(model.state_dict())
        states.append(copy.deepcopy(vars(state)))

    outer = fit_fold(first, cases, model, torch.device("cpu"), 0, 1, report)
    best = states[-1]["best_epoch"]
    chosen = load_chosen(run_storage(first))
    for key, value in kept[best].items():
        torch.testing.assert_close(chosen[key], value)
    assert "outer/chosen_weights.pt" in storage.listing(f"{bucket}/fold")
    assert not (tmp_path / "node-a" / "outer").exists()

    # The run resumed on another node (another local folder) after its last epoch: it scores the outer fold
    # with the chosen weights read from storage, whatever weights it holds (here an untrained model's).
    second = first.replace(out=str(tmp_path / "node-b"))
    torch.manual_seed(99)
    fresh, _ = build_model(second, in_ch, out_ch)
    untrained = fit_fold(
        second.replace(storage=f"{bucket}/other"),
        cases,
        copy.deepcopy(fresh),
        torch.device("cpu"),
        0,
        1,
        report,
        resume=lambda *_: LoopState(**states[-1]),
    )
    assert untrained[0]["auc"] != pytest.approx(outer[0]["auc"])  # nothing chosen there: the test has teeth
    again = fit_fold(second, cases, fresh, torch.device("cpu"), 0, 1, report, resume=lambda *_: LoopState(**states[-1]))
    assert again[0]["epoch"] == outer[0]["epoch"] == best
    assert again[0]["auc"] == pytest.approx(outer[0]["auc"]) and again[1] == outer[1]
