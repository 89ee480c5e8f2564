"""The study ``--data PATH`` runs on a dataset nobody configured: layout, dimensions, task and template detected.

Detection reads the catalog (no Ray, no training) and at most one mask header and array, so it says
what it will run, or why it cannot, before anything starts:

- layout: :func:`tumorbench.data.catalog.detect_layout`;
- 2D or 3D: volumes for ``brats``, for ``dicom`` when a series has more than one slice; for ``msd``, ``paired``
  and ``image-folder`` volumes when the files are NIfTI (nnU-Net sets may hold PNG); images for ``lgg`` and ``lidc``;
- task: classification when the catalog has class labels, else segmentation when it has masks;
- template: BraTS label maps (labels within {0, 1, 2, 3, 4}, more than one tumor label) get the BraTS
  regions study (WT/TC/ET); other masks a whole-lesion study in 2D or 3D; labels a 2D or 3D classifier study
  (LIDC crops: the shipped LIDC study's settings).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from tumorbench.data.catalog import data_dims
from tumorbench.data.layouts.common import VOLUME_SUFFIXES
from tumorbench.data.masks import BRATS_REGIONS
from tumorbench.errors import TumorbenchError
from tumorbench.study.target import brats_regions

BRATS_LABELS = {0, 1, 2, 3, 4}


@dataclass(frozen=True)
class Detection:
    """What ``--data`` found: layout (and why), dimensions, task and the study template."""

    layout: str
    evidence: str
    spatial_dims: int
    task: str
    template: str
    cases: int
    why: str
    regions: tuple[tuple[int, ...], ...] | None = None  # WT / TC / ET labels a brain tumour dataset.json names

    def describe(self) -> str:
        return (
            f"layout {self.layout} ({self.evidence}), {self.cases} cases, {self.spatial_dims}D, task {self.task}, "
            f"study template {self.template} ({self.why})"
        )


def spatial_dims(frame: pd.DataFrame) -> int:
    """3 for BraTS, multi-slice DICOM series and NIfTI files of any other layout, else 2."""
    if frame.attrs["layout"] == "dicom":
        return 3 if int(frame.get("n_slices", pd.Series([1])).max()) > 1 else 2
    return data_dims(frame)


def mask_labels(frame: pd.DataFrame) -> set[int]:
    """The label values of the first non-empty mask of the catalog (one file read); an 8-bit 0/255
    mask (lossy JPEG ones too, whatever their edge values) is ``{0, 255}``."""
    import numpy as np

    from tumorbench.data import io
    from tumorbench.data.masks import stored_labels

    for path in frame["mask"].dropna():
        data = io.read_image(path, dtype=np.int16)
        labels = stored_labels(data.array, data.meta.get("format"))
        if labels is not data.array:  # cut at 128: an 8-bit mask, named by its stored foreground value
            labels = labels * 255
        values = np.unique(labels)
        if len(values) > 1:
            return {int(v) for v in values}
    return set()


def detect(frame: pd.DataFrame, labels_of_mask=mask_labels, task: str | None = None) -> Detection:
    """Decide dimensions, task and template for a scanned catalog.

    ``task``: ``classification`` or ``segmentation`` when the user chose (a dataset with both labels and
    masks, e.g. BUSI, can be either); by default classification wins when there are labels.

    Raises:
        TumorbenchError: Neither class labels nor masks (or not what ``task`` needs), or a combination no
            template fits.
    """
    layout, evidence, cases = frame.attrs["layout"], frame.attrs.get("layout_evidence", "given"), len(frame)
    dims = spatial_dims(frame)
    if task not in (None, "classification", "segmentation"):
        raise TumorbenchError(f"unknown task {task!r} (classification or segmentation)")
    wanted = {"classification": "label", "segmentation": "mask"}.get(task)
    if wanted and not frame[wanted].notna().any():
        raise TumorbenchError(
            f"--task {task}: layout {layout} has no {'class labels' if wanted == 'label' else 'masks'}"
        )
    if frame["label"].notna().any() and task != "segmentation":
        if frame["label"].dropna().nunique() < 2:
            raise TumorbenchError(
                f"layout {layout}: one class only ({frame['label'].dropna().iloc[0]!r}); "
                "a classifier needs at least two"
            )
        template = "classification-3d" if dims == 3 else "lidc" if layout == "lidc" else "classification-2d"
        return Detection(layout, evidence, dims, "classification", template, cases, "class labels found")
    if frame["mask"].notna().any():
        if layout == "brats":
            values = labels_of_mask(frame)
            if values <= BRATS_LABELS and len(values - {0}) > 1:
                return Detection(
                    layout,
                    evidence,
                    3,
                    "segmentation",
                    "brats",
                    cases,
                    f"BraTS label map {sorted(values)}: WT/TC/ET regions",
                )
        if layout == "msd" and dims == 3 and (regions := brats_regions(frame)):
            sets = ", ".join(f"{n} {'+'.join(map(str, v))}" for n, v in zip(BRATS_REGIONS, regions))
            why = f"dataset.json's brain tumour labels: {sets}"
            return Detection(layout, evidence, 3, "segmentation", "brats", cases, why, regions)
        template = "segmentation-3d" if dims == 3 else "segmentation-2d"
        why = "masks found, no class labels" if task is None else "masks found, --task segmentation"
        return Detection(layout, evidence, dims, "segmentation", template, cases, why)
    where = {  # where this layout's labels would come from
        "dicom": "a labels.csv at the root with columns series_dir and label (or mask); for series kept in "
        "class folders (benign/..., malignant/...), `tumorbench data labels PATH` writes it; for CBIS-DDSM "
        "(Mass-Training_P_00001_LEFT_CC/... and its case CSVs), `tumorbench data cbis-ddsm PATH --out DIR`; for "
        "LIDC-IDRI (CT series, each folder with its readers' XML), `tumorbench data lidc-idri PATH --out DIR`",
        "image-folder": "one subfolder per class",
    }.get(layout, "the files docs/data.md lists for this layout")
    raise TumorbenchError(
        f"layout {layout}: neither class labels nor masks found; nothing to compare models on. "
        f"Labels come from {where} (see docs/data.md)"
    )


def fit_patch(frame: pd.DataFrame, patch: list[int]) -> list[int]:
    """Shrink a 3D patch to the smallest axis of the first volume file, in multiples of 16 (phantoms are small)."""
    import nibabel as nib

    from tumorbench.data import itk_io

    path = frame["image"].iloc[0][0]
    if not str(path).endswith(VOLUME_SUFFIXES):
        return list(patch)
    smallest = min((itk_io.header(path)["shape"] if itk_io.is_itk(path) else nib.load(path).shape)[:3])
    return [max(16, min(p, smallest // 16 * 16)) for p in patch]


def _classification_3d(preset: str):
    """3D classifiers (MONAI DenseNet-121) on whole resized volumes vs feature baselines on the key slice."""
    from tumorbench.study import presets
    from tumorbench.study.spec import Candidate, Study

    folds, epochs, samples = presets._budget(preset)
    size = {"smoke": [32, 32, 16], "default": [64, 64, 32], "full": [96, 96, 64]}[preset]
    shared = {
        "spatial_dims": 3,
        "preprocess": {"spatial_size": size},
        "batch_size": 4,
        "workers": 1,
        "epochs": {"smoke": 1, "default": 10, "full": 40}[preset],
    }
    model = "densenet121_tiny" if preset == "smoke" else "densenet121"
    return Study(
        name="generic",
        task="classification",
        data=None,
        n_folds=folds,
        config=shared,
        baselines=("logreg", "random_forest"),
        candidates=(Candidate("densenet121", {"model": model}, {}, "random", 1),),
        **presets.preset_fields(preset),
    )


def build(detection: Detection, frame: pd.DataFrame, preset: str):
    """The study template of a detection (a :class:`~tumorbench.study.spec.Study` without data set).

    CT data in Hounsfield units (DICOM or MSD channels named CT, NIfTI volumes reaching air's -1000 HU:
    :func:`looks_like_hu`; not LIDC's 8-bit crops) is windowed
    (``normalize="ct_window"``, the level and width of :class:`~tumorbench.transforms.PreprocessConfig`) in
    every template: z-scores of HU would be dominated by air and bone.
    """
    study = _template(detection, frame, preset)
    channel = str(frame["channels"].iloc[0][0]).lower() if len(frame) and frame["channels"].iloc[0] else ""
    if detection.layout != "lidc" and (channel == "ct" or looks_like_hu(frame)):
        preprocess = {**study.config.get("preprocess", {}), "normalize": "ct_window"}
        study = replace(study, config={**study.config, "preprocess": preprocess})
    return study


def looks_like_hu(frame: pd.DataFrame) -> bool:
    """Whether the first case is one NIfTI volume reaching -500 or below: CT in Hounsfield units (air is -1000;
    MR and PET, even normalised, are not that negative). LiTS and KiTS name no CT channel (one file read)."""
    import nibabel as nib
    import numpy as np

    from tumorbench.data import itk_io

    paths = frame["image"].iloc[0] if len(frame) else ()
    if len(paths) != 1 or not str(paths[0]).endswith(VOLUME_SUFFIXES):
        return False
    if itk_io.is_itk(paths[0]):  # SimpleITK reads whole files: one volume, once per study
        voxels = itk_io.read_itk(paths[0]).array
        return voxels.ndim == 3 and float(voxels[::4, ::4, ::4].min()) <= -500
    image = nib.load(paths[0])
    # Every 4th voxel per axis: air surrounds the body, and a 500-slice CT is not held whole for one minimum.
    return len(image.shape) == 3 and float(np.min(np.asanyarray(image.dataobj[::4, ::4, ::4]))) <= -500


def _template(detection: Detection, frame: pd.DataFrame, preset: str):
    from tumorbench.study import presets

    if detection.template == "brats":
        study = presets.brats(preset)
        patch = fit_patch(frame, study.config["sampling"]["patch_size"])
        sampling = {**study.config["sampling"], "patch_size": patch}
        config = {**study.config, "sampling": sampling, "roi_size": patch}
        if detection.regions:  # labels numbered as the Decathlon's, not as BraTS'
            config["preprocess"] = {**config["preprocess"], "regions": [list(r) for r in detection.regions]}
        return replace(study, config=config)
    if detection.template == "classification-3d":
        return _classification_3d(preset)
    return {
        "classification-2d": presets.brain_yes_no,
        "lidc": presets.lidc,
        "segmentation-3d": presets.synthetic,
        "segmentation-2d": presets.lgg,
    }[detection.template](preset)


def generic_study(
    data: str,
    preset: str,
    layout: str = "auto",
    task: str | None = None,
    foreground_labels: tuple[int, ...] | None = None,
):
    """Scan ``data`` (``layout`` and ``task``: detected by default), print what was detected, return its study.

    A whole-lesion study segments ``foreground_labels``, else the labels :func:`~tumorbench.study.target.choose_target`
    finds named as lesions (the tumour of organ + tumour masks), else every non-zero label.
    """
    from tumorbench.data.catalog import scan
    from tumorbench.study.target import choose_target

    frame = scan(data, layout, strict=False)
    detection = detect(frame, task=task)
    whole_lesion = detection.task == "segmentation" and detection.template != "brats"
    if foreground_labels and not whole_lesion:
        raise TumorbenchError(f"--foreground-labels is for whole-lesion segmentation studies, not {detection.template}")
    target = choose_target(frame, mask_labels, foreground_labels) if whole_lesion else None
    print(f"[tumorbench] {data}: {detection.describe()}", flush=True)
    for note in [*frame.attrs.get("notes", []), *([target.note] if target and target.note else [])]:
        print(f"[tumorbench] note: {note}", flush=True)
    study = build(detection, frame, preset)
    if target is not None:  # the mask mapping of every whole-lesion template, 2D (label maps in PNGs) and 3D
        preprocess = {**study.config.get("preprocess", {}), **target.preprocess()}
        study = replace(study, config={**study.config, "preprocess": preprocess})
    return replace(
        study,
        name=f"generic-{Path(data).name}",
        data=str(Path(data).resolve()),
        layout=detection.layout,
        synthetic=None,
    )
