"""Explanations at serving time: ``?explain=gradcam|gradcampp|occlusion`` on ``/v1/classify`` and ``/v1/segment``.

The ingress checks the request with :func:`explain_problem` (unknown method: 400; a Grad-CAM
method for a model without a registered target layer: 422; both name what is wrong) before the
prediction runs; the model replica answers with :meth:`ServedExplanations.explain`, which never
raises: a failure is reported as ``{"available": false, "reason": ...}`` beside a prediction that
stands. The heatmap is the one ``tumorbench explain`` writes, on the upload's own grid: an 8-bit
greyscale PNG for 2D inputs, a gzip NIfTI (float32, the input's affine) for volumes.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from typing import Any

from tumorbench.explain.cases import explain_prepared, explainer_for, heatmap_file
from tumorbench.explain.methods import METHODS, Explainer
from tumorbench.tasks import get_task

logger = logging.getLogger(__name__)


def explain_problem(method: str | None, manifest: Any) -> tuple[int, str] | None:
    """``(HTTP status, detail)`` when ``method`` cannot explain the model of ``manifest``; None when it can."""
    if method is None:
        return None
    if method not in METHODS:
        return 400, f"unknown explain method {method!r}; choose from {', '.join(METHODS)}"
    if get_task(manifest.task).endpoint is None:  # not a servable task (a GAN)
        return 422, f"model {manifest.name!r} is a {manifest.task} model and cannot be explained"
    if method != "occlusion":
        from tumorbench.models import UnknownModelError, model_info

        try:
            layer = model_info(manifest.name).cam_layer
        except UnknownModelError:
            layer = None
        if layer is None:
            return 422, (f"model {manifest.name!r} has no registered Grad-CAM target layer; use explain=occlusion")
    return None


class ServedExplanations:
    """One explainer per method for a served :class:`tumorbench.inference.Predictor`, built on first use."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self._explainers: dict[str, Explainer] = {}
        self._lock = threading.Lock()  # requests run in threads; MONAI's hooks keep per-call state

    def explain(self, prepared: Any, method: str) -> dict[str, Any]:
        """The ``explanation`` object of a response (see the module docstring)."""
        start = time.perf_counter()
        try:
            with self._lock:
                if method not in self._explainers:
                    self._explainers[method] = explainer_for(self.predictor, method)
                result = explain_prepared(self.predictor, self._explainers[method], prepared, curves=False)
            media_type, blob = heatmap_file(result.heatmap, prepared.affine)
        except Exception as exc:  # an explanation must never fail the prediction it accompanies
            logger.exception("explanation %s failed", method)
            return {"method": method, "available": False, "reason": f"{type(exc).__name__}: {exc}"}
        return {
            "method": method,
            "available": True,
            "media_type": media_type,
            "encoding": "base64",
            "shape": list(result.heatmap.shape),
            "data": base64.b64encode(blob).decode("ascii"),
            "explain_ms": round(1000 * (time.perf_counter() - start), 3),
        }
