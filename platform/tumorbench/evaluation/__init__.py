"""Evaluation: per-case metrics and the statistics that compare models.

``metrics`` holds pure ``compute_*`` functions (Dice, IoU, HD95 by MONAI, sensitivity,
precision; classification metrics with ROC AUC). ``stats`` holds patient-level bootstrap CIs, the
Wilcoxon, DeLong and McNemar tests, the Nadeau-Bengio corrected resampled t-test and
Holm's correction. Empty-mask and single-class conventions are documented in
:mod:`tumorbench.evaluation.metrics`.
"""

from __future__ import annotations

from tumorbench.evaluation.metrics import (
    BRATS_REGIONS,
    MetricWarning,
    classification_metrics,
    compute_dice,
    compute_hd95,
    compute_iou,
    compute_precision,
    compute_sensitivity,
    segmentation_metrics,
)
from tumorbench.evaluation.stats import (
    bootstrap_ci,
    bootstrap_metric_ci,
    corrected_resampled_ttest,
    delong_ci,
    delong_test,
    holm_correction,
    mcnemar_test,
    wilcoxon_signed_rank,
)

__all__ = [
    "BRATS_REGIONS",
    "MetricWarning",
    "bootstrap_ci",
    "bootstrap_metric_ci",
    "classification_metrics",
    "compute_dice",
    "compute_hd95",
    "compute_iou",
    "compute_precision",
    "compute_sensitivity",
    "corrected_resampled_ttest",
    "delong_ci",
    "delong_test",
    "holm_correction",
    "mcnemar_test",
    "segmentation_metrics",
    "wilcoxon_signed_rank",
]
