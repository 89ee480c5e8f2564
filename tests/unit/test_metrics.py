"""Metrics against hand computations, scikit-learn, scipy and nibabel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist
from sklearn import metrics as skm

from tumorbench.evaluation.metrics import (
    MetricWarning,
    classification_metrics,
    compute_dice,
    compute_hd95,
    compute_iou,
    compute_precision,
    compute_sensitivity,
    segmentation_metrics,
)

# ---------------------------------------------------------------- overlap metrics


def _hand_pair() -> tuple[np.ndarray, np.ndarray]:
    # |P| = 5, |T| = 6, |P∩T| = 4, |P∪T| = 7
    pred = np.zeros((4, 4), bool)
    target = np.zeros((4, 4), bool)
    pred[0, 0:4] = True
    pred[1, 0] = True
    target[0, 1:4] = True
    target[1, 0:3] = True
    return pred, target


def test_overlap_metrics_hand_computed():
    pred, target = _hand_pair()
    assert compute_dice(pred, target) == pytest.approx(2 * 4 / (5 + 6))
    assert compute_iou(pred, target) == pytest.approx(4 / 7)
    assert compute_sensitivity(pred, target) == pytest.approx(4 / 6)
    assert compute_precision(pred, target) == pytest.approx(4 / 5)


def test_overlap_metrics_accept_torch_ints_and_3d():
    pred, target = _hand_pair()
    vol_p, vol_t = np.stack([pred, pred]), np.stack([target, ~target])
    # slice 1: P = pred (5), T = ~target (10), overlap = 1 (pixel (0,0)); totals: tp 5, |P| 10, |T| 16
    expected = 2 * 5 / (10 + 16)
    assert compute_dice(torch.from_numpy(vol_p).int(), torch.from_numpy(vol_t)) == pytest.approx(expected)
    assert compute_dice(vol_p.astype(np.uint8), vol_t.astype(np.float32)) == pytest.approx(expected)


def test_empty_mask_conventions():
    empty = np.zeros((3, 3), bool)
    some = empty.copy()
    some[1, 1] = True
    assert compute_dice(empty, empty) == 1.0
    assert compute_iou(empty, empty, empty_value=0.0) == 0.0
    assert compute_dice(empty, some) == 0.0
    assert compute_sensitivity(empty, some) == 0.0
    assert math.isnan(compute_precision(empty, some))  # nothing predicted: undefined
    assert math.isnan(compute_sensitivity(some, empty))  # nothing to find: undefined


def test_bad_masks_raise():
    with pytest.raises(ValueError, match="binary"):
        compute_dice(np.full((2, 2), 0.7), np.ones((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        compute_dice(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="2D or 3D"):
        compute_dice(np.ones(4), np.ones(4))


# ---------------------------------------------------------------- HD95


def test_hd95_single_points_anisotropic():
    pred, target = np.zeros((6, 6), bool), np.zeros((6, 6), bool)
    pred[0, 0] = True
    target[3, 4] = True
    assert compute_hd95(pred, target) == pytest.approx(5.0)  # 3-4-5 triangle
    # spacing (2, 0.5): offsets 3*2 = 6 and 4*0.5 = 2 -> sqrt(40)
    assert compute_hd95(pred, target, spacing=(2.0, 0.5)) == pytest.approx(math.sqrt(40.0), rel=1e-6)
    p3, t3 = np.zeros((3, 4, 4), bool), np.zeros((3, 4, 4), bool)
    p3[0, 0, 0] = True
    t3[1, 2, 2] = True
    # offsets (1*3, 2*1, 2*0.5) -> sqrt(9 + 4 + 1)
    assert compute_hd95(torch.from_numpy(p3), t3, (3.0, 1.0, 0.5)) == pytest.approx(math.sqrt(14.0), rel=1e-6)


def test_hd95_translated_squares():
    # 3x3 squares 4 rows apart. Edge pixels of pred: row 2 (3 px) -> 4 rows to the nearest
    # target edge, row 3 (2 px) -> 3, row 4 (3 px) -> 2; sorted [2,2,2,3,3,4,4,4], whose
    # 95th percentile (linear, position 6.65) is 4; symmetric. Axis-0 spacing 2.5 -> 10 mm.
    pred, target = np.zeros((12, 8), bool), np.zeros((12, 8), bool)
    pred[2:5, 2:5] = True
    target[6:9, 2:5] = True
    assert compute_hd95(pred, target, spacing=(2.5, 0.7)) == pytest.approx(10.0, rel=1e-6)
    assert compute_hd95(pred, pred, spacing=(2.5, 0.7)) == 0.0


def _scipy_hd95(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Independent HD95 mirroring MONAI's definition.

    Surfaces are the mask minus its erosion (cross-shaped structuring element, outside
    of the image counted as background). Distances are Euclidean between physical
    coordinates (index * spacing). MONAI takes the 95th percentile (linear
    interpolation) of each directed set, pred->target and target->pred, and returns the
    larger of the two: it is not the percentile of the pooled symmetric set.
    """
    scale = np.asarray(spacing)
    surf_p = np.argwhere(pred ^ ndimage.binary_erosion(pred)) * scale
    surf_t = np.argwhere(target ^ ndimage.binary_erosion(target)) * scale
    d = cdist(surf_p, surf_t)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def _blob(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma) > 0.05


@pytest.mark.parametrize(("shape", "spacing"), [((40, 36), (0.9, 1.7)), ((14, 20, 18), (2.5, 0.8, 1.1))])
def test_hd95_matches_scipy_reference(shape, spacing):
    rng = np.random.default_rng(7)
    pred, target = _blob(rng, shape, 3.0), _blob(rng, shape, 3.0)
    assert pred.any() and target.any()
    assert compute_hd95(pred, target, spacing) == pytest.approx(_scipy_hd95(pred, target, spacing), rel=1e-5)


def test_hd95_empty_conventions_and_bad_spacing():
    empty = np.zeros((5, 5), bool)
    some = empty.copy()
    some[2, 2] = True
    assert math.isnan(compute_hd95(empty, empty))
    assert compute_hd95(empty, some) == math.inf
    assert compute_hd95(some, empty, one_empty=373.13) == 373.13
    with pytest.raises(ValueError, match="spacing"):
        compute_hd95(some, some, spacing=(1.0, 1.0, 1.0))


def test_segmentation_metrics_bundle():
    pred, target = _hand_pair()
    out = segmentation_metrics(pred, target, spacing=(1.0, 1.0))
    assert out["dice"] == pytest.approx(8 / 11)
    assert out["iou"] == pytest.approx(4 / 7)
    assert out["hd95"] == pytest.approx(_scipy_hd95(pred, target, (1.0, 1.0)), rel=1e-5)


# ---------------------------------------------------------------- classification


def test_binary_classification_hand_computed():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.6, 0.4, 0.7, 0.2, 0.1, 0.5, 0.8])
    # predictions at 0.5: [1,1,0,1,0,0,1,1] -> tp 3, fn 1, fp 2, tn 2
    out = classification_metrics(y, s)
    assert (out["tp"], out["fn"], out["fp"], out["tn"]) == (3, 1, 2, 2)
    assert out["accuracy"] == pytest.approx(5 / 8)
    assert out["precision"] == pytest.approx(3 / 5)
    assert out["recall"] == pytest.approx(3 / 4)
    assert out["specificity"] == pytest.approx(2 / 4)
    assert out["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    # positive/negative pairs ranked correctly: 0.9 beats 4, 0.6 beats 3, 0.4 beats 2, 0.8 beats 4 -> 13/16
    assert out["auc"] == pytest.approx(13 / 16)


def test_binary_classification_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    out = classification_metrics(torch.from_numpy(y), s, threshold=0.45)
    pred = (s >= 0.45).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (out["tp"], out["fp"], out["tn"], out["fn"]) == (tp, fp, tn, fn)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert out["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert out["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert out["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert out["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert out["auc"] == pytest.approx(skm.roc_auc_score(y, s))
    two_col = classification_metrics(y, np.stack([1 - s, s], axis=1), threshold=0.45)
    assert two_col == out


def test_single_class_auc_is_nan_with_warning():
    with pytest.warns(MetricWarning, match="single class"):
        out = classification_metrics(np.ones(4), np.array([0.2, 0.6, 0.7, 0.9]))
    assert math.isnan(out["auc"]) and out["recall"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="binary"):
        classification_metrics(np.array([0, 2, 0]), np.array([0.1, 0.2, 0.3]))


def test_multiclass_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    probs = rng.dirichlet(np.ones(4), 300)
    probs[np.arange(300), y] += 0.4
    probs /= probs.sum(1, keepdims=True)
    out = classification_metrics(y, probs)
    pred = probs.argmax(1)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert out["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert out["recall"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert out["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert out["auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    mcm = skm.multilabel_confusion_matrix(y, pred)  # per class [[tn, fp], [fn, tp]]
    assert out["specificity"] == pytest.approx(np.mean(mcm[:, 0, 0] / (mcm[:, 0, 0] + mcm[:, 0, 1])))
    totals = tuple(int(mcm[:, i, j].sum()) for i, j in ((1, 1), (0, 1), (1, 0), (0, 0)))
    assert (out["tp"], out["fp"], out["fn"], out["tn"]) == totals


def test_multiclass_with_absent_class_does_not_crash():
    y = np.array([0, 1, 0, 1, 0, 1])
    probs = np.array(
        [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.1, 0.4], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3], [0.3, 0.3, 0.4]]
    )
    with pytest.warns(MetricWarning, match="class 2"):
        out = classification_metrics(y, probs)
    expected_auc = np.mean([skm.roc_auc_score(y == c, probs[:, c]) for c in (0, 1)])
    assert out["auc"] == pytest.approx(expected_auc)
    pred = probs.argmax(1)
    assert out["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
