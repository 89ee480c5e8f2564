"""report.html: self-contained, embeds its figures, shows the models, stats and manifest."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from matplotlib.image import imread
from test_leaderboard import classification_predictions, segmentation_predictions

from tumorbench.errors import DataError
from tumorbench.evaluation.leaderboard import summarize_results
from tumorbench.reporting import extreme_cases, write_overlay, write_report

MANIFEST = {
    "study": "synthetic",
    "preset": "smoke",
    "git_commit": "0123abcd",
    "data_hash": "d4t4h45h",
    "split_hash": "5pl1th45h",
    "seeds": [0, 1],
    "versions": {"torch": "2.14.1", "ray": "2.60.0"},
}


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _assert_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    # Every src= is an embedded image.
    assert page.count("src=") == page.count('src="data:image/png;base64,')


def test_classification_report_embeds_figures_and_tables(tmp_path):
    pred = classification_predictions()
    pred.to_csv(tmp_path / "predictions.csv", index=False)
    (tmp_path / "manifest.json").write_text(json.dumps(MANIFEST))
    (tmp_path / "configs.json").write_text(json.dumps({"good": {"lr": 0.001}}))
    path = write_report(tmp_path, title="Yes/no study", n_boot=50)
    assert path == tmp_path / "report.html" and path.is_file()
    page = path.read_text(encoding="utf-8")
    _assert_self_contained(page)
    for text in (
        "Yes/no study",
        "good",
        "fair",
        "random",
        "delong",
        "mcnemar",
        "corrected_t",
        "0123abcd",
        "5pl1th45h",
        "versions.torch",
        "&quot;lr&quot;: 0.001",
    ):
        assert text in page, text
    images = _images(page)
    assert len(images) == 4  # forest plot, ROC curves, confusion matrices, reliability diagram
    assert "Calibration" in page and "ECE" in page and "95% CI of the difference" in page
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") for img in images)
    # Leaderboard order: the better model's row comes first.
    assert page.index("<b>good</b>") < page.index("<b>fair</b>") < page.index("<b>random</b>")


def test_confusion_matrices_name_the_classes_the_manifest_lists(tmp_path):
    from tumorbench.reporting.figures import confusion_figure

    pred = classification_predictions()
    pairs = [("best DL", "good"), ("best baseline", "fair")]
    named = confusion_figure(pred, pairs, ["no tumor", "tumor"])
    assert [t.get_text() for t in named.axes[0].get_xticklabels()] == ["no tumor", "tumor"]
    assert [t.get_text() for t in named.axes[1].get_yticklabels()] == ["no tumor", "tumor"]
    plain = confusion_figure(pred, pairs, ["only one name"])  # a name missing: indices, never a wrong name
    assert [t.get_text() for t in plain.axes[0].get_xticklabels()] == ["0", "1"]
    # write_report takes them from manifest.json ("classes", written by the study) and lists them there
    pred.to_csv(tmp_path / "predictions.csv", index=False)
    (tmp_path / "manifest.json").write_text(json.dumps({**MANIFEST, "classes": ["no tumor", "tumor"]}))
    assert "no tumor, tumor" in write_report(tmp_path, n_boot=20).read_text(encoding="utf-8")


def test_segmentation_report_shows_stored_tables_and_overlays(tmp_path):
    pred = segmentation_predictions()
    pred.to_csv(tmp_path / "predictions.csv", index=False)
    lb, stats = summarize_results(tmp_path, n_boot=50)
    yy, xx = np.mgrid[:48, :48]
    truth, guess = (yy - 24) ** 2 + (xx - 24) ** 2 < 100, (yy - 26) ** 2 + (xx - 25) ** 2 < 90
    for _, case in extreme_cases(pred, "unet").iterrows():
        write_overlay(yy / 48.0, truth, guess, tmp_path / "overlays" / f"{case['which']}_{case['patient_id']}.png")
    page = write_report(tmp_path, title="LGG", n_boot=50).read_text(encoding="utf-8")
    _assert_self_contained(page)
    assert len(_images(page)) == 2 + 2  # forest, Dice box plot, two overlays
    for model in ("unet", "segresnet", "otsu"):
        assert f"<b>{model}</b>" in page
    assert "wilcoxon" in page and "Prediction vs ground truth" in page
    # The stored leaderboard's CI is what the page shows.
    unet = lb.set_index("model").loc["unet"]
    assert f"[{unet['dice_ci_low']:.3f}, {unet['dice_ci_high']:.3f}]" in page
    assert "Target: mask label" not in page  # every non-zero label: nothing to say
    spec = {"spec": {"config": {"preprocess": {"label_map": "binary", "foreground_labels": [2]}}}}
    (tmp_path / "manifest.json").write_text(json.dumps(spec))
    page = write_report(tmp_path, title="LiTS", n_boot=50).read_text(encoding="utf-8")
    assert "Target: mask label(s) 2; the other labels are background." in page
    for preprocess, says in (
        ({"label_map": "brats"}, "Regions: WT = labels 1+2+4, TC = labels 1+4, ET = labels 4."),
        ({"label_map": "brats", "regions": [[1, 2, 3], [2, 3], [3]]}, "WT = labels 1+2+3, TC = labels 2+3, ET"),
    ):
        (tmp_path / "manifest.json").write_text(json.dumps({"spec": {"config": {"preprocess": preprocess}}}))
        assert says in write_report(tmp_path, title="BraTS", n_boot=50).read_text(encoding="utf-8")


def test_extreme_cases_are_the_best_and_worst_dice():
    pred = segmentation_predictions()
    unet = pred[pred["model"] == "unet"]
    cases = extreme_cases(pred, "unet", n=2)
    assert cases["which"].tolist() == ["best", "best", "worst", "worst"]
    assert cases["dice"].iloc[0] == unet["dice"].max() and cases["dice"].iloc[2] == unet["dice"].min()
    assert cases["patient_id"].iloc[2] == unet.loc[unet["dice"].idxmin(), "patient_id"]


def test_write_overlay_draws_green_truth_and_red_prediction(tmp_path):
    image = np.zeros((40, 40))
    truth = np.zeros((40, 40), bool)
    truth[10:30, 10:30] = True
    pred = np.zeros((40, 40), bool)
    pred[15:35, 15:35] = True
    path = write_overlay(image, truth, pred, tmp_path / "sub" / "case.png", title="case 1")
    rgb = imread(path)[..., :3]
    green = (rgb[..., 1] > 0.7) & (rgb[..., 0] < 0.3) & (rgb[..., 2] < 0.3)
    red = (rgb[..., 0] > 0.7) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)
    assert green.sum() > 50 and red.sum() > 50
    # Three panels side by side: the left third has truth only (green), no prediction (red).
    third = rgb.shape[1] // 3
    assert green[:, :third].sum() > 20 and red[:, :third].sum() == 0
    with pytest.raises(ValueError, match="truth_mask"):
        write_overlay(image, truth[:20], pred, tmp_path / "bad.png")


def test_missing_predictions_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no predictions.csv"):
        write_report(tmp_path)


def test_report_shows_the_locked_test_scores_when_a_test_folder_exists(tmp_path):
    pred = segmentation_predictions()
    pred.to_csv(tmp_path / "predictions.csv", index=False)
    summarize_results(tmp_path, n_boot=50)
    assert "Locked test set" not in write_report(tmp_path, n_boot=50).read_text(encoding="utf-8")
    test = tmp_path / "test"
    test.mkdir()
    pred[pred["fold"] == 0].assign(fold=0).to_csv(test / "predictions.csv", index=False)
    test_lb, _ = summarize_results(test, n_boot=50)
    page = write_report(tmp_path, n_boot=50).read_text(encoding="utf-8")
    section = page.split("<h2>Locked test set</h2>")[1].split("<h2>")[0]
    unet = test_lb.set_index("model").loc["unet"]
    expected = f"{unet['dice_pooled']:.3f} [{unet['dice_ci_low']:.3f}, {unet['dice_ci_high']:.3f}]"
    assert expected in section and "test/report.html" in section
    assert section.count("<tr>") == 1 + len(test_lb)  # header + one row per model


def test_a_report_scored_once_shows_values_not_fold_means(tmp_path):
    pred = segmentation_predictions()
    once = pred[pred["fold"] == 0]  # a locked test set's predictions: one scoring
    once.to_csv(tmp_path / "predictions.csv", index=False)
    lb, _ = summarize_results(tmp_path, n_boot=50)
    page = write_report(tmp_path, n_boot=50).read_text(encoding="utf-8")
    board = page.split("<h2>Leaderboard</h2>")[1].split("<h3>")[0].split("<p class='note'>")[0]
    assert "scored once" in page and "1 folds" not in page
    assert "fold mean ± SD" not in board and "± n/a" not in board
    note = page.split("<h2>Leaderboard</h2>")[1].split("<p class='note'>")[1].split("</p>")[0]
    assert "pooled test-set predictions" in note and "fold" not in note.lower()  # its caption explains no folds
    unet = lb.set_index("model").loc["unet"]
    assert f"<td>{unet['iou_mean']:.3f}</td>" in board  # each metric's single value, no spread
    pred.to_csv(tmp_path / "predictions.csv", index=False)  # the cross-validated layout keeps its spread
    for name in ("leaderboard.csv", "stats.csv", "folds.csv"):
        (tmp_path / name).unlink(missing_ok=True)
    page = write_report(tmp_path, n_boot=50).read_text(encoding="utf-8")
    assert "dice fold mean ± SD" in page and "scored once" not in page
    assert "Fold mean ± SD: the mean of the per-fold values" in page
