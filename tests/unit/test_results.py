"""``measure_mask`` against scikit-image's connected components and region properties."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label, regionprops

from tumorbench.results import MAX_LESIONS, measure_mask


@pytest.mark.parametrize("shape, density", [((40, 50), 0.35), ((12, 14, 9), 0.3), ((200, 200), 0.5)])
def test_lesions_match_skimage_regionprops(shape, density):
    mask = (np.random.default_rng(len(shape)).random(shape) < density).astype(np.uint8)
    props = regionprops(label(mask, connectivity=1))  # face connectivity, as scipy's default structure
    order = sorted(range(len(props)), key=lambda n: (-props[n].area, n))  # largest first, ties in scan order
    out = measure_mask(mask, 0.5, "area_mm2")
    assert out["lesion_count"] == len(props) and out["area_mm2"] == pytest.approx(0.5 * mask.sum())
    expected = order[:MAX_LESIONS]
    assert len(out["lesions"]) == len(expected)
    dims = mask.ndim
    for lesion, n in zip(out["lesions"], expected):
        assert lesion["voxels"] == props[n].area and lesion["area_mm2"] == pytest.approx(0.5 * props[n].area)
        assert lesion["bbox_min"] == list(props[n].bbox[:dims]) and lesion["bbox_max"] == list(props[n].bbox[dims:])


def test_a_speckled_mask_lists_its_largest_lesions_only():
    speckle = (np.indices((300, 300)).sum(0) % 2).astype(np.uint8)  # 45,000 one-pixel lesions
    speckle[10:20, 30:45] = 1  # and one 10 x 15 block (it absorbs its speckle neighbours)
    out = measure_mask(speckle, 1.0, "area_mm2")
    props = regionprops(label(speckle, connectivity=1))
    block = max(props, key=lambda p: p.area)
    assert out["lesion_count"] == len(props) > 40_000 and out["area_mm2"] == speckle.sum()
    assert len(out["lesions"]) == MAX_LESIONS
    first = out["lesions"][0]
    assert first["voxels"] == block.area > 150
    assert first["bbox_min"] == list(block.bbox[:2]) and first["bbox_max"] == list(block.bbox[2:])
    assert all(lesion["voxels"] == 1 for lesion in out["lesions"][1:])


def test_lesions_far_from_the_origin_and_an_empty_mask():
    # Labelled in the box around the foreground: boxes must come back in the whole volume's indices.
    mask = np.zeros((60, 70, 40), np.uint8)
    mask[30:35, 50:52, 20:31] = 1  # 110 voxels
    mask[40, 60, 39] = 1  # touches the last slice
    out = measure_mask(mask, 0.001, "volume_ml")
    props = sorted(regionprops(label(mask, connectivity=1)), key=lambda p: -p.area)
    assert out["lesion_count"] == 2 and out["volume_ml"] == pytest.approx(0.111)
    assert [(les["bbox_min"], les["bbox_max"], les["voxels"]) for les in out["lesions"]] == [
        (list(p.bbox[:3]), list(p.bbox[3:]), p.area) for p in props
    ]
    assert out["lesions"][0]["bbox_min"] == [30, 50, 20] and out["lesions"][1]["bbox_max"] == [41, 61, 40]
    assert measure_mask(np.zeros((8, 8), np.uint8), 1.0, "area_mm2") == {
        "area_mm2": 0.0,
        "lesion_count": 0,
        "lesions": [],
    }
