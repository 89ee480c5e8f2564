"""Per-patient segmentation scoring of training's validation (stacked 2D slices)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")


class _Threshold(torch.nn.Module):
    """Logits +10 where the first channel is above 0.5, -10 elsewhere: the prediction is the input's blob."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x[:, :1] > 0.5, 10.0, -10.0)


def _slices(pixel_mm: float) -> list[dict]:
    from monai.data import MetaTensor

    items = []
    for index in (1, 0):  # out of order: scoring must stack by slice_index
        image = np.zeros((1, 24, 24), np.float32)
        image[0, 6:14, 6 : 14 + index] = 1.0
        target = np.zeros((1, 24, 24), np.float32)
        target[0, 8:16, 9:17] = 1.0
        affine = np.diag([pixel_mm, pixel_mm, 1.0, 1.0])
        items.append(
            {
                "image": MetaTensor(torch.from_numpy(image), affine=torch.from_numpy(affine)),
                "mask": target,
                "patient_id": "p",
                "case_id": f"p_{index}",
                "slice_index": index,
            }
        )
    return items


def test_patient_scores_use_stacked_slices_and_their_pixel_size():
    from monai.metrics import compute_hausdorff_distance

    from tumorbench.training.validation import segmentation_records

    records = {
        mm: segmentation_records(
            _Threshold(), _slices(mm), data_dims=2, model_dims=2, roi_size=None, device=torch.device("cpu")
        )[0]
        for mm in (1.0, 2.0)
    }
    items = sorted(_slices(1.0), key=lambda item: item["slice_index"])
    pred = np.stack([np.asarray(item["image"][0]) > 0.5 for item in items], axis=-1)
    target = np.stack([item["mask"][0] > 0.5 for item in items], axis=-1)
    tp = np.count_nonzero(pred & target)
    assert records[1.0]["dice"] == pytest.approx(2 * tp / (pred.sum() + target.sum()))
    for mm, record in records.items():
        ref = compute_hausdorff_distance(pred[None, None], target[None, None], percentile=95, spacing=(mm, mm, 1.0))
        assert record["hd95"] == pytest.approx(float(ref.reshape(-1)[0]))
    assert records[2.0]["hd95"] > records[1.0]["hd95"] > 0
    assert records[1.0]["n_slices"] == 2


def test_outer_scoring_uses_the_native_mask_grid(tmp_path):
    """LGG-style: trained and predicted at 32 px, scored against the 64 px mask file as the baselines are."""
    from PIL import Image

    from tumorbench.evaluation.metrics import compute_dice
    from tumorbench.training.validation import NATIVE_MASK, segmentation_records, to_grid

    yy, xx = np.mgrid[:64, :64]
    native = (yy - 30.5) ** 2 + (xx - 33.5) ** 2 < 11.3**2  # a disc whose edge the 32 px grid cannot follow
    Image.fromarray(native.astype(np.uint8) * 255).save(tmp_path / "m.png")
    small = torch.nn.functional.interpolate(
        torch.from_numpy(native[None, None].astype(np.float32)), size=(32, 32), mode="area"
    )[0]
    item = {"image": small, "mask": (small > 0.5).float(), "patient_id": "p", "case_id": "p_0", "slice_index": 0}
    scored = {
        key: segmentation_records(
            _Threshold(), [dict(item, **extra)], data_dims=2, model_dims=2, roi_size=None, device=torch.device("cpu")
        )[0]["dice"]
        for key, extra in (("grid", {}), ("native", {NATIVE_MASK: str(tmp_path / "m.png")}))
    }
    assert scored["grid"] == pytest.approx(1.0)  # perfect at the training resolution...
    prob = torch.sigmoid(_Threshold()(small[None])[0])
    expected = float(compute_dice(to_grid(prob, (64, 64)).numpy()[0] > 0.5, native))
    assert scored["native"] == pytest.approx(expected) and expected < 0.99  # ...not on the native mask


def _volume(shift: int, case: str, patient: str) -> dict:
    from monai.data import MetaTensor

    image = np.zeros((1, 16, 16, 8), np.float32)
    image[0, 4 : 10 + shift, 4:10, 2:6] = 1.0  # the prediction (_Threshold)
    target = np.zeros((1, 16, 16, 8), np.float32)
    target[0, 5:11, 5:11, 2:6] = 1.0
    tensor = MetaTensor(torch.from_numpy(image), affine=torch.eye(4, dtype=torch.float64))
    return {"image": tensor, "mask": target, "patient_id": patient, "case_id": case}


def test_a_patients_volumes_are_one_record_keyed_by_the_patient_as_the_baselines_rows_are():
    from tumorbench.training.validation import segmentation_records

    items = [_volume(0, "p_2000", "p"), _volume(3, "p_2001", "p"), _volume(1, "q_scan", "q")]
    records = segmentation_records(
        _Threshold(), items, data_dims=3, model_dims=3, roi_size=(8, 8, 8), device=torch.device("cpu")
    )
    assert [(r["patient_id"], r["case_id"]) for r in records] == [("p", "p"), ("q", "q")]
    assert set(records[0]) == set(records[1]) and not {"tp", "fp", "fn"} & set(records[0])

    def counts(item):
        pred, target = np.asarray(item["image"][0]) > 0.5, item["mask"][0] > 0.5
        return np.count_nonzero(pred & target), pred.sum(), target.sum()

    pooled = np.sum([counts(item) for item in items[:2]], axis=0)  # the patient's two volumes as one
    assert records[0]["dice"] == pytest.approx(2 * pooled[0] / (pooled[1] + pooled[2]))
    tp, predicted, true = counts(items[2])
    assert records[1]["dice"] == pytest.approx(2 * tp / (predicted + true))
