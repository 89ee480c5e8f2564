"""Classical baselines scored against the deep models on the same folds and metrics.

Classification: handcrafted features (:class:`HandcraftedFeatures`: first-order, GLCM,
LBP, HOG, shape) into logistic regression, an RBF SVM, a random forest or gradient
boosting (:func:`make_classifier`, :func:`fit_predict_fold`). Segmentation: multi-level
Otsu and k-means inside the body mask with learnt post-processing
(:class:`OtsuSegmenter`, :class:`KMeansSegmenter`, :func:`segment_fold`).

Every baseline is named in lowercase (:func:`list_baselines`) and built by :func:`make_classifier` or
:func:`make_segmenter`.
"""

from __future__ import annotations

from tumorbench.baselines.classifiers import (
    CLASSIFIER_SEARCH_SPACES,
    CLASSIFIERS,
    FeatureCache,
    encode_labels,
    fit_predict_fold,
    make_classifier,
)
from tumorbench.baselines.features import (
    HandcraftedFeatures,
    as_records,
    axial_slice,
    load_feature_inputs,
    read_case,
)
from tumorbench.baselines.regions import body_mask, fill_holes
from tumorbench.baselines.segment_fold import patient_metrics, segment_fold
from tumorbench.baselines.segmentation import SEGMENTERS, KMeansSegmenter, OtsuSegmenter, make_segmenter
from tumorbench.errors import TumorbenchError

__all__ = [
    "BASELINES_BY_TASK",
    "CLASSIFIERS",
    "CLASSIFIER_SEARCH_SPACES",
    "FeatureCache",
    "HandcraftedFeatures",
    "KMeansSegmenter",
    "OtsuSegmenter",
    "SEGMENTERS",
    "UnknownBaselineError",
    "as_records",
    "axial_slice",
    "body_mask",
    "encode_labels",
    "fill_holes",
    "fit_predict_fold",
    "list_baselines",
    "load_feature_inputs",
    "make_classifier",
    "make_segmenter",
    "patient_metrics",
    "read_case",
    "segment_fold",
]

# Baselines by the task they answer (a new task's baselines are one more entry).
BASELINES_BY_TASK: dict[str, tuple[str, ...]] = {
    "classification": tuple(CLASSIFIERS),
    "segmentation": tuple(SEGMENTERS),
}


class UnknownBaselineError(TumorbenchError, KeyError):
    """A baseline name or task that does not exist; the message lists the valid ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def list_baselines(task: str | None = None) -> list[str]:
    """Names of the baselines for a task (all of them when ``task`` is None)."""
    if task is None:
        return [name for names in BASELINES_BY_TASK.values() for name in names]
    if task not in BASELINES_BY_TASK:
        raise UnknownBaselineError(f"unknown task {task!r}; choose one of {', '.join(BASELINES_BY_TASK)}")
    return list(BASELINES_BY_TASK[task])
