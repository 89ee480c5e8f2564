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
    return pd.DataFrame([{
        "model": model, "searcher": searcher, "number": number, "trial": r["trial"], "status": r["status"],
        "params": json.dumps(trial_params(r), default=str),
        "folds_done": r["folds_done"], f"{metric}_mean": r["mean"], f"{metric}_sd": r["sd"],
        "epochs_spent": r["epochs_spent"], "error": r["error"]} for number, r in enumerate(rows, 1)])


def dl_predictions(trial: dict[str, Any], model: str, task: str,
                   class_names: list[str] | None) -> tuple[pd.DataFrame, list]:
    """Out-of-fold rows of a trial (a ``trial_rows`` row), and its per-fold records (best checkpoints)."""
    folds, records = read_state(trial["checkpoint"])
    if task == "segmentation":
        rows = [{"case_id": r.get("case_id", r["patient_id"]), "patient_id": r["patient_id"], "fold": r["fold"],
                 **{k: r[k] for k in r if k in SEGMENTATION_COLUMNS or k.startswith("dice_")}} for r in records]
    else:
        rows = [_classification_row(r, class_names or []) for r in records]
    frame = pd.DataFrame(rows).assign(model=model, kind="dl")
    return frame, folds


def _classification_row(record: dict, class_names: list[str]) -> dict[str, Any]:
    probs = np.asarray(record["probs"], float)
    row = {"case_id": record["case_id"], "patient_id": record["patient_id"], "fold": record["fold"]}
    if len(probs) == 2:
        # The positive class is the last class name (tumor "yes", "malignant"), as in training.
        return row | {"y_true": int(record["y_true"] == 1), "y_score": float(probs[1]),
                      "y_pred": int(probs[1] >= 0.5)}
    return row | {"y_true": int(record["y_true"]), "y_pred": int(probs.argmax())} | \
        {f"p_{k}": float(p) for k, p in enumerate(probs)}


def baseline_fold(name: str, task: str, train: pd.DataFrame, val: pd.DataFrame, fold: int,
                  class_names: list[str] | None, seed: int, params: dict[str, Any]) -> pd.DataFrame:
    """One baseline on one fold (runs as a Ray task): out-of-fold rows like the deep models'."""
    from tumorbench.baselines import fit_predict_fold, patient_metrics, segment_fold

    if task == "classification":
        frame = fit_predict_fold(name, train, val, classes=class_names, seed=seed, **params)
        frame = frame.drop(columns=[c for c in ("model",) if c in frame.columns])
        if "y_score" in frame.columns:
            frame["y_true"] = (frame["y_true"] == 1).astype(int)
    else:
        per_patient = patient_metrics(segment_fold(name, train, val, seed=seed, **params))
        frame = per_patient.assign(case_id=per_patient["patient_id"])
    return frame.assign(model=name, kind="baseline", fold=fold)


def run_baselines(study, frame: pd.DataFrame, split_doc: dict, class_names: list[str] | None) -> pd.DataFrame:
    """Every baseline on every fold, as Ray tasks on the cluster (1 CPU each)."""
    import ray

    task = ray.remote(num_cpus=1)(baseline_fold)
    pending = []
    for name in study.baselines:
        for fold in range(len(split_doc["folds"])):
            train, val = fold_frames(frame, split_doc, fold)
            if study.task == "classification":
                train, val = train[train["label"].notna()], val[val["label"].notna()]
            pending.append(task.remote(name, study.task, train, val, fold, class_names, study.seed,
                                       study.baseline_params.get(name, {})))
    return pd.concat(ray.get(pending), ignore_index=True) if pending else pd.DataFrame()


def write_predictions(parts: list[pd.DataFrame], out: Path) -> pd.DataFrame:
    """``predictions.csv`` with the contract's leading columns."""
    predictions = pd.concat(parts, ignore_index=True)
    lead = ["model", "kind", "fold", "case_id", "patient_id"]
    predictions = predictions[lead + [c for c in predictions.columns if c not in lead]]
    predictions.to_csv(out / "predictions.csv", index=False)
    return predictions
