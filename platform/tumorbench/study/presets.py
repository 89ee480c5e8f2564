"""The comparison studies tumorbench ships, each at three presets.

- ``smoke``: minutes (CI, a first look);
- ``default``: a real comparison in well under an hour on 2 CPU cores;
- ``full``: the GPU-cluster study (more folds, epochs, trials, larger inputs).

A study is a function of the preset returning a :class:`~tumorbench.study.spec.Study`;
search spaces are real Ray Tune domains. Real data sets are read from
:func:`tumorbench.paths.shared_data` (``$TUMORBENCH_SHARED_DATA``, else ``../shared/data``
beside the checkout).
"""

from __future__ import annotations

from collections.abc import Callable

from ray import tune

from tumorbench.paths import shared_data
from tumorbench.study.spec import Candidate, Study, StudyError

_BUDGET = {  # preset -> (folds, epochs, trials per random/Bayesian search)
    "smoke": (2, 1, 1),
    "default": (3, 4, 2),
    "full": (5, 40, 16),
}


# A first look explains one out-of-fold case per fold and model: at the default 4, explanations were 4.9 of the
# smoke job's 7.4 minutes on two 1-CPU nodes (tests/integration/test_cluster.py), more than its training.
SMOKE_EXPLAIN_CASES = 1


def preset_fields(preset: str) -> dict:
    """Study fields a preset sets beyond folds, epochs and trials."""
    return {"explain_cases": SMOKE_EXPLAIN_CASES} if preset == "smoke" else {}


def _budget(preset: str) -> tuple[int, int, int]:
    if preset not in _BUDGET:
        raise StudyError(f"unknown preset {preset!r} (choose from {', '.join(_BUDGET)})")
    return _BUDGET[preset]


def _study(
    name: str,
    task: str,
    preset: str,
    config: dict,
    candidates: tuple[Candidate, ...],
    baselines: tuple[str, ...],
    *,
    dataset: str | None = None,
    **fields,
) -> Study:
    """A shipped study: the preset's folds and :func:`preset_fields` (smoke's ``explain_cases``) unless ``fields``
    set them; ``dataset``: a shared-data folder."""
    fields = {"n_folds": _budget(preset)[0], **preset_fields(preset), **fields}
    data = f"{shared_data()}/{dataset}" if dataset else None
    return Study(name=name, task=task, data=data, config=config, baselines=baselines, candidates=candidates, **fields)


def synthetic(preset: str) -> Study:
    """The embedded default: synthetic BraTS-layout brain MRI, 3D binary whole-tumor segmentation.

    The phantom's label map {0, 1, 2, 4} becomes one whole-tumor channel (``label_map="binary"``),
    the same region the classical baselines segment, so every row is scored on the same target.
    """
    _, epochs, samples = _budget(preset)
    tiny = preset != "full"
    suffix = "_tiny" if tiny else ""
    patch = [32, 32, 32] if tiny else [64, 64, 64]
    # Default: 12 epochs of 4 patches per case. Measured in-process on fold 0 (8 training phantoms): unet
    # 0.43 Dice after the old 6 epochs x 2 patches, 0.72 after 12 x 4; attention_unet needs lr 1e-2 (0.39 at
    # 3e-3, 0.90 at 1e-2); segresnet 0.81 already at 6 x 2.
    shared = {
        "spatial_dims": 3,
        "epochs": {"smoke": epochs, "default": 12, "full": epochs}[preset],
        "batch_size": 2,
        "lr": 3e-3,
        "workers": 2 if preset == "full" else 1,
        "augment": {},
        "preprocess": {"label_map": "binary"},
        "sampling": {"mode": "patch3d", "patch_size": patch, "num_samples": 4},
        "roi_size": patch,
    }
    lr_space = {"lr": tune.grid_search([3e-3, 1e-2])} if preset != "smoke" else {}
    candidates = (
        Candidate("unet", {"model": f"unet{suffix}"}, lr_space, "grid" if lr_space else "random", samples),
        Candidate("attention_unet", {"model": f"attention_unet{suffix}", "lr": 1e-2}),
        Candidate("segresnet", {"model": f"segresnet{suffix}"}),
    )
    synthetic_data = ("brain-mri", 12 if preset != "full" else 40)
    return _study("synthetic", "segmentation", preset, shared, candidates, ("otsu", "kmeans"), synthetic=synthetic_data)


def lgg(preset: str) -> Study:
    """LGG FLAIR-abnormality segmentation on 2D slices (Buda et al.), per-patient Dice."""
    _budget(preset)  # refuses an unknown preset before the settings below are looked up by it
    size = [128, 128] if preset != "full" else [256, 256]
    shared = {
        "preprocess": {"spatial_size": size},
        "batch_size": 8,
        "lr": 2e-3,
        "workers": 2,
        "epochs": {"smoke": 1, "default": 8, "full": 60}[preset],
        "augment": {"flip_axes": [0, 1], "prob": 0.5},
    }
    return _study(
        "lgg",
        "segmentation",
        preset,
        shared,
        (Candidate("unet", {"model": "unet"}), Candidate("attention_unet", {"model": "attention_unet"})),
        ("otsu", "kmeans"),
        dataset="lgg",
        layout="lgg",
        baseline_params={"otsu": {"max_train_cases": 200}, "kmeans": {"max_train_cases": 200}},
    )


def brain_yes_no(preset: str) -> Study:
    """Brain MRI yes/no (de-duplicated): CNNs under grid, random and Bayesian search vs feature baselines."""
    samples = _budget(preset)[2]
    size = [128, 128] if preset != "full" else [224, 224]
    shared = {
        "preprocess": {"spatial_size": size, "channels": 3},
        "batch_size": 16,
        "workers": 2,
        "epochs": {"smoke": 1, "default": 8, "full": 30}[preset],
        "dedupe": True,
    }
    candidates = (
        # Transfer vs scratch and the augmentation strength, every combination.
        Candidate(
            "tf_efficientnet_lite0",
            {"model": "tf_efficientnet_lite0"},
            {
                "pretrained": tune.grid_search([True, False]),
                "augment": tune.grid_search(["light", "medium"] if preset != "smoke" else ["light"]),
            },
            "grid",
        ),
        Candidate(
            "resnet18",
            {"model": "resnet18"},
            {"lr": tune.loguniform(1e-4, 3e-3), "augment": tune.choice(["none", "light", "medium"])},
            "random",
            samples,
        ),
        Candidate(
            "efficientnet_b0",
            {"model": "efficientnet_b0"},
            {"lr": tune.loguniform(1e-4, 3e-3), "preprocess.contrast": tune.choice(["none", "clahe"])},
            "bayes",
            samples,
        ),
    )
    baselines = ("logreg", "svm", "random_forest", "gradient_boosting")
    return _study(
        "brain_yes_no",
        "classification",
        preset,
        shared,
        candidates,
        baselines,
        dataset="brain_mri_yes_no",
        layout="image-folder",
    )


def lidc(preset: str) -> Study:
    """LIDC nodule malignancy (mean rating <=2 benign, >=4 malignant, 3 excluded) on 50x50 crops."""
    samples = _budget(preset)[2]
    shared = {
        "preprocess": {"spatial_size": [64, 64], "normalize": "minmax"},
        "batch_size": 16,
        "workers": 1,
        "epochs": {"smoke": 1, "default": 15, "full": 60}[preset],
    }
    candidates = (
        Candidate("resnet18", {"model": "resnet18"}, {"lr": tune.loguniform(1e-4, 3e-3)}, "random", samples),
        Candidate("resnet18_tiny", {"model": "resnet18_tiny"}),
        Candidate("efficientnet_b0", {"model": "efficientnet_b0"}),
    )
    baselines = ("logreg", "random_forest")
    return _study(
        "lidc", "classification", preset, shared, candidates, baselines, dataset="lidc_nodules", layout="lidc"
    )


def brats(preset: str) -> Study:
    """BraTS 3D multi-region segmentation (WT/TC/ET): a GPU-cluster study; 3 local cases only check the plumbing."""
    folds, epochs, _ = _budget(preset)
    patch = [96, 96, 96] if preset == "full" else [64, 64, 64]
    shared = {
        "spatial_dims": 3,
        "epochs": epochs,
        "batch_size": 2,
        "workers": 2 if preset == "full" else 1,
        "preprocess": {"label_map": "brats"},
        "sampling": {"mode": "patch3d", "patch_size": patch, "num_samples": 2},
        "roi_size": patch,
    }
    suffix = "" if preset == "full" else "_tiny"
    candidates = tuple(Candidate(name, {"model": f"{name}{suffix}"}) for name in ("segresnet", "unet", "swin_unetr"))
    return _study(
        "brats",
        "segmentation",
        preset,
        shared,
        candidates,
        ("otsu", "kmeans"),
        dataset="brats",
        layout="brats",
        n_folds=max(2, folds if preset == "full" else 2),
    )


STUDIES: dict[str, Callable[[str], Study]] = {
    "synthetic": synthetic,
    "lgg": lgg,
    "brain_yes_no": brain_yes_no,
    "lidc": lidc,
    "brats": brats,
}
