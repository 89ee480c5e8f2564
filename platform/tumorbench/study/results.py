"""Out-of-fold results of deep models (best Tune trial) and baselines (Ray tasks), as ``predictions.csv`` rows.

Every model and baseline is scored on the same split file, fold by fold, so the
rows of different models pair up case by case (patient by patient for segmentation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tumorbench.data.splits import fold_frames
from tumorbench.evaluation.oof import score_columns
from tumorbench.tasks import get_task
from tumorbench.tuning.progress import wait_with_progress
from tumorbench.tuning.search import best_row
from tumorbench.tuning.trial import read_state

SEGMENTATION_COLUMNS = ("dice", "iou", "sensitivity", "precision", "hd95")


def best_trial(rows: list[dict[str, Any]], mode: str, n_folds: int) -> dict[str, Any]:
    """The best of a search's trials (``trial_rows``) that finished every fold (trials cut by ASHA never win)."""
    best = best_row(rows, mode)
    if best is None:
        errors = [r["error"] for r in rows if r["error"]][:3]
        raise RuntimeError(f"no trial completed all {n_folds} folds" + (f"; errors: {errors}" if errors else ""))
    return best


def trial_params(row: dict[str, Any]) -> dict[str, Any]:
    """A trial's configuration without the searcher's bookkeeping keys (``__*``)."""
    return {k: v for k, v in row["params"].items() if not k.startswith("__")}


def trials_frame(rows: list[dict[str, Any]], model: str, searcher: str, metric: str) -> pd.DataFrame:
    """``trials.csv`` rows of one search; ``number`` counts from 1 in the order of ``rows``.

    ``trial_rows`` gives the order the trials started in (the searcher's proposal order here,
    where trials run one at a time; trial names cannot give it: Optuna's are random hashes).
    """
    return pd.DataFrame(
        [
            {
                "model": model,
                "searcher": searcher,
                "number": number,
                "trial": r["trial"],
                "status": r["status"],
                "params": json.dumps(trial_params(r), default=str),
                "folds_done": r["folds_done"],
                f"{metric}_mean": r["mean"],
                f"{metric}_sd": r["sd"],
                "epochs_spent": r["epochs_spent"],
                "error": r["error"],
            }
            for number, r in enumerate(rows, 1)
        ]
    )


def dl_predictions(
    trial: dict[str, Any], model: str, task: str, class_names: list[str] | None
) -> tuple[pd.DataFrame, list]:
    """Out-of-fold rows of a trial (a ``trial_rows`` row), and its per-fold records (best checkpoints)."""
    folds, records = read_state(trial["checkpoint"])
    frame = pd.DataFrame(get_task(task).oof_rows(records, class_names)).assign(model=model, kind="dl")
    return frame, folds


def segmentation_row(record: dict) -> dict[str, Any]:
    """A patient's out-of-fold row: its metrics (per BraTS region too, when the masks had regions)."""
    return {
        "case_id": record.get("case_id", record["patient_id"]),
        "patient_id": record["patient_id"],
        "fold": record["fold"],
        **{k: record[k] for k in record if k in SEGMENTATION_COLUMNS or k.startswith("dice_")},
    }


def classification_row(record: dict, class_names: list[str]) -> dict[str, Any]:
    """A case's out-of-fold row: ``p_<k>`` per class (the one schema), plus ``y_score`` for two classes."""
    probs = np.asarray(record["probs"], float)
    row = {"case_id": record["case_id"], "patient_id": record["patient_id"], "fold": record["fold"]}
    scores = {k: float(v) for k, v in score_columns(probs).items()}
    if len(probs) == 2:
        # The positive class is the last class name (tumor "yes", "malignant"), as in training.
        return row | {"y_true": int(record["y_true"] == 1), "y_pred": int(probs[1] >= 0.5)} | scores
    return row | {"y_true": int(record["y_true"]), "y_pred": int(probs.argmax())} | scores


def classification_baseline_rows(
    name: str,
    train: pd.DataFrame,
    val: pd.DataFrame,
    class_names: list[str] | None,
    seed: int,
    params: dict[str, Any],
    cache: Any = None,
) -> pd.DataFrame:
    """A classifier baseline fitted on a fold's training cases; rows for its validation cases (``cache``: the
    study's features, :func:`shared_features`)."""
    from tumorbench.baselines import fit_predict_fold

    frame = fit_predict_fold(name, train, val, classes=class_names, seed=seed, cache=cache, **params)
    frame = frame.drop(columns=[c for c in ("model",) if c in frame.columns])
    if "y_score" in frame.columns:
        frame["y_true"] = (frame["y_true"] == 1).astype(int)
    return frame


def segmentation_baseline_rows(
    name: str, train: pd.DataFrame, val: pd.DataFrame, seed: int, params: dict[str, Any]
) -> pd.DataFrame:
    """A segmentation baseline on a fold: one row per validation patient."""
    from tumorbench.baselines import patient_metrics, segment_fold

    per_patient = patient_metrics(segment_fold(name, train, val, seed=seed, **params))
    return per_patient.assign(case_id=per_patient["patient_id"])


def baseline_fold(
    name: str,
    task: str,
    train: pd.DataFrame,
    val: pd.DataFrame,
    fold: int,
    class_names: list[str] | None,
    seed: int,
    params: dict[str, Any],
    shared: Any = None,
) -> pd.DataFrame:
    """One baseline on one fold (runs as a Ray task): out-of-fold rows like the deep models'; ``shared``: what
    every fold's baseline reuses (a classifier's :func:`shared_features`), or None."""
    frame = get_task(task).baseline_rows(name, train, val, class_names, seed, params, shared)
    return frame.assign(model=name, kind="baseline", fold=fold)


def target_params(study) -> dict[str, Any]:
    """The target the deep models' masks are mapped to, for the baselines: BraTS regions (scored per region
    too) or the study's foreground labels (e.g. the tumour of organ + tumour masks)."""
    preprocess = study.config.get("preprocess", {}) or {}
    if preprocess.get("label_map") == "brats":
        regions = preprocess.get("regions")
        return {"brats_regions": int(preprocess.get("enhancing_label", 4))} | ({"regions": regions} if regions else {})
    labels = preprocess.get("foreground_labels")
    return {"foreground_labels": [int(v) for v in labels]} if labels else {}


def with_split_groups(train: pd.DataFrame, split_doc: dict) -> pd.DataFrame:
    """Training rows with ``split_group`` (patients merged with their near-duplicates) when the split has any:
    a baseline's inner CV keeps them whole, as the outer folds and the deep models' inner split do."""
    from tumorbench.baselines.classifiers import SPLIT_GROUP
    from tumorbench.training.nested import inner_groups

    near = split_doc.get("near_duplicates") or []
    return train.assign(**{SPLIT_GROUP: inner_groups(train, near)}) if near else train


FEATURE_TASKS, FEATURE_MIN_CASES = 16, 128  # feature tasks per study (as many progress lines), cases per task


def shared_features(study, frame: pd.DataFrame, split_doc: dict):
    """The classifier baselines' handcrafted features of every usable case, computed once for all of them and every
    fold (Ray tasks over chunks of cases, 1 CPU each) and put in the object store; None when no baseline of
    ``study`` uses the default extractor. Each fold's task computed them again: the 5,700-image set's 12 baseline
    fits spent 41 s each on the same features, 580 s of baselines where their heads took ~260 s of 2 cores."""
    import ray

    from tumorbench.baselines.classifiers import FeatureCache
    from tumorbench.baselines.features import as_records

    if get_task(study.task).with_mask or not any(shares_features(study, n) for n in study.baselines):
        return None
    cache = FeatureCache()
    rows = as_records(get_task(study.task).usable(frame[~frame["case_id"].isin(split_doc.get("excluded") or [])]))
    size = max(FEATURE_MIN_CASES, -(-len(rows) // FEATURE_TASKS))
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
    remote = ray.remote(num_cpus=1)(_feature_matrix)  # each task reads its cases a few at a time
    pending = [remote.remote(chunk) for chunk in chunks]
    labels = [f"cases {i * size + 1}-{i * size + len(c)}" for i, c in enumerate(chunks)]
    for chunk, block in zip(chunks, wait_with_progress(pending, labels, what="features")):
        cache.add(chunk, block)
    return ray.put(cache)


def _feature_matrix(rows: list[dict]):
    from tumorbench.baselines.classifiers import FeatureCache

    return FeatureCache().matrix(rows)  # chunk_size cases in memory at a time


def shares_features(study, name: str) -> bool:
    """A classifier baseline with the default extractor (no ``features__`` parameter of its own)."""
    from tumorbench.baselines.classifiers import CLASSIFIERS

    params = study.baseline_params.get(name, {})
    return name in CLASSIFIERS and not any(k.startswith("features__") or k == "features" for k in params)


def run_baselines(study, frame: pd.DataFrame, split_doc: dict, class_names: list[str] | None) -> pd.DataFrame:
    """Every baseline on every fold, as Ray tasks on the cluster (1 CPU each)."""
    import ray

    remote = ray.remote(num_cpus=1)(baseline_fold)
    task = get_task(study.task)
    features = shared_features(study, frame, split_doc)
    pending, labels = [], []
    for name in study.baselines:
        for fold in range(len(split_doc["folds"])):
            train, val = (task.usable(part) for part in fold_frames(frame, split_doc, fold))
            train = with_split_groups(train, split_doc)
            pending.append(
                remote.remote(
                    name,
                    study.task,
                    train,
                    val,
                    fold,
                    class_names,
                    study.seed,
                    study.baseline_params.get(name, {}) | target_params(study),
                    features if shares_features(study, name) else None,
                )
            )
            labels.append(f"{name} fold {fold + 1}/{len(split_doc['folds'])}")
    return pd.concat(wait_with_progress(pending, labels), ignore_index=True) if pending else pd.DataFrame()


def write_predictions(parts: list[pd.DataFrame], out: Path) -> pd.DataFrame:
    """``predictions.csv`` with the contract's leading columns."""
    predictions = pd.concat(parts, ignore_index=True)
    lead = ["model", "kind", "fold", "case_id", "patient_id"]
    predictions = predictions[lead + [c for c in predictions.columns if c not in lead]]
    predictions.to_csv(out / "predictions.csv", index=False)
    return predictions
