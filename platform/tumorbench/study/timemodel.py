"""The study planner's time model: what a fold, a trial and a study cost, from constants measured here.

Seconds; ms per image in one torch thread, divided by ``speed``: CPU_PARALLEL_EFFICIENCY x the cores a
trial holds (of those RAY_BACKGROUND_CORES leave), or GPU_SPEEDUP (:func:`tumorbench.study.planner.make_plan`
sets both):

    fold  = FOLD_OVERHEAD_S + cache_fill + epochs * (train_imgs * train_ms + val_imgs * eval_ms) / 1000
            (+ the outer fold scored once under nested selection; train_imgs leave out the inner validation
            and count each worker's shard in whole batches, :func:`epoch_cases`; a 3D case is validated
            whole: eval_ms once per sliding window, :func:`sliding_windows`;
            cache_fill reads the fold's cases from the study's disk cache, or decodes them without one)
    trial = TRIAL_STARTUP_S + folds * fold   (one Train run per trial; under ASHA the search trains
            tuning.schedulers.asha_expected_share of its trials' folds)
    study = RAY_START_S + first_fill + sum over searches (trials * trial / side_by_side) + baselines
            + explanations + locked test
            (first_fill: every case decoded into the disk cache once per chain, training and validation;
            explanations: explain_seconds, after the searches; locked test (``--test``): one final_seconds per
            model, each a Train run on every training case, and the baselines refitted on them)

with ms per image scaled by pixel count from the 128x128 (2D) or 32^3 (3D) calibration size, and by each
model's factor when the planner timed the study's models on this machine (:mod:`tumorbench.study.probe`; then
from the probed size, by the share of each model's cost the probe found fixed);
the other CPU-bound constants (start-up, set-up, decoding, augmenting, scoring, baselines, Ray's own cores)
by the machine's factor, the probed models' geometric mean (:func:`tumorbench.study.probe.machine_factor`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Factors = dict[str, dict[str, float]]  # model -> {"train": x, "eval": y}: measured here / the constant

# ms per image (train step, eval forward) at 128x128, batch 8, 1 torch thread, in CPU time, measured on
# this 2-core machine with `python bench/plan_calibration.py` (random tensors, model and optimizer only;
# 2026-12-02, torch 2.14.1): unet 21.0/5.9, attention_unet 61.1/16.4, resnet18 40.1/11.4,
# resnet18_tiny 7.8/3.1, efficientnet_b0 40.2/7.6, tf_efficientnet_lite0 36.3/7.2.
# The other entries are not measured: scaled from a measured relative by parameter count.
MS_PER_IMAGE: dict[str, tuple[float, float]] = {
    "unet": (21.0, 5.9),
    "attention_unet": (61.1, 16.4),
    "unet_tiny": (7.0, 2.0),
    "attention_unet_tiny": (20.0, 5.5),
    "resnet18": (40.1, 11.4),
    "resnet18_tiny": (7.8, 3.1),
    "efficientnet_b0": (40.2, 7.6),
    "tf_efficientnet_lite0": (36.3, 7.2),
    "densenet121": (110.0, 30.0),
    "resnet50": (90.0, 25.0),
}
MS_PER_IMAGE_DEFAULT = (60.0, 18.0)  # a model not calibrated: assume a mid-sized one
# 3D patch models: ms per patch of 32^3 (tiny variants; full-size models ~4x). Estimated, not measured.
MS_PER_PATCH_3D = {
    "unet_tiny": (60.0, 20.0),
    "segresnet_tiny": (50.0, 18.0),
    "attention_unet_tiny": (80.0, 25.0),
    "swin_unetr_tiny": (200.0, 60.0),
}
CALIBRATION_SIZE_2D, CALIBRATION_SIZE_3D = 128, 32
# Below 128x128 a 2D model's cost does not fall with the pixel count: part of it is per image. Measured at 64x64
# (`bench/plan_calibration.py --size 64`, 2026-12-03): train 19.1 / 25.8 / 18.5 ms for tf_efficientnet_lite0 /
# resnet18 / efficientnet_b0, 0.53 / 0.64 / 0.46 of their 128x128 cost where pixels give 0.25: a fixed ~40%
# (the 5,700-image study at 64 px trained 2x slower than pixel scaling planned).
SMALL_FIXED_SHARE = 0.4
# The planner's probe times each model at two sizes and replaces this share by the model's own (fixed_share): a
# 2D U-Net's is ~0.1 (its step fell 0.26-0.34x from 128 to 64 px), the classifiers' 0.2-0.5, 3D models' ~0.03.
# Bounded: a step timed slower at the smaller size (oneDNN picking another kernel) is not extrapolated.
MAX_FIXED_SHARE = 0.9
# Data loading per case, CPU time of the project's transform chain (2026-12-02, 60 cases each): the
# deterministic part (read, decode, resize; once per fold with a cache) took 10.8 ms on LGG (768 KiB
# decoded float32 per case) and 21.9 ms on yes/no (1833 KiB): ~2 ms + 11 ms per MiB decoded. The random
# augmentation that runs every epoch on top took ~3 ms per case at 128x128.
DECODE_MS_FIXED, DECODE_MS_PER_MIB, AUGMENT_MS = 2.0, 11.0, 3.0
# A study's memory caches fill from its disk cache (data.datasets.DiskBackedCacheDataset): torch.load of a
# cached 3x128x128 case took 0.35-0.4 ms here (2026-12-03); with hashing the case, ~0.5 ms.
CACHED_READ_MS = 0.5
SHARED_CACHES = ("memory+disk", "disk")  # the time model's cache kinds that decode each case once per study
# A shared disk cache holds each case once per transform chain: the training chain's deterministic part and
# the validation chain (training.data.val_dataset), so it needs about twice one trial's memory cache.
DISK_CHAINS = 2
# A trial's Ray Train run (one per trial, its folds in turn): start-up and shutdown once, and per fold the
# data and model set-up, a checkpoint per epoch and the outer scoring. Before one run per trial, a run per fold
# cost 23.8 s on average over the 20 folds of `compare.py --study brain_yes_no --budget 15` (2026-12-02).
# Measured on the yes/no default study after the change (2026-12-02): ~28 s from a trial's start to its first
# epoch's end less that epoch (start-up and fold 0's set-up), 3-8 s between folds beyond their epochs.
TRIAL_STARTUP_S = 24.0
FOLD_OVERHEAD_S = 6.0
RAY_START_S = 20.0
# Segmentation scores every validation case on its mask (Dice, IoU, HD95, ...) beyond the forward pass: LGG
# --budget 15 (2026-12-03, U-Net 128 px, 2 workers) validated 174 cases in 2.0 s per epoch where the forward
# passes take 0.6 s, and a fold's outer scoring and set-up took 12 s: ~8 ms more per case, wall time.
SEG_VAL_MS_PER_CASE = 8.0
# Classical baselines per fold: features of every case (~5 ms) and fitting, measured on yes/no and LGG (the
# segmentation baselines; a locked test set's refits).
BASELINE_MS_PER_CASE, BASELINE_S_PER_FOLD = 5.0, 4.0
# Classifier baselines (study.results.shared_features): each case's features once per study, then per fold and
# classifier an inner grid search of its head on the training cases, each a 1-CPU Ray task. Measured 2026-12-06
# (`/work/runs/r17/baseline_cost.py`, machine factor ~0.8, divided by it here): features 14.9 ms per yes/no case
# (1.8 MiB decoded) and 7.4 ms per 160-px greyscale case: FEATURE_MS_FIXED + half the decode. Heads, seconds
# fixed + ms per training case, at 152 (yes/no) and 3,799 cases (the 5,700-image set): logreg 0.1 s / 17.6 s,
# svm 0.3 s / 33.8 s (quadratic in the cases: ms per case at 3,800 cases), random forest 3.1 s / 54.2 s,
# gradient boosting 1.8 s / 69.6 s.
FEATURE_MS_FIXED, FEATURE_DECODE_SHARE = 7.7, 0.5
HEAD_COST = {"logreg": (0.1, 5.8), "svm": (0.4, 11.1), "random_forest": (1.2, 17.8), "gradient_boosting": (0.0, 22.9)}
SVM_QUADRATIC_AT = 3800.0
# A classification study's statistics after the searches, in the driver: the leaderboard's and the paired
# comparisons' patient bootstraps (2,000 resamples of each pooled metric). 58 s for 7 models of the 15,000-image,
# 3-class study at machine factor ~0.77 (`/work/runs/r19/sumtime.py`, 2026-12-06): 0.55 ms per case and model
# here, 0.7 at the constants' speed. A segmentation study bootstraps per-patient values: negligible.
STATS_MS_PER_CASE = 0.7
GPU_SPEEDUP = 10.0  # assumed, not measured here (no GPU lent): a GPU worker vs one CPU thread
# On CPUs a trial's workers hold every core it is given and torch uses one thread per core held
# (training.data.configure_threads): the single-thread times above run this much faster per core.
# 0.9: the yes/no default study (2 workers x 0.95 CPU) trained 2.7 s per epoch of tf_efficientnet_lite0
# where one thread takes 4.9 s (`compare.py --study brain_yes_no --preset default`, 2026-12-02).
CPU_PARALLEL_EFFICIENCY = 0.9
# ...of the cores Ray's own processes leave: while a Train run trains, its controller, the raylet, GCS, dashboard
# and Train's helper actors (7 per run) took 0.23-0.40 cores here (2026-12-03, /proc/stat and each process's CPU
# time while a worker slept), and the LGG --budget 15 study's two 1-thread U-Net workers trained 18% slower than
# their probed step at 0.9 x 2 cores. On 2 cores that is 15% of the machine; on a 16-core node 2%.
RAY_BACKGROUND_CORES = 0.3


# Explanations after the searches (explain.study): per explained case, Grad-CAM, the deletion and insertion
# curves (2 x 17 forwards) and its share of the randomisation check, in the driver on the whole input (3D:
# overlapping sliding windows over the volume). Timed on 2026-12-03 (explain.cases.explain_prepared and
# randomisation on a study's best package): resnet18 at 128 px 0.9 s per case, ~140 eval passes of
# MS_PER_IMAGE at 0.9 x 2 cores; segresnet_tiny on a 64x64x40 synthetic volume 11.4 s, ~230 eval passes at
# its size. The README's synthetic study explains 36 cases: ~7 min that the plan left out (5.5 min planned,
# 14.0 actual). In that study the randomisation check is shared by a fold's cases: its 36 cases took 312 s
# (2026-12-03, `python experiments/compare.py`), where 230 passes in 3D planned 483 s: 150 passes.
# 2026-12-07: Grad-CAM's backward stops at its layer without weight gradients, and a single volume's 3D
# convolutions run on oneDNN (models.onednn). Fold 0 of 4 cases a model (`/work/runs/r26/prof2.py`, before ->
# after): the synthetic study 260 -> ~114 s for its 36 cases (54 passes at its size), the LIDC-IDRI volumes
# 188 -> 166 s (61; their 17-copy curves were already batched, and now dominate), yes/no 9.8 -> 8.3 s and LGG
# 4.8 -> 3.3 s (0.85x and 0.69x of 140).
EXPLAIN_PASSES = {2: 110.0, 3: 65.0}


def explain_seconds(models: list[str], size: float, dims: int, folds: int, per_fold: int, speed: float) -> float:
    """Seconds to explain ``per_fold`` cases of every fold of every model (whole inputs of edge ``size``).

    The constants, not the probe's factors: an explanation pass carries costs a bare forward does not (MONAI's
    sliding-window aggregation, Grad-CAM's hooks, the perturbed copies). The synthetic study's tiny 3D models
    timed 0.2-0.6x their eval constants, which planned its explanations at 2.9 min; they took 5.2.
    """
    passes = folds * per_fold * EXPLAIN_PASSES[dims]
    return sum(passes * model_ms(model, size, dims)[1] for model in models) / 1000 / speed


# A 3D case is validated whole, by MONAI's sliding windows of the patch (inference.predict_volume's overlap): each
# window one eval pass. The 60-CT LIDC-IDRI volumes (128 x 128 x 40, 32^3 patches: 50 windows a case) planned a
# unet_tiny fold at 20 s and an attention_unet_tiny fold at 47 s, counting one pass; they took 37-52 s and ~150 s.
SLIDING_WINDOW_OVERLAP = 0.25


def sliding_windows(volume: Sequence[float] | None, patch: int) -> int:
    """Windows of edge ``patch`` MONAI's sliding-window inference runs over a ``volume`` (1 for 2D: None)."""
    if not volume:
        return 1
    step = max(1, int(patch * (1 - SLIDING_WINDOW_OVERLAP)))
    return math.prod(1 if edge <= patch else math.ceil((edge - patch) / step) + 1 for edge in volume)


def model_ms(model: str, size: float, spatial_dims: int, factors: Factors | None = None) -> tuple[float, float]:
    """Train and eval ms per image (2D) or patch (3D) of ``model`` at ``size``, times the model's probed
    ``factors`` (:func:`tumorbench.study.probe.probe_factors`) when given. A model the probe timed at two sizes
    scales from the probed one by its own fixed share (the part of its cost that does not fall with the pixels)."""
    probed = (factors or {}).get(model, {})
    if "size" in probed:
        train, evaluate = model_ms(model, probed["size"], spatial_dims)
        pixels = (size / probed["size"]) ** spatial_dims
        return (
            train * probed["train"] * (probed["fixed_train"] + (1 - probed["fixed_train"]) * pixels),
            evaluate * probed["eval"] * (probed["fixed_eval"] + (1 - probed["fixed_eval"]) * pixels),
        )
    if spatial_dims == 3:
        base = MS_PER_PATCH_3D.get(model) or tuple(4 * v for v in MS_PER_PATCH_3D.get(f"{model}_tiny", (60.0, 20.0)))
        scale = (size / CALIBRATION_SIZE_3D) ** 3
    else:
        base = MS_PER_IMAGE.get(model, MS_PER_IMAGE_DEFAULT)
        scale = (size / CALIBRATION_SIZE_2D) ** 2
        if scale < 1:
            scale = SMALL_FIXED_SHARE + (1 - SMALL_FIXED_SHARE) * scale
    return base[0] * scale * probed.get("train", 1.0), base[1] * scale * probed.get("eval", 1.0)


def fixed_share(ms: float, smaller_ms: float, ratio: float, spatial_dims: int) -> float:
    """The share of a step's ``ms`` that did not fall with the pixels when its edge shrank by ``ratio`` (taking
    ``smaller_ms``), within 0 (all of it fell) and :data:`MAX_FIXED_SHARE`: ``ms(x) = ms * (f + (1 - f) x)``
    of the pixel ratio ``x``."""
    pixels = ratio**spatial_dims
    share = (smaller_ms / ms - pixels) / (1 - pixels) if ms > 0 and pixels < 1 else SMALL_FIXED_SHARE
    return round(min(max(share, 0.0), MAX_FIXED_SHARE), 3)


def decode_ms(fp: dict[str, Any]) -> float:
    """CPU ms to read, decode and resize one case (the cached part of the transform chain)."""
    return DECODE_MS_FIXED + DECODE_MS_PER_MIB * fp.get("decoded_bytes_per_case", 2**20) / 2**20


def epoch_cases(cases: float, batch: int, workers: int) -> float:
    """Training cases one epoch sees: each worker's shard (padded to equal sizes) in whole batches only
    (``training.data``: ``drop_last`` once a shard holds more than a batch). The yes/no study's 122 training
    cases gave 2 workers 61 each and trained 48 (batch 16): 96 an epoch, where 122 planned its folds 20% long."""
    shard = math.ceil(cases / max(1, workers))
    return max(1, workers) * (shard // batch * batch if shard > batch else shard)


def fold_seconds(model: str, k: Any, n: int, dims: int, cache: str, samples: int, speed: float, decode: float) -> float:
    """One fold's seconds of ``model`` under the knobs ``k`` (size, batch_size, workers, folds, inner, loaders,
    epochs, val_ms, factors, machine: the CPU-bound constants' scale, :func:`tumorbench.study.probe.machine_factor`;
    ``decode`` and ``val_ms`` come scaled)."""
    train_ms, eval_ms = model_ms(model, k.size, dims, k.factors)
    eval_ms *= sliding_windows(k.volume, k.size)  # a validation case is predicted whole
    fit_n = n * (k.folds - 1) / k.folds
    # nested selection: the inner validation patients choose each epoch, the outer fold is scored once
    train_n = epoch_cases(fit_n * (1 - k.inner), k.batch_size, k.workers) * samples
    val_n = fit_n * k.inner if k.inner else n / k.folds
    outer = n / k.folds * (eval_ms / speed + k.val_ms) / 1000 if k.inner else 0.0
    # disk: each epoch reads the cached case back (~1 ms); none: every epoch decodes every case again
    # every worker decodes (once, cached) and augments its own shard: they do it side by side
    augment = AUGMENT_MS * k.machine
    per_epoch = {"memory": augment, "memory+disk": augment, "disk": augment + k.machine, "none": augment + decode}
    per_epoch_ms = per_epoch[cache] / k.loaders
    # memory+disk: every case of the fold comes from the study's disk cache (decoded once per study and
    # chain: ``first_fill``); disk: training cases are read every epoch, validation and outer ones once per fold
    train_cases = fit_n * (1 - k.inner)
    fill_ms = {
        "memory": n * decode,
        "memory+disk": n * CACHED_READ_MS * k.machine,
        "disk": (n - train_cases) * CACHED_READ_MS * k.machine,
        "none": 0.0,
    }[cache]
    fill = fill_ms / 1000 / k.loaders
    epoch = (train_n * (train_ms / speed + per_epoch_ms) + val_n * (eval_ms / speed + k.val_ms)) / 1000
    return FOLD_OVERHEAD_S * k.machine + fill + outer + k.epochs * epoch


def final_seconds(
    model: str, k: Any, n: int, n_test: int, dims: int, cache: str, samples: int, speed: float, decode: float
) -> float:
    """One final model of a locked test set (``compare.py --test``): a Train run on every training case (its
    inner split picks the epoch), then the test cases scored once (:mod:`tumorbench.study.final`)."""
    train_ms, eval_ms = model_ms(model, k.size, dims, k.factors)
    eval_ms *= sliding_windows(k.volume, k.size)
    train_n = epoch_cases(n * (1 - k.inner), k.batch_size, k.workers) * samples
    augment = AUGMENT_MS * k.machine / k.loaders
    epoch = train_n * (train_ms / speed + augment) + n * k.inner * (eval_ms / speed + k.val_ms)
    decoded = n_test if cache in SHARED_CACHES else n + n_test  # a shared cache already holds the training cases
    test = n_test * (eval_ms / speed + k.val_ms)
    set_up = (TRIAL_STARTUP_S + FOLD_OVERHEAD_S) * k.machine
    return set_up + (decoded * decode / k.loaders + k.epochs * epoch + test) / 1000


def baseline_seconds(
    names: list[str],
    n: int,
    folds: int,
    decode: float,
    cores: float,
    machine: float,
    cap: int | None = None,
    test_cases: int | None = None,
) -> float:
    """Wall seconds of ``names`` on ``folds`` folds of ``n`` cases, as 1-CPU Ray tasks on ``cores`` (``decode``:
    one case's decode ms on this machine, as :func:`fold_seconds` takes it; ``machine``: the other constants'
    scale, :func:`tumorbench.study.probe.machine_factor`). Classifiers share each case's features and fit their
    heads on at most ``cap`` training cases (the plan's ``baseline_cases``); others (thresholding, clustering)
    pay the older per-fold constants. ``test_cases``: a locked test set's refits instead, each baseline fitted
    once on all ``n`` cases and scored on the test cases (the features of both shared, as in the folds)."""
    fits, train, scored = (folds, n * (folds - 1) / folds, n) if test_cases is None else (1, n, n + test_cases)
    train = min(train, cap or math.inf)
    tasks = []
    for name in names:
        if name not in HEAD_COST:
            tasks += [BASELINE_S_PER_FOLD + scored * BASELINE_MS_PER_CASE / 1000] * fits
            continue
        fixed, per_case = HEAD_COST[name]
        per_case *= train / SVM_QUADRATIC_AT if name == "svm" else 1.0
        tasks += [BASELINE_S_PER_FOLD + fixed + train * per_case / 1000] * fits
    tasks = [machine * t for t in tasks]
    if any(name in HEAD_COST for name in names):
        tasks.append(scored * (machine * FEATURE_MS_FIXED + FEATURE_DECODE_SHARE * decode) / 1000)
    if not tasks:
        return 0.0
    return max(sum(tasks) / max(1.0, CPU_PARALLEL_EFFICIENCY * cores), max(tasks))


def stats_seconds(n: int, models: int, classification: bool, machine: float) -> float:
    """Seconds of a study's statistics (:data:`STATS_MS_PER_CASE`) over ``n`` cases and ``models`` (deep and
    baseline); 0 for segmentation."""
    return n * models * STATS_MS_PER_CASE * machine / 1000 if classification else 0.0
