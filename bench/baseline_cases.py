"""What a classifier baseline loses when a large set's plan fits it on fewer training cases.

For each classifier and cap, fits on about that many of a fold's training cases (``max_train_cases``:
whole patients, classes in proportion, as a capped study does) and scores every validation case:
ROC AUC (macro one-vs-rest for several classes) and fit seconds. Features are computed once, as a
study shares them. The planner's caps (``study.scaling.BASELINE_CASES``) rest on this curve::

    python bench/baseline_cases.py --data PATH/TO/CLASS_FOLDERS --caps 500,1000,2000 --classifiers svm,logreg
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sklearn.metrics import roc_auc_score

from tumorbench.baselines import CLASSIFIERS, FeatureCache, fit_predict_fold
from tumorbench.data.catalog import scan
from tumorbench.data.splits import SplitConfig, fold_frames, make_splits
from tumorbench.paths import shared_data


def auc(out) -> float:
    columns = sorted((c for c in out.columns if c.startswith("p_")), key=lambda c: int(c[2:]))
    if len(columns) == 2:
        return float(roc_auc_score(out["y_true"], out["y_score"]))
    return float(roc_auc_score(out["y_true"], out[columns].to_numpy(), multi_class="ovr", average="macro"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data() / "brain_mri_yes_no", help="a class-folder set")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--fold", type=int, default=0, help="the fold scored")
    parser.add_argument("--caps", default="500,1000,2000", help="training cases per fit; every case is fitted too")
    parser.add_argument("--classifiers", default=",".join(CLASSIFIERS))
    args = parser.parse_args()
    frame = scan(args.data)
    doc = make_splits(frame, SplitConfig(n_folds=args.folds, dedupe=True))
    train, val = fold_frames(frame, doc, args.fold)
    classes = sorted(frame["label"].unique())
    cache, started = FeatureCache(), time.perf_counter()
    cache.matrix(frame[~frame["case_id"].isin(doc["excluded"])])
    print(
        f"features of {len(cache)} cases: {time.perf_counter() - started:.1f} s; fold {args.fold + 1}/{args.folds}: "
        f"{len(train)} training, {len(val)} validation cases, classes {classes}"
    )
    print(f"{'model':<18}{'cap':>7}{'fitted':>8}{'ROC AUC':>9}{'fit s':>8}")
    caps = [int(c) for c in args.caps.split(",") if c] + [None]
    for name in args.classifiers.split(","):
        for cap in caps:
            started = time.perf_counter()
            out = fit_predict_fold(name, train, val, classes=classes, cache=cache, max_train_cases=cap)
            seconds, fitted = time.perf_counter() - started, out.attrs["train_cases"][0]
            print(f"{name:<18}{cap or 'all':>7}{fitted:>8}{auc(out):>9.4f}{seconds:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
