"""Served explanations without Ray: request checks, the heatmap file on the upload's grid, failures contained."""

from __future__ import annotations

import base64
import gzip
import io
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from model_packages import make_packages, synthetic_png
from tumorbench.data.writers import write_dicom_series, write_nifti
from tumorbench.explain.cases import explain_prepared, explainer_for
from tumorbench.explain.serving import ServedExplanations, explain_problem
from tumorbench.inference import Predictor
from tumorbench.models import register_model, registry
from tumorbench.package import read_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("packages")
    return make_packages(root)


def _served(package, path, method="gradcam"):
    predictor = Predictor.from_package(package)
    prepared = predictor.preprocessor.prepare_file(path)
    return predictor, prepared, ServedExplanations(predictor).explain(prepared, method)


def test_explain_problems_name_the_method_or_the_model(packages):
    manifest = read_manifest(packages["cls2d"])
    assert explain_problem(None, manifest) is None and explain_problem("occlusion", manifest) is None
    status, detail = explain_problem("shap", manifest)
    assert status == 400 and "'shap'" in detail and "gradcam" in detail

    @register_model("test_no_cam", task="classification", description="no target layer")
    def factory(in_chans: int = 3) -> torch.nn.Module:
        return torch.nn.Linear(in_chans, 2)

    try:
        status, detail = explain_problem("gradcam", manifest.__class__(**{**manifest.__dict__, "name": "test_no_cam"}))
        assert status == 422 and "'test_no_cam'" in detail and "occlusion" in detail
    finally:
        registry._REGISTRY.pop("test_no_cam", None)


def test_served_png_heatmap_equals_the_offline_one_on_the_upload_grid(packages, tmp_path):
    png = synthetic_png(tmp_path / "a.png", size=(100, 120))
    predictor, prepared, answer = _served(packages["seg2d"], png)
    assert answer["available"] and answer["media_type"] == "image/png" and answer["encoding"] == "base64"
    served = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["data"]))))
    assert served.shape == (100, 120)
    offline = explain_prepared(predictor, explainer_for(predictor, "gradcam"), prepared, curves=False).heatmap
    np.testing.assert_array_equal(served, np.round(offline * 255).astype(np.uint8))


def test_served_nifti_and_dicom_heatmaps_keep_the_volume_grid(packages, tmp_path):
    affine = np.diag([-1.2, -1.0, 1.5, 1.0])
    volume = np.random.default_rng(0).normal(100, 20, (20, 18, 12, 4)).astype(np.float32)
    _, _, answer = _served(packages["seg3d"], write_nifti(tmp_path / "v.nii.gz", volume, affine))
    saved = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(answer["data"])))
    assert answer["media_type"] == "application/gzip" and saved.shape == (20, 18, 12)
    np.testing.assert_allclose(saved.affine, affine)

    ct = np.random.default_rng(1).normal(0, 300, (24, 20, 10)).astype(np.float32)
    ct_affine = np.diag([0.8, 0.8, 2.0, 1.0])
    files = write_dicom_series(tmp_path / "dcm", ct, ct_affine, patient_id="P")
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in files:
            zf.write(f, Path(f).name)
    predictor, prepared, answer = _served(packages["ct3d"], archive, "occlusion")
    saved = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(answer["data"])))
    assert answer["available"] and saved.shape == prepared.shape == (24, 20, 10)


def test_a_failing_explanation_is_reported_not_raised(packages, tmp_path, monkeypatch):
    png = synthetic_png(tmp_path / "a.png")
    predictor = Predictor.from_package(packages["cls2d"])
    served = ServedExplanations(predictor)
    monkeypatch.setattr(
        "tumorbench.explain.serving.explain_prepared",
        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory")),
    )
    answer = served.explain(predictor.preprocessor.prepare_file(png), "gradcam")
    assert answer == {"method": "gradcam", "available": False, "reason": "RuntimeError: out of memory"}


def test_client_saves_the_explanation(tmp_path):
    sys.path.insert(0, str(REPO_ROOT))
    from serve.client import TumorbenchClient, TumorbenchError

    answer = {"explanation": {"method": "gradcam", "available": True, "data": base64.b64encode(b"png").decode()}}
    assert TumorbenchClient.save_explanation(answer, tmp_path / "h.png").read_bytes() == b"png"
    with pytest.raises(TumorbenchError, match="out of memory"):
        TumorbenchClient.save_explanation(
            {"explanation": {"available": False, "reason": "out of memory"}}, tmp_path / "x.png"
        )
