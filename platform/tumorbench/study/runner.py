"""Run a comparison study end to end.

catalog -> one split file -> a Tune search per deep model (each trial a k-fold
cross-validation through Ray Train) and every baseline on the same folds (Ray
tasks) -> ``predictions.csv`` -> leaderboard, paired statistics, report -> the
winner as a model package under ``best/<task>/``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from tumorbench import storage
from tumorbench.data.catalog import scan
from tumorbench.data.splits import check_content
from tumorbench.errors import DataError, TumorbenchError
from tumorbench.study import results
from tumorbench.study.final import check_test_set, load_test_frame, run_locked_test
from tumorbench.study.manifest import ALPHA, N_BOOT, code_version, write_manifest
from tumorbench.study.packaging import copy_results, local_records, package_best, package_final
from tumorbench.study.publish import best_note, link_best
from tumorbench.study.spec import Study, StudyError
from tumorbench.tasks import get_task
from tumorbench.training.config import TrainConfig
from tumorbench.training.data import ensure_split_file
from tumorbench.training.trainer import describe_cluster, ensure_ray
from tumorbench.tuning.resources import Resources

TRIAL_RETRIES = 2  # a trial on a lost node restarts (from its last fold checkpoint) this many times


def _data_root(study: Study, out: Path) -> str:
    """The study's data; the synthetic study is generated on first use (deterministic by seed)."""
    if study.data:
        return study.data
    from tumorbench.data.synthetic import make_study

    kind, cases = study.synthetic or ("brain-mri", 12)
    root = out / "data" / kind
    if not root.exists():
        make_study(kind, root, cases=cases, seed=study.seed)
    return str(root)


def base_config(study: Study, candidate, data: str, out: Path, split_file: Path) -> TrainConfig:
    return study.train_config(
        candidate, data=data, split_file=str(split_file), out=str(out / "searches" / candidate.name)
    )


def prepare(study: Study, out: Path) -> tuple[pd.DataFrame, dict, Path, str]:
    """Catalog and split file (made once; every model and baseline reads it)."""
    data = _data_root(study, out)
    frame = scan(data, study.layout)
    if study.require_deid:
        from tumorbench.data.deid import require_deidentified

        require_deidentified(frame["image"], data)
    patients = frame["patient_id"].nunique()
    if study.n_folds > patients:
        raise StudyError(
            f"study {study.name}: {study.n_folds} folds need at least {study.n_folds} patients; {data} has {patients}"
        )
    probe = base_config(study, study.candidates[0], data, out, out / "splits.json").replace(split_file=None)
    doc = ensure_split_file(probe.replace(out=str(out)), frame)
    # Files replaced under the same names since the split file was made are refused here, once.
    doc["dataset"]["content_hash"] = check_content(doc, frame, out / "splits.json")  # in memory: the manifest's
    return frame, doc, out / "splits.json", data


def _print_search(candidate, metric: str, best: dict[str, Any], table: pd.DataFrame) -> None:
    found = int(table.loc[table["trial"] == best["trial"], "number"].iloc[0])
    stopped = int((table["status"] == "stopped").sum())
    failed = int((table["status"] == "error").sum())
    params = results.trial_params(best)
    print(
        f"[tumorbench] {candidate.name} ({candidate.searcher}): best inner-validation "
        f"{metric}_mean={best['mean']:.4f} "
        f"± {best['sd']:.4f} with {params}, found at trial {found} of {len(table)} "
        f"({stopped} stopped early, {failed} failed; {int(table['epochs_spent'].sum())} epochs)",
        flush=True,
    )


def plan_study(
    study: Study,
    out: str | Path,
    *,
    budget_minutes: float | None = None,
    preset: str = "default",
    capacity=None,
):
    """Fingerprint the study's data and plan it (:mod:`tumorbench.study.planner`); Ray is not started.

    On CPUs each model's step is timed here first (:mod:`tumorbench.study.probe`): a few seconds
    per model, and the plan's minutes follow this machine rather than the one the constants were measured on.

    Returns:
        The plan, the fingerprint, the study with the plan's numbers applied, and the locked test set's
        catalog (None without ``study.test``), its overlaps with the training data refused here, so that
        ``--dry-run`` finds them too; pass it on to :func:`run_study` as ``test``.
    """
    from tumorbench.data.fingerprint import FingerprintConfig, compute_fingerprint, unusable_cases
    from tumorbench.study.capacity import Capacity, start_size
    from tumorbench.study.plan_apply import apply_plan
    from tumorbench.study.planner import make_plan
    from tumorbench.study.probe import probe_factors

    out = Path(out).resolve()
    root, unreadable = _data_root(study, out), []
    frame = scan(root, study.layout)
    fingerprint = compute_fingerprint(frame, unreadable=unreadable)
    unreadable += unusable_cases(frame)  # the cases the fingerprint did not sample: 2D read, NIfTI headers checked
    test = scan(study.test, study.layout) if study.test else None  # its final models are planned too
    if test is not None:  # every test case, as the training cases are checked: the test comes last
        unreadable += unusable_cases(test, FingerprintConfig(max_cases=0, max_volumes=0))
    if unreadable:  # refused now, naming them, not when a Train worker meets one of them mid-study
        more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        raise DataError(
            root,
            f"{len(unreadable)} case(s) cannot be used: {'; '.join(unreadable[:3])}{more}. Remove or re-export "
            f"them (`tumorbench data check {root}` lists every problem)",
        )
    if test is not None:  # refused now (--dry-run too): no truth, unknown classes, overlaps with training
        check_test_set(study, frame, test, out)
    capacity = capacity or Capacity.local()
    factors = None
    if capacity.gpus < 1:  # GPUs keep timemodel.GPU_SPEEDUP: the driver's CPU says nothing of them
        factors = probe_factors(
            study, fingerprint, start_size(study, fingerprint), int(study.config.get("spatial_dims", 2))
        )
    plan = make_plan(
        study,
        fingerprint,
        capacity,
        budget_minutes=budget_minutes,
        preset=preset,
        disk_free=shutil.disk_usage(next(p for p in (out, *out.parents) if p.exists())).free,
        factors=factors,
        test_cases=0 if test is None else len(get_task(study.task).usable(test)),
        fill=budget_minutes is not None,  # --budget is a time to use; a preset's cap only bounds
    )
    return plan, fingerprint, apply_plan(study, plan, cache_dir=str(out / "cache")), test


def _guard(plan, name: str, remaining: list[str], started: float, n_folds: int):
    """The budget guard of one search: its share of what is left of the study's budget."""
    if plan is None or plan.budget_seconds is None:
        return None
    from tumorbench.tuning.budget import BudgetGuard

    left = plan.budget_seconds - (time.perf_counter() - started)
    seconds = plan.search_budget(name, left, remaining)
    search = next(s for s in plan.searches if s.name == name)
    return BudgetGuard(
        seconds,
        n_folds,
        search.fold_seconds,
        grace=0.1 * seconds,
        new_trial_share=search.share,
        planned_trials=search.up_to,
    )


def _planned_trials(plan, name: str) -> int | None:
    """The trials a search was planned with, where the budget may extend it at run time (``SearchPlan.max_trials``)."""
    search = next((s for s in plan.searches if s.name == name), None) if plan is not None else None
    return search.trials if search is not None and search.up_to > search.trials else None


def _budget_summary(plan, started: float, guards: dict[str, dict], cut: list[str]) -> dict[str, Any] | None:
    if plan is None:
        return None
    actual = (time.perf_counter() - started) / 60
    return {
        "budget_min": None if plan.budget_seconds is None else round(plan.budget_seconds / 60, 1),
        "planned_min": round(plan.estimate_seconds / 60, 1),
        "actual_min": round(actual, 1),
        "plan_notes": list(plan.notes),
        "searches": guards,
        "cut_by_budget": cut,
        "note": "searches ended by the budget keep the trials that finished every fold",
    }


def run_study(
    study: Study,
    out: str | Path,
    *,
    preset: str = "default",
    resume: bool = False,
    address: str | None = None,
    plan=None,
    fingerprint: dict | None = None,
    storage_uri: str | None = None,
    resources: Resources | None = None,
    test: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Run every search and baseline of ``study``; write the results folder; return its summary.

    With a ``plan`` (:func:`plan_study`), trials run side by side as planned and each search
    is held to its share of the plan's budget; ``fingerprint`` is stored as ``fingerprint.json``.
    ``storage_uri`` (default ``$TUMORBENCH_STORAGE``, else ``out``) receives every trial record and
    checkpoint, and a copy of the results (leaderboard, report, best package); ``out`` holds the results
    on this machine. On a cluster of several nodes it must be object storage or a folder every node sees.
    ``test``: the locked test set's catalog as :func:`plan_study` checked it; scanned and checked here if not given.
    """
    from tumorbench.evaluation.leaderboard import format_leaderboard, summarize_results
    from tumorbench.reporting.report import write_report
    from tumorbench.tuning.search import run_search, trial_rows

    started, code = time.perf_counter(), code_version()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = storage.choose(storage_uri, out)
    frame, doc, split_file, data = prepare(study, out)
    task, metric, mode = get_task(study.task), study.metric, study.mode
    class_names = task.class_names(frame)
    if study.test and test is None:
        test = load_test_frame(study, frame, out)  # overlaps refused before Ray starts
    ensure_ray(address)
    print(f"[tumorbench] {describe_cluster()}; storage {root}", flush=True)
    storage.check_reachable(root)
    if fingerprint is not None:
        from tumorbench.data.fingerprint import write_fingerprint

        write_fingerprint(fingerprint, out)
    if plan is not None:
        print(plan.format(), flush=True)
        (out / "plan.json").write_text(json.dumps(asdict(plan), indent=1, default=str))
    parts, fold_records, configs, trials, guards, cut, bests = [], {}, {}, [], {}, [], {}
    names = [c.name for c in study.candidates]
    for i, candidate in enumerate(study.candidates):
        guard = _guard(plan, candidate.name, names[i:], started, len(doc["folds"]))
        grid = run_search(
            base_config(study, candidate, data, out, split_file),
            candidate.space,
            searcher=candidate.searcher,
            scheduler=study.scheduler,
            num_samples=candidate.num_samples,
            planned_samples=_planned_trials(plan, candidate.name),
            metric=metric,
            storage_path=storage.join(root, "searches"),
            name=candidate.name,
            workdir=out / "searches",
            resume=resume,
            seed=study.seed,
            verbose=0,
            stopper=guard,
            max_concurrent=plan.side_by_side if plan is not None else 1,
            resources=resources,
            trial_retries=TRIAL_RETRIES,
        )
        rows = trial_rows(grid, metric, len(doc["folds"]))
        if guard is not None:
            guards[candidate.name] = guard.summary()
        if not any(r["status"] == "done" for r in rows) and guard is not None and guard.ended_by:
            cut.append(candidate.name)
            print(
                f"[tumorbench] {candidate.name}: the budget ended the search before a trial finished every "
                f"fold; left out of the leaderboard",
                flush=True,
            )
            continue
        best = bests[candidate.name] = results.best_trial(rows, mode, len(doc["folds"]))
        trials.append(results.trials_frame(rows, candidate.name, candidate.searcher, metric))
        predictions, fold_records[candidate.name] = results.dl_predictions(
            best, candidate.name, study.task, class_names
        )
        parts.append(predictions)
        configs[candidate.name] = results.trial_params(best)
        _print_search(candidate, metric, best, trials[-1])
    pd.concat(trials, ignore_index=True).to_csv(out / "trials.csv", index=False)
    parts.append(results.run_baselines(study, frame, doc, class_names))
    results.write_predictions(parts, out)
    (out / "configs.json").write_text(json.dumps(configs, indent=1, default=str))
    lb, stats = summarize_results(out, task=study.task, primary=metric, seed=study.seed, n_boot=N_BOOT, alpha=ALPHA)
    dl_models = [m for m in lb["model"] if m in fold_records]
    best = package_best(dl_models[0], fold_records, out, study.task, metric) if dl_models else {}
    test_failed = None
    if test is not None and dl_models:
        try:
            best = _locked_test(study, test, bests, frame, doc, class_names, out, root, data, split_file, lb)
        except Exception as exc:  # the cross-validated results are written first; the failure is raised at the end
            test_failed = f"{type(exc).__name__}: {exc}"
            print(
                f"[tumorbench] locked test set failed ({test_failed}); writing the cross-validated results", flush=True
            )
    if best:
        best["note"] = best_note(lb["model"].iloc[0], best)
        best["serve_link"] = str(link_best(out / "best" / study.task, study.task))
    if dl_models and task.with_mask:
        from tumorbench.study.overlays import write_overlays

        predictions = pd.read_csv(out / "predictions.csv")
        write_overlays(
            predictions,
            dl_models[0],
            local_records(fold_records[dl_models[0]], out / "checkpoints" / dl_models[0]),
            frame,
            out,
        )
    if dl_models and study.explain_cases > 0:
        if cut:  # the budget already ran out: explanations would only overrun it further
            print("[tumorbench] explanations skipped: the time budget cut the searches", flush=True)
        else:
            local = {m: local_records(fold_records[m], out / "checkpoints" / m) for m in dl_models}
            lb = _explain(study, out, local, frame, doc, dl_models, class_names, lb)
    budget = _budget_summary(plan, started, guards, cut)
    seconds = time.perf_counter() - started
    write_manifest(study, out, preset, doc, seconds, best, code | {"storage": root}, budget, class_names)
    write_report(out, title=f"tumorbench: {study.name} ({preset})", task=study.task, primary=metric, seed=study.seed)
    copy_results(out, root)
    print(format_leaderboard(lb, study.task, stats=stats), flush=True)
    if best:
        print(
            f"[tumorbench] best/{study.task}: {best['note']}; serve it: serve run serve/config.yaml "
            f"(runs/best/{study.task} -> {out / 'best' / study.task})",
            flush=True,
        )
    print(
        f"[tumorbench] TensorBoard, every trial and fold: tensorboard --logdir {storage.join(root, 'searches')}",
        flush=True,
    )
    if budget is not None:
        print(
            f"[tumorbench] time: planned {budget['planned_min']} min, actual {budget['actual_min']} min"
            + (f" (budget {budget['budget_min']} min)" if budget["budget_min"] else "")
            + (f"; cut by the budget: {', '.join(cut)}" if cut else ""),
            flush=True,
        )
    if test_failed:
        raise TumorbenchError(f"the locked test set failed ({test_failed}); the cross-validated results are in {out}")
    return {"leaderboard": lb, "stats": stats, "best": best, "out": out, "budget": budget, "storage": root}


def _locked_test(study, test, bests, frame, doc, class_names, out, root, data, split_file, lb) -> dict:
    """The final models on the locked test set (:mod:`tumorbench.study.final`), the winner packaged as best."""
    final = run_locked_test(
        study,
        # The final models checkpoint to the study's storage too: their workers may run on other nodes.
        {
            c.name: base_config(study, c, data, out, split_file).replace(storage=storage.join(root, "final", c.name))
            for c in study.candidates
        },
        bests,
        frame,
        doc,
        test,
        class_names,
        out,
        study.metric,
        N_BOOT,
        ALPHA,
    )
    winner = next(m for m in lb["model"] if m in bests)
    return package_final(winner, final, lb, out, study.task, study.metric)


def _explain(
    study: Study,
    out: Path,
    fold_records: dict,
    frame: pd.DataFrame,
    doc: dict,
    dl_models: list[str],
    class_names: list[str] | None,
    lb: pd.DataFrame,
) -> pd.DataFrame:
    """``explanations.csv`` and its columns in ``leaderboard.csv``; a failure is reported, not fatal."""
    from tumorbench.explain.study import merge_into_leaderboard, write_explanations

    started = time.perf_counter()
    try:
        table = write_explanations(
            out, study.task, fold_records, frame, doc, dl_models, study.explain_cases, class_names
        )
    except (TumorbenchError, RuntimeError, ValueError) as exc:
        print(f"[tumorbench] explanations skipped: {exc}", flush=True)
        return lb
    lb = merge_into_leaderboard(lb, table)
    lb.to_csv(out / "leaderboard.csv", index=False)
    print(
        f"[tumorbench] explained {len(table)} out-of-fold cases (Grad-CAM) in {time.perf_counter() - started:.0f} s: "
        f"{out / 'explanations.csv'}",
        flush=True,
    )
    return lb
