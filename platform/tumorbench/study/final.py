"""A locked test set (``compare.py --test PATH``): final models retrained on every training patient, scored once.

The cross-validated leaderboard chooses and estimates; the test set only confirms. Each deep
model's winning configuration is retrained on all training patients (its inner split still picks
the epoch), each baseline is refitted on them, and the test cases are scored once, into their own
results folder ``<out>/test/`` (predictions, leaderboard, paired statistics, report).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from tumorbench.data.catalog import scan
from tumorbench.data.locked_test import check_locked_test
from tumorbench.errors import DataError
from tumorbench.tasks import get_task

TEST_TAG = "locked-test:"  # a test case's id while the baselines' feature cache holds it beside the training cases


def load_test_frame(study, frame: pd.DataFrame, out: Path | None = None) -> pd.DataFrame:
    """The test catalog, refused (before Ray starts) if it cannot score the study's models
    (:func:`check_test_targets`) or shares a patient or an image with the training data."""
    test = scan(study.test, study.layout)
    check_test_set(study, frame, test, out)
    return test


def check_test_set(study, frame: pd.DataFrame, test: pd.DataFrame, out: Path | None = None) -> None:
    """Refuse a test set that cannot score the models or overlaps the cases that train them (every overlap
    listed in ``<out>/test_overlaps.txt``). Unlabelled rows train nothing: an nnU-Net dataset's own
    ``imagesTs/`` is listed, unlabelled, in its training catalog."""
    check_test_targets(study.task, frame, test, study.test)
    listing = None if out is None else Path(out) / "test_overlaps.txt"
    check_locked_test(get_task(study.task).usable(frame), test, study.test, listing)


def check_test_targets(task: str, frame: pd.DataFrame, test: pd.DataFrame, source: str) -> None:
    """Refuse a test set that cannot score the final models: no truth (labels or masks) to score against,
    classes the training data never had, or a single class (AUC and balanced accuracy are undefined)."""
    spec = get_task(task)
    usable = spec.usable(test)
    if usable.empty:
        what = "class labels" if spec.target == "label" else "masks"
        raise DataError(
            source, f"the test set has no {what} (layout {test.attrs.get('layout')!r}): nothing to score against"
        )
    if spec.target != "label":
        return
    known = set(spec.usable(frame)["label"].astype(str))
    unknown = sorted(set(usable["label"].astype(str)) - known)
    if unknown:
        raise DataError(
            source,
            f"the test set has classes the training data does not: {', '.join(unknown)}{_renamed(unknown, known)}",
        )
    if usable["label"].nunique() < 2:
        raise DataError(source, f"the test set holds one class only ({usable['label'].iloc[0]}): AUC is undefined")


def _renamed(unknown: list[str], known: set[str]) -> str:
    """A hint when the two sets name one class differently: a test class that begins a training class's name
    (Kaggle's chest CT set: ``adenocarcinoma`` for ``adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib``)."""
    pairs = [(test, train) for test in unknown for train in sorted(known) if train.lower().startswith(test.lower())]
    if not pairs:
        return ""
    shown = "; ".join(f"{test!r} in the test set, {train!r} in training" for test, train in pairs[:3])
    return f" ({shown}: rename the folders so that both sets name each class alike)"


def final_config(base, candidate, best: dict[str, Any], test: str, out: Path):
    """The candidate's winning configuration, trained on every training case and scored on ``test``."""
    from tumorbench.study.results import trial_params
    from tumorbench.tuning.space import apply_params, decode_params, searcher_space

    _, choices = searcher_space(candidate.space, candidate.searcher)
    config = apply_params(base, decode_params(trial_params(best), choices))
    return config.replace(test_data=test, fold=0, out=str(out / "final" / candidate.name))


def final_dl_rows(config, model: str, task: str, class_names: list[str] | None) -> tuple[pd.DataFrame, str]:
    """Train the final model (Ray Train) and return its test rows and the chosen checkpoint's folder."""
    from tumorbench.training.trainer import fit, has_snapshot, run_storage
    from tumorbench.tuning.trial import best_checkpoint, fold_predictions

    result = fit(config, resume=has_snapshot(config), verbose=False)  # a resumed study continues its final model
    path, _ = best_checkpoint(result, config.selection_metric, config.selection_mode)
    _, records = fold_predictions(config, run_storage(config), path)
    rows = get_task(task).oof_rows([dict(r, fold=0) for r in records], class_names)
    return pd.DataFrame(rows).assign(model=model, kind="dl"), str(path)


def final_baseline_rows(
    study, frame: pd.DataFrame, split_doc: dict, test: pd.DataFrame, class_names: list[str] | None
) -> pd.DataFrame:
    """Every baseline refitted on all training cases and scored on the test cases (Ray tasks). The classifiers
    share one feature pass over both (:func:`~tumorbench.study.results.shared_features`), as in the folds; test
    case ids are tagged meanwhile, since a test folder may reuse the training folder's file names."""
    import ray

    from tumorbench.study.results import (
        baseline_fold,
        shared_features,
        shares_features,
        target_params,
        with_split_groups,
    )

    spec = get_task(study.task)
    train = with_split_groups(spec.usable(frame[~frame["case_id"].isin(split_doc["excluded"])]), split_doc)
    scored = spec.usable(test).assign(case_id=lambda f: TEST_TAG + f["case_id"].astype(str))
    features = shared_features(study, pd.concat([train, scored], ignore_index=True), {"excluded": []})
    remote = ray.remote(num_cpus=1)(baseline_fold)
    pending = [
        remote.remote(
            name,
            study.task,
            train,
            scored,
            0,
            class_names,
            study.seed,
            study.baseline_params.get(name, {}) | target_params(study),
            features if shares_features(study, name) else None,
        )
        for name in study.baselines
    ]
    if not pending:
        return pd.DataFrame()
    rows = pd.concat(ray.get(pending), ignore_index=True)
    return rows.assign(case_id=rows["case_id"].astype(str).str.removeprefix(TEST_TAG))


def run_locked_test(
    study,
    base_configs: dict,
    bests: dict,
    frame: pd.DataFrame,
    split_doc: dict,
    test: pd.DataFrame,
    class_names: list[str] | None,
    out: Path,
    metric: str,
    n_boot: int,
    alpha: float,
) -> dict[str, Any]:
    """Final models and baselines on the test set; ``<out>/test/`` results; what the package manifest needs."""
    from tumorbench.evaluation.leaderboard import format_leaderboard, summarize_results
    from tumorbench.reporting.report import write_report
    from tumorbench.study.results import write_predictions

    folder = out / "test"
    folder.mkdir(parents=True, exist_ok=True)
    parts, checkpoints = [], {}
    for candidate in (c for c in study.candidates if c.name in bests):  # a budget may have cut a search
        config = final_config(base_configs[candidate.name], candidate, bests[candidate.name], study.test, out)
        rows, checkpoints[candidate.name] = final_dl_rows(config, candidate.name, study.task, class_names)
        parts.append(rows)
    parts.append(final_baseline_rows(study, frame, split_doc, test, class_names))
    write_predictions(parts, folder)
    lb, stats = summarize_results(folder, task=study.task, primary=metric, seed=study.seed, n_boot=n_boot, alpha=alpha)
    write_report(
        folder,
        title=f"tumorbench: {study.name}, locked test set (final models, scored once)",
        task=study.task,
        primary=metric,
        seed=study.seed,
    )
    print("[tumorbench] locked test set (final models retrained on every training patient, scored once):", flush=True)
    print(format_leaderboard(lb, study.task, stats=stats), flush=True)
    return {"leaderboard": lb, "checkpoints": checkpoints}
