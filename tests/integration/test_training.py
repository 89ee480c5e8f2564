"""Ray Train end to end on tiny data: checkpoints are model packages, resume continues, DDP validates."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from conftest import write_blob_folders  # noqa: E402
from tumorbench.data.synthetic import BrainPhantomConfig, make_brain_study
from tumorbench.package import find_packages
from tumorbench.package.weights import load_model
from tumorbench.training.config import TrainConfig
from tumorbench.training.data import fold_cases, transforms_for
from tumorbench.training.trainer import fit
from tumorbench.transforms import AugmentConfig, PreprocessConfig, SamplingConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _history(out: Path) -> list[dict]:
    with (out / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


def _latest_checkpoint(out: Path) -> Path:
    return sorted((out / "train").glob("checkpoint_epoch_*"))[-1]


def test_classification_package_resume_and_metrics(ray_session, tmp_path):
    write_blob_folders(tmp_path / "data")
    config = TrainConfig(
        task="classification",
        model="resnet18_tiny",
        data=str(tmp_path / "data"),
        out=str(tmp_path / "run"),
        n_folds=3,
        epochs=2,
        batch_size=8,
        lr=3e-3,
        augment=AugmentConfig(),
        warmup_epochs=0,
    )
    fit(config, verbose=False)
    assert [int(r["epoch"]) for r in _history(tmp_path / "run")] == [0, 1]
    # Resume: a longer run over the same folder continues at the next epoch, not from scratch.
    fit(config.replace(epochs=3), resume=True, verbose=False)
    assert [int(r["epoch"]) for r in _history(tmp_path / "run")] == [0, 1, 2]
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))

    checkpoint = _latest_checkpoint(tmp_path / "run")
    model, manifest = load_model(checkpoint)
    assert (manifest.name, manifest.task, manifest.epoch) == ("resnet18_tiny", "classification", 2)
    assert manifest.class_names == ["no", "yes"] and manifest.positive_class == "yes"
    records = json.loads((checkpoint / "val_predictions.json").read_text())
    # The package alone reproduces the validation predictions (same transforms, same weights).
    cases = fold_cases(config)
    transform = transforms_for(config, 2, train=False)
    by_case = {r["case_id"]: r for r in records}
    assert set(by_case) == {c["case_id"] for c in cases.val}
    # Nested selection: the outer fold, scored once after training by the inner-chosen epoch's weights.
    outer = json.loads((tmp_path / "run" / "outer" / "predictions.json").read_text())
    assert sorted(r["case_id"] for r in outer) == sorted(c["case_id"] for c in cases.test)
    assert not {c["patient_id"] for c in cases.test} & {c["patient_id"] for c in cases.train + cases.val}
    for case in cases.val:
        image = transform(dict(case))["image"][None].float()
        probs = torch.softmax(model(image), dim=1)[0].detach().numpy()
        np.testing.assert_allclose(probs, by_case[case["case_id"]]["probs"], atol=1e-5)
    # The reported metrics agree with scikit-learn on the same predictions.
    y_true = [r["y_true"] for r in records]
    scores = [r["probs"][1] for r in records]
    last = _history(tmp_path / "run")[-1]
    assert float(last["accuracy"]) == pytest.approx(accuracy_score(y_true, np.asarray(scores) >= 0.5))
    assert float(last["auc"]) == pytest.approx(roc_auc_score(y_true, scores))
    # `tumorbench serve --models RUN` serves the run's best checkpoint: highest AUC, the later epoch on ties.
    kept = {int(p.name[-4:]) for p in (tmp_path / "run" / "train").glob("checkpoint_epoch_*")}
    best = max((float(r["auc"]), int(r["epoch"])) for r in _history(tmp_path / "run") if int(r["epoch"]) in kept)[1]
    assert find_packages(tmp_path / "run") == [tmp_path / "run" / "train" / f"checkpoint_epoch_{best:04d}"]


def test_3d_segmentation_two_workers_sliding_window(ray_session, tmp_path):
    make_brain_study(tmp_path / "brain", BrainPhantomConfig(cases=4, shape=(32, 32, 24)))
    config = TrainConfig(
        task="segmentation",
        model="unet_tiny",
        data=str(tmp_path / "brain"),
        out=str(tmp_path / "run"),
        n_folds=2,
        epochs=2,
        batch_size=2,
        workers=2,
        spatial_dims=3,
        preprocess=PreprocessConfig(label_map="binary"),
        augment=AugmentConfig(),
        sampling=SamplingConfig(mode="patch3d", patch_size=(16, 16, 16), num_samples=2),
        inner_val_fraction=0.0,
    )  # 2 training patients: no room for an inner split
    result = fit(config, verbose=False)
    records = json.loads((_latest_checkpoint(tmp_path / "run") / "val_predictions.json").read_text())
    # Both workers' patients are gathered: the fold's two validation patients, each scored once.
    assert sorted(r["patient_id"] for r in records) == sorted(fold_cases(config).val[i]["patient_id"] for i in range(2))
    assert result.metrics["dice"] == pytest.approx(np.mean([r["dice"] for r in records]))
    assert 0.0 <= result.metrics["dice"] <= 1.0 and result.metrics["patients"] == 2


def test_gan_samples_then_gan_augmented_classifier(ray_session, tmp_path):
    write_blob_folders(tmp_path / "data")
    gan_config = TrainConfig(
        task="gan",
        model="dcgan_tiny",
        data=str(tmp_path / "data"),
        out=str(tmp_path / "gan"),
        n_folds=3,
        epochs=1,
        batch_size=8,
        lr=2e-4,
        preprocess=PreprocessConfig(spatial_size=(64, 64), normalize="minmax", channels=1),
    )
    fit(gan_config, verbose=False)
    assert (tmp_path / "gan" / "samples" / "epoch_0000.png").is_file()
    checkpoint = _latest_checkpoint(tmp_path / "gan")
    assert (checkpoint / "samples.png").is_file()
    _, manifest = load_model(checkpoint)
    assert (manifest.task, manifest.class_names, manifest.epoch) == ("gan", ["no", "yes"], 0)
    row = _history(tmp_path / "gan")[-1]
    assert np.isfinite(float(row["d_loss"])) and np.isfinite(float(row["g_loss"]))
    assert 0 < float(row["d_real"]) < 1 and 0 < float(row["d_fake"]) < 1

    classifier = TrainConfig(
        task="classification",
        model="resnet18_tiny",
        data=str(tmp_path / "data"),
        out=str(tmp_path / "clf"),
        n_folds=3,
        split_file=str(tmp_path / "gan" / "splits.json"),
        epochs=1,
        gan_checkpoint=str(checkpoint),
        synthetic_fraction=1.0,
        preprocess=PreprocessConfig(spatial_size=(32, 32)),
    )
    cases = fold_cases(classifier)
    fit(classifier.replace(batch_size=2 * len(cases.train)), verbose=False)  # one batch: nothing dropped
    records = json.loads((_latest_checkpoint(tmp_path / "clf") / "val_predictions.json").read_text())
    # Validation scores the real validation cases only; training saw as many generated images as real ones.
    assert sorted(r["case_id"] for r in records) == sorted(c["case_id"] for c in cases.val)
    assert not any(r["case_id"].startswith("synthetic") or r["patient_id"] == "synthetic" for r in records)
    assert int(float(_history(tmp_path / "clf")[-1]["train_images"])) == 2 * len(cases.train)
