"""Cross-validated scores of the classical baselines on the shared real data.

Segmentation (LGG slices): per-patient pooled Dice of ``otsu`` and ``kmeans`` over
patient-level folds stratified by tumour presence. Classification (brain MRI yes/no):
ROC AUC and accuracy of every classifier over de-duplicated patient-level folds, with
the inner parameter search on. Usage::

    python bench/baselines_cv.py --folds 5 --max-train-cases 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, roc_auc_score

from tumorbench.baselines import CLASSIFIERS, SEGMENTERS, FeatureCache, fit_predict_fold, patient_metrics, segment_fold
from tumorbench.data.catalog import scan
from tumorbench.data.check import add_tumor_presence
from tumorbench.data.splits import SplitConfig, fold_frames, make_splits
from tumorbench.paths import shared_data


def segmentation(root: Path, folds: int, max_train_cases: int | None, methods: list[str]) -> dict:
    frame = add_tumor_presence(scan(root))
    doc = make_splits(frame, SplitConfig(n_folds=folds, stratify="has_tumor"))
    out = {}
    for method in methods:
        started, patients, fitted = time.time(), [], []
        for fold in range(folds):
            train, val = fold_frames(frame, doc, fold)
            cases = segment_fold(method, train, val, max_train_cases=max_train_cases, seed=fold, hd95=False)
            patients.append(patient_metrics(cases))
            fitted.append(cases.attrs["fitted"])
        dice = pd.concat(patients)["dice"]
        out[method] = {
            "patient_dice_mean": float(dice.mean()),
            "patient_dice_median": float(dice.median()),
            "patients": int(len(dice)),
            "seconds": round(time.time() - started, 1),
            "fitted": fitted,
        }
        print(method, json.dumps(out[method], default=str), flush=True)
    return out


def classification(root: Path, folds: int, classifiers: list[str], n_jobs: int | None) -> dict:
    frame = scan(root)
    doc = make_splits(frame, SplitConfig(n_folds=folds, dedupe=True))
    classes = sorted(frame["label"].unique())  # ["no", "yes"]: "yes" (tumour) is the positive class
    cache = FeatureCache(n_jobs=n_jobs)
    out = {}
    for name in classifiers:
        started, aucs, accs, best = time.time(), [], [], []
        for fold in range(folds):
            train, val = fold_frames(frame, doc, fold)
            pred = fit_predict_fold(name, train, val, classes=classes, cache=cache, seed=fold, n_jobs=n_jobs)
            aucs.append(roc_auc_score(pred["y_true"], pred["y_score"]))
            accs.append(accuracy_score(pred["y_true"], pred["y_pred"]))
            best.append(pred.attrs["best_params"])
        out[name] = {
            "auc_mean": float(np.mean(aucs)),
            "auc_sd": float(np.std(aucs, ddof=1)),
            "accuracy_mean": float(np.mean(accs)),
            "aucs": [round(a, 3) for a in aucs],
            "cases": int(len(frame) - len(doc["excluded"])),
            "seconds": round(time.time() - started, 1),
            "best_params": best,
        }
        print(name, json.dumps(out[name], default=str), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=shared_data(), help="shared data folder (default: $TUMORBENCH_SHARED_DATA)"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-train-cases", type=int, default=None, help="segmenter training sample per fold")
    parser.add_argument("--segmenters", nargs="*", default=list(SEGMENTERS))
    parser.add_argument("--classifiers", nargs="*", default=list(CLASSIFIERS))
    parser.add_argument("--n-jobs", type=int, default=None)
    args = parser.parse_args()
    results = {}
    if args.segmenters:
        results["lgg_segmentation"] = segmentation(args.data / "lgg", args.folds, args.max_train_cases, args.segmenters)
    if args.classifiers:
        results["yes_no_classification"] = classification(
            args.data / "brain_mri_yes_no", args.folds, args.classifiers, args.n_jobs
        )
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
