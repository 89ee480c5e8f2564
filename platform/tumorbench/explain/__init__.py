"""Measured explanations: heatmaps from MONAI's Grad-CAM / Grad-CAM++ / occlusion, and their scores."""

from __future__ import annotations

from tumorbench.explain.methods import (
    METHODS,
    ExplainConfig,
    Explainer,
    ExplainError,
    cam_layer,
    normalize_heatmap,
    randomized_copy,
)
from tumorbench.explain.scores import (
    RandomisationResult,
    curve_auc,
    energy_in_mask,
    perturbation_curve,
    pointing_game,
    randomisation_check,
    rank_correlation,
    ssim,
)

__all__ = [
    "METHODS",
    "ExplainConfig",
    "ExplainError",
    "Explainer",
    "RandomisationResult",
    "cam_layer",
    "curve_auc",
    "energy_in_mask",
    "normalize_heatmap",
    "perturbation_curve",
    "pointing_game",
    "randomisation_check",
    "randomized_copy",
    "rank_correlation",
    "ssim",
]
