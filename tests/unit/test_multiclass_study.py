"""A multi-class class-folder study's tables end to end, with baselines and a deep model's rows (no Ray)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import roc_auc_score

from tumorbench.data.catalog import scan
from tumorbench.data.splits import SplitConfig, fold_frames, make_splits
from tumorbench.evaluation.leaderboard import summarize_results
from tumorbench.reporting.report import write_report
from tumorbench.study import results

CLASSES = ["glioma", "meningioma", "none"]


def _image(rng: np.random.Generator, k: int, size: int = 32) -> np.ndarray:
    image = 40 + 8 * rng.standard_normal((size, size))
    yy, xx = np.mgrid[:size, :size]
    if k == 0:  # a bright blob
        image += 150 * np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 18.0)
    elif k == 1:  # stripes
        image += 60 * (np.sin(xx / 1.5) > 0)
    return np.clip(image, 0, 255).astype(np.uint8)


def _class_folder(root, per_class: int = 12):
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for n in range(per_class):
            Image.fromarray(_image(rng, k)).save(root / name / f"{name}_{n}.png")


def _dl_rows(train: pd.DataFrame, val: pd.DataFrame, fold: int) -> list[dict]:
    """A stand-in deep model: confident and right on two classes, unsure on the third."""
    rows = []
    for _, case in val.iterrows():
        k = CLASSES.index(case["label"])
        probs = np.full(3, 0.1) + 0.7 * (np.arange(3) == k) if k < 2 else np.array([0.3, 0.3, 0.4])
        rows.append(
            results.classification_row(
                {
                    "case_id": case["case_id"],
                    "patient_id": case["patient_id"],
                    "fold": fold,
                    "y_true": k,
                    "probs": probs.tolist(),
                },
                CLASSES,
            )
        )
    return rows


def test_multiclass_study_tables_with_baselines(tmp_path):
    _class_folder(tmp_path / "data")
    frame = scan(tmp_path / "data")
    assert sorted(frame["label"].unique()) == CLASSES
    doc = make_splits(frame, SplitConfig(n_folds=3, seed=0, stratify="label"))
    parts, dl = [], []
    for fold in range(3):
        train, val = fold_frames(frame, doc, fold)
        parts.append(results.baseline_fold("logreg", "classification", train, val, fold, CLASSES, 0, {"search": False}))
        dl += _dl_rows(train, val, fold)
    parts.append(pd.DataFrame(dl).assign(model="cnn", kind="dl"))
    out = tmp_path / "out"
    out.mkdir()
    predictions = results.write_predictions(parts, out)
    # one schema: p_<class> for every classifier, no y_score_<k>
    assert not [c for c in predictions.columns if c.startswith("y_score")]
    assert np.isfinite(predictions[["p_0", "p_1", "p_2"]].to_numpy()).all()
    lb, stats = summarize_results(out, task="classification", n_boot=200)
    assert set(lb["model"]) == {"logreg", "cnn"}
    for model, g in predictions.groupby("model"):
        row = lb.set_index("model").loc[model]
        truth = g["y_true"].to_numpy()
        expected = roc_auc_score(truth, g[["p_0", "p_1", "p_2"]].to_numpy(), multi_class="ovr", average="macro")
        assert abs(row["auc_pooled"] - expected) < 1e-9
        for k in range(3):
            assert abs(row[f"auc_class{k}"] - roc_auc_score(truth == k, g[f"p_{k}"])) < 1e-9
            assert row[f"sensitivity_class{k}"] == np.mean(g["y_pred"][truth == k] == k)
    cnn = lb.set_index("model").loc["cnn"]
    assert cnn["sensitivity_class0"] == 1.0 and cnn["sensitivity_class2"] == 1.0
    page = write_report(out, task="classification", n_boot=50).read_text()
    assert "Per class" in page and "confusion matrices" in page
