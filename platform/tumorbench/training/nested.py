"""Nested selection: an inner, patient-level validation split inside each outer training fold.

The outer fold's cases are the reporting set; choosing the epoch, stopping early, pruning with
ASHA or ranking configurations on them would bias the reported score upward. So the outer
training patients are split once more: the inner validation patients choose, the outer fold is
scored once, by the model the inner data chose.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

OUTER_DIR = "outer"  # <fold out>/outer/: the outer fold's metrics and predictions, and the chosen weights


def inner_split(train: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(inner_train, inner_val)``: about ``fraction`` of the outer training patients validate.

    Stratified by ``label`` when every class has enough patients; whole patients only; at least one
    patient on each side. The same rows and seed give the same split. With a single training patient the
    inner set is empty: nothing is chosen, the last epoch's model is scored (still never the outer fold).
    """
    groups = train["patient_id"].astype(str).to_numpy()
    n_patients = len(np.unique(groups))
    if n_patients < 2 or fraction <= 0:
        return train.reset_index(drop=True), train.iloc[:0].reset_index(drop=True)
    n_splits = int(min(n_patients, max(2, round(1 / fraction))))
    labels = train["label"] if "label" in train.columns else pd.Series([None] * len(train))
    y = labels.astype(str).to_numpy()
    per_class = [len(np.unique(groups[y == k])) for k in np.unique(y)] if labels.notna().all() else [0]
    if min(per_class) >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        _, val = next(splitter.split(np.zeros(len(train)), y, groups))
    else:
        _, val = next(GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(train, groups=groups))
    is_val = np.zeros(len(train), bool)
    is_val[val] = True
    return train[~is_val].reset_index(drop=True), train[is_val].reset_index(drop=True)
