"""Explanation scores in a comparison study: a bounded number of out-of-fold cases per fold and model.

Each deep model's fold checkpoint explains up to ``per_fold`` of the cases it never trained on
(cost control: Grad-CAM, 2 x 17 forward passes for the deletion / insertion curves, and 3 randomised
copies per case). Cases: segmentation, the fold's patients in split order, each by its slice with
the most tumor (2D datasets) or its volume; classification, positive cases first, then the rest.

Writes ``explanations.csv`` (one row per explained case), ``explanations/<model>_<best|worst>.png``
(the best and worst case by energy in tumor: image, heatmap overlay, truth contour), and merges
per-model means into ``leaderboard.csv`` (:func:`merge_into_leaderboard`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tumorbench.data import io
from tumorbench.data.splits import fold_frames
from tumorbench.explain.cases import (
    display_slice,
    explain_prepared,
    explainer_for,
    overlay_png,
    picture_of,
    randomisation,
)
from tumorbench.tasks import get_task

PER_FOLD = 4  # explained cases per fold and model (the study's ``explain_cases``)
METHOD = "gradcam"
COLUMNS = (
    "pointing",
    "energy_in_tumor",
    "deletion_auc",
    "insertion_auc",
    "rand_rank_corr",
    "rand_ssim",
    "rand_flagged",
)


def pick_cases(val: pd.DataFrame, task: str, n: int, class_names: list[str] | None = None) -> list[dict]:
    """Up to ``n`` cases of a fold's validation rows, as described in the module docstring."""
    if n <= 0 or val.empty:
        return []
    if not get_task(task).with_mask:
        positive = class_names[-1] if class_names else None
        ordered = pd.concat([val[val["label"] == positive], val[val["label"] != positive]]) if positive else val
        return ordered.head(n).to_dict("records")
    picked = []
    for patient in list(dict.fromkeys(val["patient_id"]))[:n]:
        cases = val[val["patient_id"] == patient]
        masks = [m for m in cases["mask"] if isinstance(m, str)]
        if len(cases) > 1 and masks:
            areas = [float((io.read_image(m).array > 0).sum()) if isinstance(m, str) else -1.0 for m in cases["mask"]]
            picked.append(cases.iloc[int(np.argmax(areas))].to_dict())
        else:
            picked.append(cases.iloc[0].to_dict())
    return picked


def _truth(case: dict, image: io.ImageData, foreground: tuple[int, ...] | None) -> np.ndarray | None:
    """The case's target as the model was trained on it: any label, or the study's ``foreground_labels``."""
    if not isinstance(case.get("mask"), str):
        return None
    from tumorbench.data.masks import stored_labels, target

    data = io.read_image(case["mask"])
    truth = stored_labels(data.array, data.meta.get("format"))
    if image.meta.get("format") == "image2d":
        truth = truth[0]
    return target(truth, foreground)


def explain_fold(checkpoint: str, cases: list[dict], model: str, fold: int) -> tuple[list[dict], list[tuple]]:
    """Score ``cases`` with one fold checkpoint; returns CSV rows and ``(row, picture, heatmap, truth)``."""
    from tumorbench.inference import Predictor
    from tumorbench.study.overlays import _case_image

    predictor = Predictor.from_package(checkpoint)
    explainer = explainer_for(predictor, METHOD)
    rows, shown, inputs, heatmaps = [], [], [], []
    for case in cases:
        image = _case_image(case)
        prepared = predictor.preprocessor.prepare_image(image)
        truth = _truth(case, image, predictor.preprocessor.config.foreground_labels)
        result = explain_prepared(predictor, explainer, prepared, truth)
        inputs.append(prepared.image.as_tensor())
        heatmaps.append(result.model_heatmap)
        row = {
            "model": model,
            "fold": fold,
            "case_id": case["case_id"],
            "patient_id": case["patient_id"],
            "method": METHOD,
            "pointing": math.nan,
            "energy_in_tumor": math.nan,
            **result.scores,
        }
        rows.append(row)
        shown.append((row, picture_of(image), result.heatmap, truth))
    if inputs:
        check = randomisation(explainer, inputs, heatmaps=heatmaps)
        for row in rows:
            row.update(rand_rank_corr=check.rank_corr, rand_ssim=check.ssim, rand_flagged=check.flagged)
    return rows, shown


def write_explanations(
    out: Path,
    task: str,
    fold_records: dict[str, list],
    frame: pd.DataFrame,
    doc: dict,
    models: list[str],
    per_fold: int = PER_FOLD,
    class_names: list[str] | None = None,
    echo=print,
) -> pd.DataFrame:
    """``explanations.csv`` and the best / worst overlays of every deep model (see the module docstring).

    ``echo`` gets a progress line per model and fold (a 3D study's explanations take minutes).
    """
    from tumorbench.tuning.progress import format_duration, remaining_estimate

    out = Path(out)
    rows: list[dict] = []
    started, done, total = time.perf_counter(), 0, sum(len(fold_records[m]) for m in models)
    for model in models:
        shown: list[tuple] = []
        for record in fold_records[model]:
            _, val = fold_frames(frame, doc, int(record.fold))
            fold_rows, fold_shown = explain_fold(
                record.checkpoint, pick_cases(val, task, per_fold, class_names), model, int(record.fold)
            )
            rows += fold_rows
            shown += fold_shown
            done, elapsed = done + 1, time.perf_counter() - started
            left = remaining_estimate(elapsed, done, total)
            echo(
                f"[explain] {model} fold {int(record.fold) + 1}: {len(fold_rows)} cases ({done}/{total}); "
                f"elapsed {format_duration(elapsed)}" + (f", ~{format_duration(left)} left" if done < total else ""),
                flush=True,
            )
        _write_extremes(out / "explanations", model, shown)
    table = pd.DataFrame(rows, columns=["model", "fold", "case_id", "patient_id", "method", *COLUMNS])
    table.to_csv(out / "explanations.csv", index=False)
    return table


def _write_extremes(folder: Path, model: str, shown: list[tuple]) -> None:
    scored = [s for s in shown if np.isfinite(s[0]["energy_in_tumor"])]
    if not scored:
        scored = [s for s in shown if np.isfinite(s[0]["deletion_auc"])]
        key = lambda s: -s[0]["deletion_auc"]  # noqa: E731  (no masks: faithfulness, low deletion AUC best)
    else:
        key = lambda s: s[0]["energy_in_tumor"]  # noqa: E731
    if not scored:
        return
    folder.mkdir(parents=True, exist_ok=True)
    ranked = sorted(scored, key=key, reverse=True)
    for which, (row, picture, heat, truth) in (("best", ranked[0]), ("worst", ranked[-1])):
        view = display_slice(picture, heat, truth)
        scores = [
            f"{name} {row[key]:{fmt}}"
            for name, key, fmt in (("pointing", "pointing", ".0f"), ("energy in tumor", "energy_in_tumor", ".2f"))
            if np.isfinite(row[key])  # n/a without a mask: left out, not printed as nan
        ]
        scores.append(f"deletion AUC {row['deletion_auc']:.2f}")
        title = f"{model}, {which}: case {row['case_id']} (fold {row['fold']}); {', '.join(scores)}"
        (folder / f"{model}_{which}.png").write_bytes(overlay_png(*view, title=title))


def explanation_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean scores over explained cases, randomisation means over folds, any fold flagged."""
    if table.empty:
        return pd.DataFrame(columns=["model", "n_explained", *COLUMNS])
    folds = table.groupby(["model", "fold"], sort=False)[["rand_rank_corr", "rand_ssim", "rand_flagged"]].first()
    per_model = folds.groupby("model", sort=False).agg(
        rand_rank_corr=("rand_rank_corr", "mean"), rand_ssim=("rand_ssim", "mean"), rand_flagged=("rand_flagged", "any")
    )
    scores = table.groupby("model", sort=False).agg(
        n_explained=("case_id", "size"),
        pointing=("pointing", "mean"),
        energy_in_tumor=("energy_in_tumor", "mean"),
        deletion_auc=("deletion_auc", "mean"),
        insertion_auc=("insertion_auc", "mean"),
    )
    return scores.join(per_model).reset_index()


def merge_into_leaderboard(lb: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with ``expl_*`` columns (NaN for baselines, which are not explained)."""
    summary = explanation_summary(table).set_index("model").add_prefix("expl_")
    merged = lb.drop(columns=[c for c in lb.columns if c.startswith("expl_")]).join(summary, on="model")
    merged.attrs.update(lb.attrs)
    return merged
