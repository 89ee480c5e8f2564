"""``paired``: an image folder and a mask folder whose files pair by name.

The commonest shape of a segmentation set outside the challenges: ``images/`` + ``masks/`` (Kvasir-SEG, many
Kaggle sets), ``..._Input/`` + ``..._GroundTruth/`` (ISIC, masks named ``<image>_segmentation``), and nnU-Net's
``imagesTr/`` + ``labelsTr/`` (one file per channel, ``<case>_0000``, ``<case>_0001``, ...; the nnU-Net
``dataset.json`` variant is read by :mod:`tumorbench.data.layouts.msd` through :func:`pair`). Read as class
folders, such a set became a classifier of images against masks.

A mask pairs with the case of the same name, or of its name less ``_mask``, ``_seg``, ``_segmentation``,
``_label`` or ``_gt``; its file type may differ (JPEG images, PNG masks). A case without its mask and a mask
without its case are problems. Names may also differ by a leading role word instead: ``volume-0`` and
``segmentation-0`` (LiTS), ``img0001`` and ``label0001`` (BTCV). An ``imagesTs/`` folder holds unlabelled cases.
Images with their masks beside them in one folder (``<image>_mask``, or role words) pair the same way, in the
root itself or in each of its folders (LiTS' ``Training Batch 1/``, ``Training Batch 2/``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from tumorbench.data.layouts.common import Problems, is_image, is_volume, row, stem, visible_dirs
from tumorbench.data.layouts.image_folder import read_image_patients, split_masks

IMAGE_WORDS = {"image", "images", "imagestr", "img", "imgs", "input", "inputs", "volume", "volumes", "scan", "scans"}
MASK_WORDS = {
    "mask",
    "masks",
    "label",
    "labels",
    "labelstr",
    "seg",
    "segs",
    "segmentation",
    "segmentations",
    "gt",
    "groundtruth",
    "annotation",
    "annotations",
}
TEST_WORDS = {"imagests"}  # unlabelled cases
TEST_MASKS = {"labelsts"}  # nnU-Net's masks of imagesTs: not read
MASK_SUFFIX = re.compile(r"^(?P<case>.+?)[_-](?:mask|seg|segmentation|label|gt)$", re.IGNORECASE)
CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # nnU-Net: one file per channel
# A leading role word, then a separator or a digit: "segmentation-0", "label0001"; not "labelled_3" or "gtex".
MASK_PREFIX = re.compile(r"^(?:segmentation|labels|label|mask|seg|gt)(?:[_-]+|(?=\d))(?P<case>.+)$", re.IGNORECASE)
IMAGE_PREFIX = re.compile(r"^(?:volume|imaging|image|img|scan|ct)(?:[_-]+|(?=\d))(?P<case>.+)$", re.IGNORECASE)


def _words(name: str) -> set[str]:
    """A folder name's lower-case words, and the name without separators (``ground_truth`` -> ``groundtruth``)."""
    lowered = name.lower()
    return ({w for w in re.split(r"[^a-z0-9]+", lowered) if w}) | {re.sub(r"[^a-z0-9]+", "", lowered)}


def _has_files(folder: Path) -> bool:
    return any(is_image(p) or is_volume(p) for p in folder.iterdir())


def folders(subdirs: list[Path]) -> tuple[Path, Path, Path | None] | None:
    """The image folder, the mask folder and an optional unlabelled ``imagesTs``, or None.

    One folder named for masks and one other folder of images (more would be classes): named for images
    (``images``, ``imagesTr``, ``..._Input``), or otherwise named when most of its files pair with a mask
    (Kaggle's ``train/`` + ``train_masks/``).
    """
    masks = [d for d in subdirs if _words(d.name) & MASK_WORDS] or _xy_targets(subdirs)
    tests = [d for d in subdirs if _words(d.name) & TEST_WORDS]
    if len(masks) != 1 or len(tests) > 1 or not _has_files(masks[0]):
        return None
    others = [d for d in subdirs if d not in (masks[0], *tests) and not _words(d.name) & TEST_MASKS and _has_files(d)]
    if len(others) != 1:
        return None
    images = others[0]
    if not _words(images.name) & IMAGE_WORDS:
        index = _mask_index(_files(masks[0], None))
        files = _files(images, None)
        if 2 * sum(lookup(index, stem(p)) is not None for p in files) < len(files):
            return None
    return images, masks[0], tests[0] if tests else None


def _xy_targets(subdirs: list[Path]) -> list[Path]:
    """The ``y`` of two folders named as inputs and targets are in machine-learning code (``x/`` + ``y/``,
    ``X_train/`` + ``Y_train/``, ``train_x/`` + ``train_y/``): ``[]`` unless their names differ only there.
    :func:`folders` still pairs them only when most images find a mask of their name."""
    if len(subdirs) != 2:
        return []
    words = [re.split(r"[^a-z0-9]+", d.name.lower()) for d in subdirs]
    if len(words[0]) != len(words[1]):
        return []
    differ = [(a, b) for a, b in zip(*words) if a != b]
    if len(differ) != 1 or set(differ[0]) != {"x", "y"}:
        return []
    return [subdirs[differ[0].index("y")]]


def _files(folder: Path, ending: str | None) -> list[Path]:
    files = (p for p in sorted(folder.iterdir()) if is_image(p) or is_volume(p))
    return [p for p in files if ending is None or p.name.lower().endswith(ending.lower())]


def _grouped(files: list[Path], width: int | None) -> dict[str, list[Path]] | None:
    """nnU-Net's ``<case>_<XXXX>`` files as case -> channel files, when every file is named so and every case
    holds channels 0 .. ``width`` - 1 (unknown ``width``: the same channels in each of at least two cases)."""
    matches = [CHANNEL_FILE.match(stem(p)) for p in files]
    if not files or not all(matches):
        return None
    found: dict[str, dict[int, Path]] = {}
    for match, path in zip(matches, files, strict=True):
        found.setdefault(match["case"], {})[int(match["channel"])] = path
    widths = {tuple(sorted(channels)) for channels in found.values()}
    held = next(iter(widths))
    if len(widths) != 1 or held != tuple(range(width or len(held))) or (width is None and len(found) < 2):
        return None
    return {case: [channels[i] for i in held] for case, channels in found.items()}


def _cases(files: list[Path], index: dict, width: int | None) -> tuple[dict[str, list[Path]], int | None]:
    """Case name -> its files in channel order, and the channels per case when they are nnU-Net channel files.

    Channel files only when more masks pair with their case names than with the file names: a set of single
    images named ``img_0001``, ``img_0002`` stays a set of images.
    """
    single = {stem(p): [p] for p in files}
    grouped = _grouped(files, width)

    def paired(cases: Iterable[str]) -> int:
        return sum(lookup(index, c) is not None for c in cases)

    if grouped is None or paired(grouped) <= paired(single):
        return single, None
    return grouped, len(next(iter(grouped.values())))


def _mask_index(masks: Iterable[Path]) -> dict[str | tuple[str, str], Path]:
    """Case name -> mask: a mask's own name wins over the name less a ``_mask``-like suffix; the name less a
    leading role word (``segmentation-0`` -> ``0``) is kept apart, as ``("role", "0")`` (see :func:`lookup`)."""
    masks = list(masks)
    index: dict[str | tuple[str, str], Path] = {}
    for path in masks:
        match = MASK_SUFFIX.match(stem(path))
        if match:
            index.setdefault(match["case"], path)
        match = MASK_PREFIX.match(stem(path))
        if match:
            index.setdefault(("role", match["case"]), path)
    index.update({stem(p): p for p in masks})
    return index


def lookup(index: dict, case: str) -> Path | None:
    """The mask of a case: by name (or name + ``_mask``...), else by its name less a leading role word."""
    if case in index:
        return index[case]
    match = IMAGE_PREFIX.match(case)
    return index.get(("role", match["case"])) if match else None


def pair(
    image_dir: Path,
    mask_dir: Path,
    problems: Problems,
    *,
    layout: str,
    test_dir: Path | None = None,
    patients: dict[str, str] | None = None,
    channel_names: tuple[str, ...] | None = None,
    ending: str | None = None,
) -> list[dict]:
    """Rows for the cases of ``image_dir``, each with its mask from ``mask_dir``, and ``test_dir``'s unlabelled
    cases (grouped into channels as the labelled ones are)."""
    index = _mask_index(_files(mask_dir, ending))
    cases, width = _cases(_files(image_dir, ending), index, len(channel_names) if channel_names else None)
    rows, used = [], set()
    for case, paths in cases.items():
        mask = lookup(index, case)
        if mask is None:
            problems.add(
                paths[0], f"no mask for case {case} in {mask_dir.name}/ (expected {case}.<ext> or {case}_mask)"
            )
            continue
        used.add(mask)
        rows.append(_row(case, paths, mask, layout, patients, channel_names))
    for path in sorted(set(index.values()) - used):
        problems.add(path, "mask without its image")
    if test_dir is not None:
        files = _files(test_dir, ending)
        tests = (_grouped(files, width) if width else None) or {stem(p): [p] for p in files}
        rows += [_row(case, paths, None, layout, patients, channel_names) for case, paths in tests.items()]
    if len({is_volume(Path(r["image"][0])) for r in rows}) > 1:
        problems.add(image_dir, "mixes 2D images and volumes: one study takes one or the other")
    return rows


def _row(case, paths, mask, layout, patients, channel_names) -> dict:
    names = channel_names or (tuple(f"channel {i}" for i in range(len(paths))) if len(paths) > 1 else ("image",))
    patient = (patients or {}).get(case) or (patients or {}).get(paths[0].name) or case
    return row(case, patient, layout, paths, names[: len(paths)], mask=mask)


def _beside(files: list[Path]) -> tuple[list[Path], dict[str, Path], list[Path]]:
    """A folder's images, the mask beside each image that has one, and masks without their image:
    ``<image>_mask`` files (:func:`split_masks`), else ``<image>_seg`` (``_segmentation``, ``_label``,
    ``_gt``), else names that differ by a leading role word."""
    images, masks, orphans = split_masks(files)
    if masks:
        return images, masks, orphans
    stems = {stem(p) for p in files}  # <image>_seg, _segmentation, _label, _gt beside <image>
    suffixed = {m["case"]: p for p in files if (m := MASK_SUFFIX.match(stem(p))) and m["case"] in stems}
    if suffixed:
        return [p for p in files if p not in set(suffixed.values())], suffixed, []
    index = _mask_index(p for p in files if MASK_PREFIX.match(stem(p)))
    images = [p for p in files if not MASK_PREFIX.match(stem(p))]
    found = {stem(p): mask for p in images if (mask := lookup(index, stem(p))) is not None}
    return images, found, sorted(set(index.values()) - set(found.values()))


def _pairs_beside(folder: Path) -> bool:
    """Most of the folder's images have their mask beside them."""
    images, masks, _ = _beside(_files(folder, None))
    return bool(masks) and 2 * len(masks) >= len(images)


def flat(root: Path) -> bool:
    """Images with their masks beside them in the root itself (no image folders)."""
    return _pairs_beside(root)


def batches(subdirs: list[Path]) -> list[Path]:
    """Folders (LiTS' ``Training Batch 1/``...) each holding images with their masks beside them, else []."""
    full = [d for d in subdirs if _has_files(d)]
    return full if full and all(_pairs_beside(d) for d in full) else []


def _flat_rows(folder: Path, problems: Problems, patients: dict[str, str]) -> list[dict]:
    images, masks, orphans = _beside(_files(folder, None))
    for path in orphans:
        problems.add(path, "mask without its image")
    rows = []
    for path in images:
        if stem(path) not in masks:
            match = IMAGE_PREFIX.match(stem(path))  # named by role word (volume-7): its mask is segmentation-7
            expected = f"segmentation-{match['case']} or mask-{match['case']}" if match else f"{stem(path)}_mask"
            problems.add(path, f"no mask beside it (expected {expected})")
            continue
        rows.append(_row(stem(path), [path], masks[stem(path)], "paired", patients, None))
    return rows


def scan(root: Path, problems: Problems, **_) -> list[dict]:
    found = folders(visible_dirs(root))
    patients = read_image_patients(root / "patients.csv")
    if found is not None:
        image_dir, mask_dir, test_dir = found
        rows = pair(image_dir, mask_dir, problems, layout="paired", test_dir=test_dir, patients=patients)
    elif flat(root):
        rows = _flat_rows(root, problems, patients)
    elif full := batches(visible_dirs(root)):
        rows = [r for folder in full for r in _flat_rows(folder, problems, patients)]
    else:
        names = ", ".join(sorted(IMAGE_WORDS)[:4])
        problems.add(root, f"needs one image folder ({names}, ...) and one mask folder (masks, labels, ...)")
        return []
    unmapped = sum(r["patient_id"] == r["case_id"] for r in rows) if patients else 0
    if unmapped:
        problems.add(root / "patients.csv", f"{unmapped} case(s) not listed: each is its own patient")
    return rows
