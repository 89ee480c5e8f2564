"""The optional sections of ``report.html``: overlays, explanations, the locked test set, configurations."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tumorbench.reporting.html import esc, html_table, img_tag, num


def overlays_section(folder: Path) -> str:
    pngs = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not pngs:
        return ""
    items = "".join(
        f"<figure>{img_tag(p.read_bytes(), p.stem)}</figure>"
        for p in pngs  # the title is in the image
    )
    return (
        "<h2>Prediction vs ground truth</h2><p class='note'>Ground-truth contour green, prediction red.</p>"
        f"<div class='grid'>{items}</div>"
    )


def explanations_section(root: Path) -> str:
    """Explanation scores per model (``explanations.csv``) and the best / worst case overlays."""
    from tumorbench.explain.study import explanation_summary

    path = root / "explanations.csv"
    if not path.is_file():
        return ""
    summary = explanation_summary(pd.read_csv(path).astype({"model": str}))
    header = [
        "model",
        "cases",
        "pointing game",
        "energy in tumor",
        "deletion AUC (lower better)",
        "insertion AUC (higher better)",
        "randomisation rank corr.",
        "randomisation SSIM",
        "flagged",
    ]
    rows = [
        [
            esc(r["model"]),
            esc(r["n_explained"]),
            num(r["pointing"], 2),
            num(r["energy_in_tumor"], 2),
            num(r["deletion_auc"]),
            num(r["insertion_auc"]),
            num(r["rand_rank_corr"]),
            num(r["rand_ssim"]),
            "<b>yes</b>" if bool(r["rand_flagged"]) else "no",
        ]
        for _, r in summary.iterrows()
    ]
    pngs = sorted((root / "explanations").glob("*.png")) if (root / "explanations").is_dir() else []
    items = "".join(
        f"<figure>{img_tag(p.read_bytes(), p.stem)}</figure>"
        for p in pngs  # the title is in the image
    )
    note = (
        "Grad-CAM of each deep model's fold checkpoint on a bounded number of out-of-fold cases per fold. "
        "Pointing game: share of cases whose heatmap peak lies inside the tumor mask; energy in tumor: share of "
        "heatmap mass inside it (n/a without masks). Deletion / insertion AUC: the explained probability as the "
        "most salient pixels are removed / revealed (faithful: low deletion, high insertion). Randomisation "
        "(Adebayo et al. 2018): heatmaps of re-initialised copies compared with the trained model's; "
        "<b>flagged</b> when rank correlation or SSIM exceeds 0.5, i.e. the explanation hardly depends on what "
        "the model learned. Overlays: heatmap (jet) over the image, truth contour green."
    )
    return (
        f"<h2>Explanations: does each model look at the tumor?</h2>{html_table(header, rows)}"
        f"<p class='note'>{note}</p><div class='grid'>{items}</div>"
    )


def locked_test_section(folder: Path, primary: str) -> str:
    """The ``--test`` scores beside the cross-validated ones: final models, each scored once on locked cases."""
    path = folder / "leaderboard.csv"
    if not path.is_file():
        return ""
    test = pd.read_csv(path)
    rows = [
        [
            f"<b>{esc(r['model'])}</b>",
            esc(r["kind"]),
            esc(r["n_patients"]),
            f"{num(r[f'{primary}_pooled'])} [{num(r[f'{primary}_ci_low'])}, {num(r[f'{primary}_ci_high'])}]",
        ]
        for _, r in test.iterrows()
    ]
    table = html_table(["model", "kind", "test patients", f"{esc(primary)} [95% CI, bootstrap]"], rows, text_cols=2)
    return (
        "<h2>Locked test set</h2><p class='note'>Each model's final version (its chosen configuration, retrained on "
        "every training patient) scored once on the test cases, which no choice above has seen. The "
        "cross-validated leaderboard chooses and estimates; this only confirms. Details: "
        f"<a href='{folder.name}/report.html'>{folder.name}/report.html</a>.</p>{table}"
    )


def configs_section(configs: dict) -> str:
    if not configs:
        return ""
    rows = [[esc(m), esc(json.dumps(c, sort_keys=True, default=str))] for m, c in configs.items()]
    return f"<h2>Best configuration per model</h2>{html_table(['model', 'configuration'], rows, text_cols=2)}"
