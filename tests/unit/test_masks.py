"""Every reader of masks maps a file to the same target (``tumorbench.data.masks``)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tumorbench.baselines.features import read_case
from tumorbench.data.io import read_image
from tumorbench.data.masks import stored_labels, target
from tumorbench.explain.study import _truth
from tumorbench.training.validation import native_mask_2d
from tumorbench.transforms import PreprocessConfig, build_transforms


def _jpeg_disc(tmp_path):
    """A lossy JPEG mask: 0/255 disc whose edges and background ring carry values 1..254."""
    yy, xx = np.mgrid[:64, :64]
    disc = (((yy - 30) ** 2 + (xx - 34) ** 2) < 14**2).astype(np.uint8) * 255
    image = np.full((64, 64, 3), 90, np.uint8)
    Image.fromarray(image).save(tmp_path / "case.png")
    Image.fromarray(disc).save(tmp_path / "case_mask.jpg", quality=60)
    stored = np.asarray(Image.open(tmp_path / "case_mask.jpg"))
    return str(tmp_path / "case.png"), str(tmp_path / "case_mask.jpg"), stored


def test_a_lossy_jpeg_mask_is_one_target_for_models_baselines_and_explanations(tmp_path):
    image, mask, stored = _jpeg_disc(tmp_path)
    expected = stored >= 128  # by hand: the 8-bit cut
    assert ((stored > 0) & ~expected).sum() > 20  # compression noise a "> 0" reader would count as tumour
    row = {"image": [image], "mask": mask}
    _, baseline_truth, _ = read_case(row)
    np.testing.assert_array_equal(baseline_truth, expected)
    np.testing.assert_array_equal(native_mask_2d(mask), expected)
    np.testing.assert_array_equal(_truth(row, read_image(image), None), expected)
    chain = build_transforms(PreprocessConfig(normalize="none"), spatial_dims=2)
    out = chain({"image": image, "mask": mask, "case_id": "c", "patient_id": "p"})["mask"].numpy()[0]
    np.testing.assert_array_equal(out > 0.5, expected)


def test_label_masks_keep_their_labels_and_foreground_selects(tmp_path):
    labels = np.array([[0, 1, 2], [3, 2, 0]], np.uint8)  # a label PNG (values < 128): labels as stored
    Image.fromarray(labels).save(tmp_path / "labels.png")
    data = read_image(tmp_path / "labels.png")
    stored = stored_labels(data.array, data.meta["format"])
    np.testing.assert_array_equal(target(stored)[0], labels > 0)
    np.testing.assert_array_equal(target(stored, (2, 3))[0], np.isin(labels, (2, 3)))
    np.testing.assert_array_equal(native_mask_2d(str(tmp_path / "labels.png"), (2,)), labels == 2)
    volume = np.array([0.0, 200.0, 255.0])  # a NIfTI's values are labels, whatever their size
    np.testing.assert_array_equal(stored_labels(volume, "nifti"), volume)


def test_a_jpeg_mask_is_binary_for_the_fingerprint_and_the_target_choice(tmp_path):
    import pandas as pd
    import pytest

    from tumorbench.data.fingerprint import _read_case
    from tumorbench.errors import TumorbenchError
    from tumorbench.study.generic import mask_labels
    from tumorbench.study.target import choose_target

    image, mask, stored = _jpeg_disc(tmp_path)
    frame = pd.DataFrame({"image": [[image]], "mask": [mask], "case_id": ["c"], "patient_id": ["p"]})
    assert mask_labels(frame) == {0, 255}  # not the 1..254 of its edges
    with pytest.raises(TumorbenchError, match=r"binary \(0/255\)"):  # a label 2 would select nothing
        choose_target(frame, mask_labels, (2,))
    read = _read_case({"image": [image], "mask": mask}, 100, np.random.default_rng(0))
    assert np.isclose(read["fraction"], (stored >= 128).mean())
