"""Nested selection: an inner, patient-level validation split inside each outer training fold.

The outer fold's cases are the reporting set; choosing the epoch, stopping early, pruning with
ASHA or ranking configurations on them would bias the reported score upward. So the outer
training patients are split once more: the inner validation patients choose, the outer fold is
scored once, by the model the inner data chose.
"""

from __future__ import annotations

import json
from io import BytesIO

import numpy as np
import pandas as pd

from tumorbench import storage

# <fold storage>/outer/: the outer fold's metrics and predictions, and the chosen weights. On the fold's storage
# (its checkpoints' location), not its local folder: rank 0 may run on another node than the trial reading them.
OUTER_DIR = "outer"
CHOSEN_WEIGHTS = "chosen_weights.pt"


def uses_nested(config) -> bool:
    """Whether a ``TrainConfig`` trains under nested selection (its outer fold scored once, into ``outer/``)."""
    from tumorbench.tasks import get_task

    return bool(config.inner_val_fraction > 0 or config.test_data) and get_task(config.task).worker_loop() is None


def outer_location(run_storage: str) -> str:
    """Where a fold's outer results live, given its run storage (``config.storage or config.out``)."""
    return storage.join(run_storage, OUTER_DIR)


def write_outer(run_storage: str, metrics: dict, records: list[dict]) -> None:
    """``<storage>/outer/metrics.json`` and ``predictions.json``: what the study reports for this fold.

    Predictions first, metrics last: :func:`read_outer` takes the metrics file as the sign that both are there.
    """
    where = outer_location(run_storage)
    storage.write_text(storage.join(where, "predictions.json"), json.dumps(records, default=float))
    storage.write_text(storage.join(where, "metrics.json"), json.dumps(metrics, default=float))


def read_outer(run_storage: str) -> tuple[dict | None, list[dict] | None]:
    """A fold's outer metrics and predictions (:func:`write_outer`), or ``(None, None)`` when not written."""
    where = outer_location(run_storage)
    if not storage.exists(storage.join(where, "metrics.json")):
        return None, None
    metrics = json.loads(storage.read_text(storage.join(where, "metrics.json")))
    return metrics, json.loads(storage.read_text(storage.join(where, "predictions.json")))


def save_chosen(run_storage: str, weights: dict) -> None:
    """The inner-chosen weights on storage, so a run resumed on another node still scores with them."""
    import torch

    buffer = BytesIO()
    torch.save(weights, buffer)
    storage.write_bytes(storage.join(outer_location(run_storage), CHOSEN_WEIGHTS), buffer.getvalue())


def load_chosen(run_storage: str) -> dict | None:
    import torch

    location = storage.join(outer_location(run_storage), CHOSEN_WEIGHTS)
    if not storage.exists(location):
        return None
    return torch.load(BytesIO(storage.read_bytes(location)), map_location="cpu", weights_only=True)


def inner_groups(train: pd.DataFrame, near_duplicates: list[list[str]]) -> np.ndarray:
    """The unit the inner split keeps whole: the patient, merged with every patient holding a near-duplicate
    of it (the split file's ``near_duplicates``, the groups the outer folds keep together too)."""
    if not near_duplicates:
        return train["patient_id"].astype(str).to_numpy()
    from tumorbench.data.near_duplicates import split_groups

    return split_groups(train, near_duplicates)


def inner_split(
    train: pd.DataFrame, fraction: float, seed: int, groups: np.ndarray | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(inner_train, inner_val)``: about ``fraction`` of the outer training patients validate.

    Stratified by ``label`` when every class has two groups or more (the inner share grows when a class has
    fewer than ``1 / fraction`` groups, so each class is on both sides); whole groups only (``groups``, one per row:
    default the patients, see :func:`inner_groups`); at least one group on each side. The same rows and seed
    give the same split. With a single training group the inner set is empty (studies refuse that before Ray
    starts, ``training.data.check_inner_sets``; a final model with ``fraction`` 0 scores its last epoch).
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold  # as data.splits: trials only read splits

    groups = train["patient_id"].astype(str).to_numpy() if groups is None else np.asarray(groups)
    n_patients = len(np.unique(groups))
    if n_patients < 2 or fraction <= 0:
        return train.reset_index(drop=True), train.iloc[:0].reset_index(drop=True)
    n_splits = int(min(n_patients, max(2, round(1 / fraction))))
    labels = train["label"] if "label" in train.columns else pd.Series([None] * len(train))
    y = labels.astype(str).to_numpy()
    per_class = [len(np.unique(groups[y == k])) for k in np.unique(y)] if labels.notna().all() else [0]
    if min(per_class) >= 2:
        # Every class on both sides, or the inner AUC is undefined and no epoch can be chosen: with few
        # groups per class that takes a larger inner share (one fold of min(per_class)) than ``fraction``.
        n_splits = min(n_splits, min(per_class))
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        _, val = next(splitter.split(np.zeros(len(train)), y, groups))
    else:
        _, val = next(GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(train, groups=groups))
    is_val = np.zeros(len(train), bool)
    is_val[val] = True
    return train[~is_val].reset_index(drop=True), train[is_val].reset_index(drop=True)
