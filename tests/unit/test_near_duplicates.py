"""Near-duplicates (rescaled, re-encoded copies) found by pHash share a fold; data check lists them."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tumorbench.data.catalog import scan
from tumorbench.data.check import check_dataset, format_report
from tumorbench.data.near_duplicates import find_near_duplicates, near_duplicate_pairs
from tumorbench.data.splits import SplitConfig, make_splits


def _scan_like(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A smooth random 'scan': distinct images get distant hashes."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 6)
    return (255 * (field - field.min()) / np.ptp(field)).astype(np.uint8)


def _folder(root, n: int = 12):
    rng = np.random.default_rng(1)
    for cls in ("no", "yes"):
        (root / cls).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(_scan_like(rng)).save(root / ("yes" if i % 2 else "no") / f"img{i}.png")
    # copies a byte hash misses: rescaled to 80 px, and re-encoded as JPEG, in the other class folder too
    Image.open(root / "no" / "img0.png").resize((80, 80), Image.BILINEAR).save(root / "yes" / "copy0.png")
    Image.open(root / "yes" / "img3.png").save(root / "yes" / "copy3.jpg", quality=70)


def test_rescaled_and_reencoded_copies_are_grouped(tmp_path):
    _folder(tmp_path)
    groups = find_near_duplicates(scan(tmp_path))
    assert groups == [["no/img0.png", "yes/copy0.png"], ["yes/copy3.jpg", "yes/img3.png"]]
    hashes = np.zeros((3, 64), bool)
    hashes[1, :2] = True  # 2 bits from item 0
    hashes[2, :3] = True  # 3 bits from item 0, 1 from item 1
    assert near_duplicate_pairs(hashes, 2).tolist() == [[0, 1], [1, 2]]


def test_near_duplicates_never_cross_folds_and_are_listed(tmp_path):
    _folder(tmp_path)
    frame = scan(tmp_path)
    for seed in range(5):
        doc = make_splits(frame, SplitConfig(n_folds=3, seed=seed))  # auto: class folders have no patient IDs
        fold_of = {c: f["fold"] for f in doc["folds"] for c in f["val"]}
        assert doc["near_duplicates"] == find_near_duplicates(frame)
        for group in doc["near_duplicates"]:
            assert len({fold_of[c] for c in group}) == 1
    off = make_splits(frame, SplitConfig(n_folds=3, near_duplicates="off"))
    assert off["near_duplicates"] == []
    text = format_report(check_dataset(tmp_path))
    assert "near-duplicates 2 groups, 4 images" in text and "no/img0.png ~ yes/copy0.png" in text


def test_16_bit_scans_hash_by_their_content_not_their_outline(tmp_path):
    """16-bit PNGs (MRI exports): every head is the same ellipse above 255; only the copy is a near-duplicate."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:96, :96]
    head = ((yy - 48) / 40) ** 2 + ((xx - 48) / 34) ** 2 <= 1
    for cls in ("no", "yes"):
        (tmp_path / cls).mkdir()
    for i in range(6):
        scan16 = np.where(head, 400 + _scan_like(rng).astype(np.uint16) * 12, 0).astype(np.uint16)
        Image.fromarray(scan16).save(tmp_path / ("yes" if i % 2 else "no") / f"img{i}.png")
    copy = np.asarray(Image.open(tmp_path / "no" / "img0.png"), dtype=np.uint16) // 2  # the same scan, rescaled values
    Image.fromarray(copy).save(tmp_path / "yes" / "copy0.png")
    assert Image.open(tmp_path / "yes" / "copy0.png").mode.startswith("I")
    assert find_near_duplicates(scan(tmp_path)) == [["no/img0.png", "yes/copy0.png"]]
