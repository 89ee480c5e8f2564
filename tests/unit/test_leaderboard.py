"""Leaderboard and paired statistics against scikit-learn, scipy, numpy and direct stats calls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from tumorbench.errors import DataError
from tumorbench.evaluation.leaderboard import (
    fold_metrics,
    format_leaderboard,
    infinite_note,
    leaderboard,
    paired_statistics,
    summarize_results,
)
from tumorbench.evaluation.metrics import classification_metrics
from tumorbench.evaluation.oof import BINARY_METRIC_FNS, MULTICLASS_METRIC_FNS
from tumorbench.evaluation.stats import (
    bootstrap_ci,
    bootstrap_metric_ci,
    corrected_resampled_ttest,
    delong_ci,
    delong_test,
    holm_correction,
    mcnemar_test,
)

N_FOLDS, PER_FOLD, N_BOOT = 5, 40, 100


def classification_predictions(seed: int = 0) -> pd.DataFrame:
    """3 models x 5 folds x 40 cases: ``good`` separates the classes, ``random`` does not."""
    rng = np.random.default_rng(seed)
    n = N_FOLDS * PER_FOLD
    y = rng.integers(0, 2, n)
    frames = []
    for model, kind, separation in [("good", "dl", 2.5), ("fair", "dl", 0.8), ("random", "baseline", 0.0)]:
        score = 1 / (1 + np.exp(-(separation * (2 * y - 1) + rng.normal(size=n))))
        frames.append(
            pd.DataFrame(
                {
                    "model": model,
                    "kind": kind,
                    "fold": np.repeat(np.arange(N_FOLDS), PER_FOLD),
                    "case_id": [f"c{i:03d}" for i in range(n)],
                    "patient_id": [f"p{i:03d}" for i in range(n)],
                    "y_true": y,
                    "y_score": score,
                    "y_pred": (score >= 0.5).astype(int),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def segmentation_predictions(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = N_FOLDS * PER_FOLD
    frames = []
    for model, kind, mu in [("unet", "dl", 0.85), ("segresnet", "dl", 0.82), ("otsu", "baseline", 0.5)]:
        dice = np.clip(rng.normal(mu, 0.08, n), 0, 1)
        frames.append(
            pd.DataFrame(
                {
                    "model": model,
                    "kind": kind,
                    "fold": np.repeat(np.arange(N_FOLDS), PER_FOLD),
                    "case_id": [f"p{i:03d}" for i in range(n)],
                    "patient_id": [f"p{i:03d}" for i in range(n)],
                    "dice": dice,
                    "iou": dice / (2 - dice),
                    "hd95": rng.gamma(2.0, 10 * (1 - dice) + 0.5),
                    "sensitivity": np.clip(dice + rng.normal(0, 0.03, n), 0, 1),
                    "precision": dice,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def cls():
    pred = classification_predictions()
    lb = leaderboard(pred, None, "classification", n_boot=N_BOOT, seed=3)
    return pred, lb, paired_statistics(pred, None, "classification")


@pytest.fixture(scope="module")
def seg():
    pred = segmentation_predictions()
    lb = leaderboard(pred, None, "segmentation", n_boot=N_BOOT, seed=3)
    return pred, lb, paired_statistics(pred, None, "segmentation")


def _sklearn_fold(g: pd.DataFrame) -> dict[str, float]:
    y, p = g["y_true"], g["y_pred"]
    return {
        "accuracy": accuracy_score(y, p),
        "precision": precision_score(y, p, zero_division=0),
        "recall": recall_score(y, p),
        "specificity": recall_score(y, p, pos_label=0),
        "f1": f1_score(y, p),
        "auc": roc_auc_score(y, g["y_score"]),
    }


@pytest.fixture(scope="module")
def sklearn_folds(cls):
    pred = cls[0]
    return pd.DataFrame([{"model": m, "fold": f, **_sklearn_fold(g)} for (m, f), g in pred.groupby(["model", "fold"])])


def mw_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U of positives over negatives, by scipy."""
    y = np.asarray(y)
    return sps.mannwhitneyu(score[y == 1], score[y == 0]).statistic / (np.sum(y == 1) * np.sum(y == 0))


def test_fold_metrics_equal_sklearn_per_fold(cls, sklearn_folds):
    pred, _, _ = cls
    folds = fold_metrics(pred, "classification").merge(sklearn_folds, on=["model", "fold"], suffixes=("", "_ref"))
    assert len(folds) == 3 * N_FOLDS
    for metric in ("accuracy", "precision", "recall", "specificity", "f1", "auc"):
        np.testing.assert_allclose(folds[metric], folds[f"{metric}_ref"], err_msg=metric)
    assert (folds["n_test"] == PER_FOLD).all() and (folds["n_train"] == PER_FOLD * (N_FOLDS - 1)).all()


def test_leaderboard_means_and_sd_are_over_folds(cls, sklearn_folds):
    _, lb, _ = cls
    for _, row in lb.iterrows():
        per_fold = sklearn_folds[sklearn_folds["model"] == row["model"]]
        for metric in ("accuracy", "precision", "recall", "specificity", "f1", "auc"):
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(per_fold[metric]))
            assert row[f"{metric}_sd"] == pytest.approx(np.std(per_fold[metric], ddof=1))


def test_pooled_auc_and_cis_equal_direct_computations(cls):
    pred, lb, _ = cls
    for _, row in lb.iterrows():
        g = pred[pred["model"] == row["model"]]
        y, score = g["y_true"].to_numpy(), g["y_score"].to_numpy()
        assert row["auc_pooled"] == pytest.approx(roc_auc_score(y, score))
        assert row["accuracy_pooled"] == pytest.approx(accuracy_score(y, g["y_pred"]))
        _, lo, hi = bootstrap_metric_ci(y, score, mw_auc, n_boot=N_BOOT, seed=3)
        assert (row["auc_ci_low"], row["auc_ci_high"]) == pytest.approx((lo, hi))
        _, lo, hi = delong_ci(y, score)
        assert (row["auc_delong_low"], row["auc_delong_high"]) == pytest.approx((lo, hi))
        assert row["auc_ci_low"] <= row["auc_pooled"] <= row["auc_ci_high"]
    fair, g = lb.set_index("model").loc["fair"], pred[pred["model"] == "fair"]
    _, lo, hi = bootstrap_metric_ci(g["y_true"], g["y_pred"], f1_score, n_boot=N_BOOT, seed=3)
    assert (fair["f1_ci_low"], fair["f1_ci_high"]) == pytest.approx((lo, hi))


def test_fast_bootstrap_metrics_equal_classification_metrics():
    rng = np.random.default_rng(5)
    for _ in range(5):
        y = rng.integers(0, 2, 30)
        score = np.round(rng.uniform(size=30), 1)  # ties on purpose
        pred = (score >= 0.5).astype(float)
        ref = classification_metrics(y, score)
        for metric, fn in BINARY_METRIC_FNS.items():
            assert fn(y, score if metric == "auc" else pred) == pytest.approx(ref[metric]), metric
        y3 = rng.integers(0, 3, 40)
        scores = rng.dirichlet(np.ones(3), 40)
        ref = classification_metrics(y3, scores)
        for metric, fn in MULTICLASS_METRIC_FNS.items():
            assert fn(y3, scores) == pytest.approx(ref[metric]), metric


def test_bootstrap_resamples_whole_patients_when_they_have_several_cases():
    pred = classification_predictions()
    pred["patient_id"] = pred["case_id"].str[1:].astype(int).floordiv(2).astype(str)  # two cases per patient
    lb = leaderboard(pred, task="classification", n_boot=N_BOOT, seed=1).set_index("model")
    g = pred[pred["model"] == "fair"]
    _, lo, hi = bootstrap_metric_ci(
        g["y_true"].to_numpy(), g["y_score"].to_numpy(), mw_auc, g["patient_id"], n_boot=N_BOOT, seed=1
    )
    assert (lb.at["fair", "auc_ci_low"], lb.at["fair", "auc_ci_high"]) == pytest.approx((lo, hi))
    assert lb.at["fair", "n_patients"] == N_FOLDS * PER_FOLD // 2


def test_better_model_ranks_first_and_leaderboard_is_reproducible(cls):
    pred, lb, _ = cls
    assert lb["model"].tolist() == ["good", "fair", "random"]
    assert lb["rank"].tolist() == [1, 2, 3]
    assert lb.attrs == {"task": "classification", "primary": "auc"}
    again = leaderboard(pred, None, "classification", n_boot=N_BOOT, seed=3)
    pd.testing.assert_frame_equal(lb, again)


def test_classification_stats_equal_direct_tests_and_holm(cls):
    pred, lb, stats = cls
    ref = pred[pred["model"] == "good"].set_index("case_id")
    folds = fold_metrics(pred, "classification")
    assert set(stats["reference"]) == {"good"} and set(stats["test"]) == {"delong", "mcnemar", "corrected_t"}
    for _, row in stats.iterrows():
        other = pred[pred["model"] == row["model"]].set_index("case_id").loc[ref.index]
        if row["test"] == "delong":
            auc_a, auc_b, z, p = delong_test(ref["y_true"], ref["y_score"], other["y_score"])
            assert (row["statistic"], row["p"], row["difference"]) == pytest.approx((z, p, auc_a - auc_b))
        elif row["test"] == "mcnemar":
            stat, p = mcnemar_test(ref["y_true"], ref["y_pred"], other["y_pred"])
            acc = accuracy_score(ref["y_true"], ref["y_pred"]) - accuracy_score(ref["y_true"], other["y_pred"])
            assert (row["statistic"], row["p"], row["difference"]) == pytest.approx((stat, p, acc))
        else:
            a = folds[folds["model"] == "good"].sort_values("fold")["auc"].to_numpy()
            b = folds[folds["model"] == row["model"]].sort_values("fold")["auc"].to_numpy()
            t, p = corrected_resampled_ttest(a, b, PER_FOLD * (N_FOLDS - 1), PER_FOLD)
            assert (row["statistic"], row["p"], row["difference"]) == pytest.approx((t, p, np.mean(a - b)))
        assert row["n"] == (N_FOLDS if row["test"] == "corrected_t" else N_FOLDS * PER_FOLD)
    for _, family in stats.groupby("test"):
        np.testing.assert_allclose(family["p_holm"], holm_correction(family["p"].to_numpy()))
    vs_random = stats[stats["model"] == "random"].set_index("test")
    assert vs_random.loc[["delong", "mcnemar"], "significant"].all()
    assert (vs_random["difference"] > 0).all()  # reference minus model: the reference is better


def test_segmentation_leaderboard_and_wilcoxon_equal_numpy_and_scipy(seg):
    pred, lb, stats = seg
    assert lb["model"].tolist() == ["unet", "segresnet", "otsu"]
    for _, row in lb.iterrows():
        g = pred[pred["model"] == row["model"]]
        fold_means = g.groupby("fold")["dice"].mean()
        assert row["dice_mean"] == pytest.approx(fold_means.mean())
        assert row["dice_sd"] == pytest.approx(np.std(fold_means, ddof=1))
        assert row["dice_pooled"] == pytest.approx(g["dice"].mean())
        _, lo, hi = bootstrap_ci(g["hd95"].to_numpy(), np.mean, n_boot=N_BOOT, seed=3)
        assert (row["hd95_ci_low"], row["hd95_ci_high"]) == pytest.approx((lo, hi))
    ref = pred[pred["model"] == "unet"].set_index("patient_id")
    wil = stats[stats["test"] == "wilcoxon"]
    for _, row in wil.iterrows():
        other = pred[pred["model"] == row["model"]].set_index("patient_id").loc[ref.index]
        expected = sps.wilcoxon(ref["dice"], other["dice"])
        assert (row["statistic"], row["p"]) == pytest.approx((expected.statistic, expected.pvalue))
        assert row["difference"] == pytest.approx(np.mean(ref["dice"] - other["dice"]))
    np.testing.assert_allclose(wil["p_holm"], holm_correction(wil["p"].to_numpy()))
    assert wil.set_index("model").at["otsu", "significant"]


def test_pairs_only_cases_both_models_scored():
    pred = segmentation_predictions()
    dropped = pred[~((pred["model"] == "otsu") & pred["patient_id"].isin([f"p{i:03d}" for i in range(30)]))]
    stats = paired_statistics(dropped, task="segmentation")
    row = stats[(stats["model"] == "otsu") & (stats["test"] == "wilcoxon")].iloc[0]
    ref = dropped[dropped["model"] == "unet"].set_index("patient_id")
    other = dropped[dropped["model"] == "otsu"].set_index("patient_id")
    both = other.index
    assert row["n"] == len(both) == N_FOLDS * PER_FOLD - 30
    assert row["p"] == pytest.approx(sps.wilcoxon(ref.loc[both, "dice"], other["dice"]).pvalue)


def test_hd95_primary_ranks_lowest_first_and_inf_has_no_ci():
    pred = segmentation_predictions()
    lb = leaderboard(pred, task="segmentation", primary="hd95", n_boot=50)
    means = pred.groupby(["model", "fold"])["hd95"].mean().groupby("model").mean()
    assert lb["model"].tolist() == means.sort_values().index.tolist()
    pred.loc[(pred["model"] == "otsu") & (pred["patient_id"] == "p007"), "hd95"] = np.inf
    pred.loc[(pred["model"] == "otsu") & (pred["patient_id"] == "p008"), "dice"] = np.nan
    board = leaderboard(pred, task="segmentation", n_boot=50).set_index("model")
    row = board.loc["otsu"]
    assert np.isinf(row["hd95_pooled"]) and np.isnan(row["hd95_ci_low"])
    otsu = pred[pred["model"] == "otsu"]
    # what a reader can still compare: the median over patients (the inf one included) and the count
    assert row["hd95_n_inf"] == 1 and row["hd95_median"] == pytest.approx(np.median(otsu["hd95"]))
    assert np.isfinite(row["hd95_median"])
    n = otsu["patient_id"].nunique()
    assert infinite_note(row, "hd95") == f" (median {row['hd95_median']:.1f}; 1 of {n} cases inf)"
    assert infinite_note(row, "dice") == ""
    unet = board.loc["unet"]
    assert infinite_note(unet, "hd95") == ""  # none of its cases is inf, but beside otsu its median is shown
    median = np.median(pred.loc[pred["model"] == "unet", "hd95"])
    assert infinite_note(unet, "hd95", always=True) == f" (median {median:.1f}; 0 of {n} cases inf)"
    assert row["dice_pooled"] == pytest.approx(np.nanmean(otsu["dice"]))
    stats = paired_statistics(pred, task="segmentation")
    assert stats.set_index(["model", "test"]).at[("otsu", "wilcoxon"), "n"] == N_FOLDS * PER_FOLD - 1


def test_multiclass_is_supported_best_effort():
    rng = np.random.default_rng(2)
    n, frames = 120, []
    y = rng.integers(0, 3, n)
    for model, kind, gain in [("cnn", "dl", 3.0), ("svm", "baseline", 0.3)]:
        logits = rng.normal(size=(n, 3)) + gain * np.eye(3)[y]
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        frames.append(
            pd.DataFrame(
                {
                    "model": model,
                    "kind": kind,
                    "fold": np.arange(n) % 3,
                    "case_id": np.arange(n),
                    "patient_id": np.arange(n),
                    "y_true": y,
                    "p_0": p[:, 0],
                    "p_1": p[:, 1],
                    "p_2": p[:, 2],
                }
            )
        )
    pred = pd.concat(frames, ignore_index=True)
    lb = leaderboard(pred, task="classification", primary="accuracy", n_boot=50).set_index("model")
    g = pred[pred["model"] == "svm"]
    argmax = g[["p_0", "p_1", "p_2"]].to_numpy().argmax(1)
    assert lb.at["svm", "accuracy_pooled"] == pytest.approx(accuracy_score(y, argmax))
    assert lb.index[0] == "cnn"
    stats = paired_statistics(pred, task="classification", primary="accuracy")
    assert set(stats["test"]) == {"mcnemar", "corrected_t"}


def test_format_leaderboard_shows_rank_ci_and_adjusted_p(cls):
    _, lb, stats = cls
    text = format_leaderboard(lb, "classification", stats=stats)
    lines = text.splitlines()
    assert "p_holm vs good (delong)" in lines[1] and "auc pooled [95% CI]" in lines[1]
    assert "auc fold mean ± SD" in lines[1] and "Δauc (ref − model) [95% CI]" in lines[1]
    body = lines[3:]
    assert [line.split()[1] for line in body] == ["good", "fair", "random"]
    good = lb.iloc[0]
    assert f"{good['auc_mean']:.3f} ± {good['auc_sd']:.3f}" in body[0]
    assert f"{good['auc_pooled']:.3f} [{good['auc_ci_low']:.3f}, {good['auc_ci_high']:.3f}]" in body[0]
    worst = stats[(stats["test"] == "delong") & (stats["model"] == "random")].iloc[0]
    assert f"{worst['difference']:.3f} [{worst['diff_ci_low']:.3f}, {worst['diff_ci_high']:.3f}]" in body[2]
    assert body[0].endswith("ref") and body[2].endswith("<0.001*")
    assert "fold mean ± SD over 5 folds" in lines[0]
    once = format_leaderboard(lb.assign(n_folds=1), "classification", stats=stats).splitlines()[0]
    assert "on the test cases, scored once" in once and "out-of-fold" not in once  # a locked test set's table


def test_summarize_results_writes_tables(tmp_path, cls):
    pred, lb, stats = cls
    pred.to_csv(tmp_path / "predictions.csv", index=False)
    lb2, stats2 = summarize_results(tmp_path, n_boot=N_BOOT, seed=3)
    assert {"folds.csv", "leaderboard.csv", "stats.csv"} <= {p.name for p in tmp_path.iterdir()}
    np.testing.assert_allclose(pd.read_csv(tmp_path / "leaderboard.csv")["auc_ci_low"], lb["auc_ci_low"])
    np.testing.assert_allclose(stats2["p_holm"], stats["p_holm"])


def test_bad_inputs_name_the_file_and_the_problem(cls):
    pred, _, _ = cls
    with pytest.raises(DataError, match=r"predictions.csv: missing column\(s\) \['y_score'\]|y_score"):
        leaderboard(pred.drop(columns=["y_score", "y_pred"]), task="classification")
    with pytest.raises(DataError, match="predictions.csv: .*more than once"):
        leaderboard(pd.concat([pred, pred.head(1)]), task="classification")
    with pytest.raises(DataError, match="predictions.csv: kind"):
        leaderboard(pred.assign(kind="cnn"), task="classification")
    with pytest.raises(DataError, match=r"folds.csv: no folds for model\(s\) \['random'\]"):
        leaderboard(pred, fold_metrics(pred[pred["model"] != "random"]), task="classification")
    with pytest.raises(DataError, match="cannot tell the task"):
        leaderboard(pred.drop(columns=["y_true"]))
    with pytest.raises(ValueError, match="reference: 'nope'"):
        paired_statistics(pred, reference="nope")
    clash = pred.copy()
    clash.loc[clash.index[-1], "y_true"] = 1 - clash.loc[clash.index[-1], "y_true"]
    with pytest.raises(DataError, match="disagree on y_true"):
        paired_statistics(clash)


def _seg_rows(model: str, values: list[float], folds: list[int]) -> list[dict]:
    return [
        {
            "model": model,
            "kind": "dl" if model == "a" else "baseline",
            "fold": f,
            "case_id": f"c{i}",
            "patient_id": f"p{i}",
            "dice": v,
        }
        for i, (v, f) in enumerate(zip(values, folds))
    ]


def test_rows_ranked_by_the_pooled_estimate_not_the_fold_mean():
    folds = [0, 1, 1, 1]  # unequal folds: fold mean and pooled mean disagree
    pred = pd.DataFrame(_seg_rows("a", [1.0, 0.4, 0.4, 0.4], folds) + _seg_rows("b", [0.2, 0.7, 0.7, 0.7], folds))
    lb = leaderboard(pred, task="segmentation", n_boot=200).set_index("model")
    assert lb.loc["a", "dice_mean"] == pytest.approx(0.7) and lb.loc["b", "dice_mean"] == pytest.approx(0.45)
    assert lb.loc["a", "dice_pooled"] == pytest.approx(0.55) and lb.loc["b", "dice_pooled"] == pytest.approx(0.575)
    assert lb.index.tolist() == ["b", "a"]
    assert paired_statistics(pred, task="segmentation")["reference"].iloc[0] == "a"  # the only DL model


def test_paired_difference_ci_matches_the_normal_approximation():
    rng = np.random.default_rng(0)
    n = 60
    a, b = rng.uniform(0.6, 0.9, n), rng.uniform(0.5, 0.8, n)
    folds = [i % 3 for i in range(n)]
    pred = pd.DataFrame(_seg_rows("a", a.tolist(), folds) + _seg_rows("b", b.tolist(), folds))
    row = paired_statistics(pred, task="segmentation").set_index("test").loc["wilcoxon"]
    diff = a - b
    se = diff.std(ddof=1) / np.sqrt(n)
    assert row["difference"] == pytest.approx(diff.mean())
    assert row["diff_ci_low"] == pytest.approx(diff.mean() - 1.96 * se, abs=0.25 * se)
    assert row["diff_ci_high"] == pytest.approx(diff.mean() + 1.96 * se, abs=0.25 * se)


def test_brats_leaderboard_shows_the_region_columns_for_every_row(tmp_path):
    """A BraTS-layout study's console and HTML leaderboards show WT/TC/ET beside the mean Dice, for DL and baselines."""
    from tumorbench.reporting.report import _leaderboard_section

    pred = segmentation_predictions(seed=5)
    rng = np.random.default_rng(7)
    regions = {r: np.clip(pred["dice"] + rng.normal(0, 0.05, len(pred)), 0, 1) for r in ("WT", "TC", "ET")}
    pred = pred.assign(**{f"dice_{r}": v for r, v in regions.items()})
    pred["dice"] = pred[["dice_WT", "dice_TC", "dice_ET"]].mean(axis=1)
    lb = leaderboard(pred, None, "segmentation", n_boot=N_BOOT, seed=3)
    lines = format_leaderboard(lb, "segmentation").splitlines()
    header = lines[1].split("  ")
    assert "dice (WT/TC/ET mean) pooled [95% CI]" in lines[1]
    columns = [c.strip() for c in header if c.strip()]
    assert columns[5:8] == ["dice_WT", "dice_TC", "dice_ET"], columns
    for line in lines[3:]:  # every row, the baseline included, carries its own region fold means
        model = line.split()[1]
        cells = line.split()
        expected = [f"{pred[pred['model'] == model].groupby('fold')[f'dice_{r}'].mean().mean():.3f}" for r in regions]
        assert cells[-7:-4] == expected, (model, cells)
    html = _leaderboard_section(lb, paired_statistics(pred, None, "segmentation"), "segmentation", "dice")
    assert html.index("dice_WT fold mean") < html.index("dice_TC fold mean") < html.index("iou fold mean")


def test_one_scoring_of_a_locked_test_set_gets_case_tests_but_no_fold_test():
    import warnings

    pred = segmentation_predictions()
    one = pred[pred["fold"] == 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fold test on one fold used to warn for every model
        stats = paired_statistics(one, task="segmentation")
    assert set(stats["test"]) == {"wilcoxon"}
    ref = one[one["model"] == "unet"].set_index("patient_id")
    for _, row in stats.iterrows():
        other = one[one["model"] == row["model"]].set_index("patient_id").loc[ref.index]
        assert row["p"] == pytest.approx(sps.wilcoxon(ref["dice"], other["dice"]).pvalue)


def test_bootstrap_inputs_computed_once_give_sklearns_metrics_and_the_same_intervals():
    """Dense ranks (AUC counted per resample, not sorted) and a multi-class model's predicted classes (its argmax
    taken once) score as sklearn does on the raw scores, and the bootstrap intervals are the raw scores' own."""
    from tumorbench.evaluation.oof import bootstrap_scores, dense_ranks
    from tumorbench.evaluation.stats import bootstrap_metric_ci

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 3000)
    score = np.round(np.clip(0.3 * y + rng.normal(0.4, 0.25, 3000), 0, 1), 2)  # many ties
    ranks = dense_ranks(score)
    assert ranks.dtype == np.int64 and np.array_equal(
        np.argsort(ranks, kind="stable"), np.argsort(score, kind="stable")
    )
    assert BINARY_METRIC_FNS["auc"](y, ranks) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    raw = bootstrap_metric_ci(y, score, BINARY_METRIC_FNS["auc"], n_boot=300, seed=3)
    assert bootstrap_metric_ci(y, ranks, BINARY_METRIC_FNS["auc"], n_boot=300, seed=3) == pytest.approx(raw, abs=1e-12)
    # three classes: macro one-vs-rest AUC on ranked columns, the other metrics on the argmax
    y3 = rng.integers(0, 3, 2000)
    logits = rng.normal(size=(2000, 3)) + 1.5 * np.eye(3)[y3]
    proba = np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 3)
    auc = np.mean([roc_auc_score(y3 == c, proba[:, c]) for c in range(3)])  # sklearn's ovr macro, rounded scores
    assert MULTICLASS_METRIC_FNS["auc"](y3, bootstrap_scores(proba, "auc", False)) == pytest.approx(auc, abs=1e-12)
    pred = bootstrap_scores(proba, "f1", False)
    assert pred.ndim == 1 and np.array_equal(pred, proba.argmax(1))
    assert MULTICLASS_METRIC_FNS["f1"](y3, pred) == pytest.approx(f1_score(y3, pred, average="macro"))
    assert MULTICLASS_METRIC_FNS["recall"](y3, pred) == pytest.approx(recall_score(y3, pred, average="macro"))
    for metric in ("accuracy", "precision", "specificity", "f1"):
        fn = MULTICLASS_METRIC_FNS[metric]
        assert bootstrap_metric_ci(y3, pred, fn, n_boot=200, seed=1) == pytest.approx(
            bootstrap_metric_ci(y3, proba, fn, n_boot=200, seed=1), abs=1e-12
        )
    assert dense_ranks(np.array([0.2, np.nan, 0.1])).dtype == float  # non-finite scores: ranked as before
