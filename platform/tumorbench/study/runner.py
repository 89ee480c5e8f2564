"""Run a comparison study end to end.

catalog -> one split file -> a Tune search per deep model (each trial a k-fold
cross-validation through Ray Train) and every baseline on the same folds (Ray
tasks) -> ``predictions.csv`` -> leaderboard, paired statistics, report -> the
winner as a model package under ``best/<task>/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tumorbench import storage
from tumorbench.data.catalog import scan
from tumorbench.study import results
from tumorbench.study.spec import Study, StudyError
from tumorbench.package import package_versions
from tumorbench.tasks import get_task
from tumorbench.training.config import TrainConfig
from tumorbench.training.data import ensure_split_file
from tumorbench.training.trainer import describe_cluster, ensure_ray
from tumorbench.tuning.resources import Resources

COMMIT_ENV = "TUMORBENCH_GIT_COMMIT"
COMMIT_FILE = ".tumorbench-commit"  # written at submit time beside pyproject.toml: clusters get no .git
RESULT_FILES = ("leaderboard.csv", "folds.csv", "predictions.csv", "stats.csv", "trials.csv", "configs.json",
                "manifest.json", "report.html", "splits.json")
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
    return study.train_config(candidate, data=data, split_file=str(split_file),
                              out=str(out / "searches" / candidate.name))


def prepare(study: Study, out: Path) -> tuple[pd.DataFrame, dict, Path, str]:
    """Catalog and split file (made once; every model and baseline reads it)."""
    data = _data_root(study, out)
    frame = scan(data, study.layout)
    if study.require_deid:
        from tumorbench.data.deid import require_deidentified

        require_deidentified(frame["image"], data)
    patients = frame["patient_id"].nunique()
    if study.n_folds > patients:
        raise StudyError(f"study {study.name}: {study.n_folds} folds need at least {study.n_folds} patients; "
                         f"{data} has {patients}")
    probe = base_config(study, study.candidates[0], data, out, out / "splits.json").replace(split_file=None)
    doc = ensure_split_file(probe.replace(out=str(out)), frame)
    return frame, doc, out / "splits.json", data


def _code_version() -> dict[str, Any]:
    """The git commit of this package's checkout and whether it had uncommitted changes.

    Outside git (a cluster node gets the files without ``.git``) the commit recorded at submit
    time: ``$TUMORBENCH_GIT_COMMIT``, else ``.tumorbench-commit`` at the repository root
    (``<commit>`` or ``<commit> dirty``); ``None`` when neither exists.
    """
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=here).stdout.strip()

    try:
        return {"git_commit": git("rev-parse", "HEAD"),
                "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        pass
    recorded = os.environ.get(COMMIT_ENV, "")
    file = here.parents[2] / COMMIT_FILE
    if not recorded and file.is_file():
        recorded = file.read_text()
    words = recorded.split()
    return {"git_commit": words[0] if words else None,
            "git_dirty": ("dirty" in words[1:]) if words else None}


def write_manifest(study: Study, out: Path, preset: str, doc: dict, seconds: float, best: dict,
                   code: dict[str, Any]) -> None:
    """``manifest.json``; ``code`` is :func:`_code_version` taken when the study started."""
    manifest = {"study": study.name, "preset": preset, "task": study.task, "seed": study.seed,
                "data": doc["dataset"], "split": {"file": str(out / "splits.json"), "hash": doc["hash"],
                                                  "folds": len(doc["folds"])},
                "candidates": [{"name": c.name, "searcher": c.searcher, "num_samples": c.num_samples}
                               for c in study.candidates],
                "baselines": list(study.baselines), "scheduler": study.scheduler, "best": best,
                **code, "versions": package_versions(), "seconds": round(seconds, 1)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))


def package_best(winner: str, fold_records: dict[str, list], out: Path, task: str, metric: str) -> dict:
    """Copy the winner's best fold model to ``best/<task>/`` (weights + model.json) for Serve."""
    rank = get_task(task)
    chosen = min(fold_records[winner], key=lambda r: rank.sort_key(r.score, metric))
    target = out / "best" / task
    storage.download(chosen.checkpoint, target, skip=("training_state.pt",))
    return {"model": winner, "fold": chosen.fold, "epoch": chosen.best_epoch, metric: chosen.score,
            "source": chosen.checkpoint, "package": str(target),
            "note": "the best fold model of the winning configuration (not retrained on all folds)"}


def _print_search(candidate, metric: str, best: dict[str, Any], table: pd.DataFrame) -> None:
    found = int(table.loc[table["trial"] == best["trial"], "number"].iloc[0])
    stopped = int((table["status"] == "stopped").sum())
    failed = int((table["status"] == "error").sum())
    params = results.trial_params(best)
    print(f"[tumorbench] {candidate.name} ({candidate.searcher}): best {metric}_mean={best['mean']:.4f} "
          f"± {best['sd']:.4f} with {params}, found at trial {found} of {len(table)} "
          f"({stopped} stopped early, {failed} failed; {int(table['epochs_spent'].sum())} epochs)", flush=True)


def run_study(study: Study, out: str | Path, *, preset: str = "default", resume: bool = False,
              address: str | None = None, storage_uri: str | None = None,
              resources: Resources | None = None) -> dict[str, Any]:
    """Run every search and baseline of ``study``; write the results folder; return its summary.

    ``storage_uri`` (default ``$TUMORBENCH_STORAGE``, else ``out``) receives every trial record and
    checkpoint, and a copy of the results (leaderboard, report, best package); ``out`` holds the results
    on this machine. On a cluster of several nodes it must be object storage or a folder every node sees.
    """
    from tumorbench.evaluation.leaderboard import format_leaderboard, summarize_results
    from tumorbench.reporting.report import write_report
    from tumorbench.tuning.search import run_search, trial_rows

    started, code = time.perf_counter(), _code_version()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = storage.choose(storage_uri, out)
    frame, doc, split_file, data = prepare(study, out)
    task, metric, mode = get_task(study.task), study.metric, study.mode
    class_names = task.class_names(frame)
    ensure_ray(address)
    print(f"[tumorbench] {describe_cluster()}; storage {root}", flush=True)
    storage.check_reachable(root)
    parts, fold_records, configs, trials = [], {}, {}, []
    for candidate in study.candidates:
        grid = run_search(base_config(study, candidate, data, out, split_file), candidate.space,
                          searcher=candidate.searcher, scheduler=study.scheduler, num_samples=candidate.num_samples,
                          metric=metric, storage_path=storage.join(root, "searches"), name=candidate.name,
                          workdir=out / "searches", resume=resume, seed=study.seed, verbose=0,
                          resources=resources, trial_retries=TRIAL_RETRIES)
        rows = trial_rows(grid, metric, len(doc["folds"]))
        best = results.best_trial(rows, mode, len(doc["folds"]))
        trials.append(results.trials_frame(rows, candidate.name, candidate.searcher, metric))
        predictions, fold_records[candidate.name] = results.dl_predictions(best, candidate.name, study.task,
                                                                           class_names)
        parts.append(predictions)
        configs[candidate.name] = results.trial_params(best)
        _print_search(candidate, metric, best, trials[-1])
    pd.concat(trials, ignore_index=True).to_csv(out / "trials.csv", index=False)
    parts.append(results.run_baselines(study, frame, doc, class_names))
    results.write_predictions(parts, out)
    (out / "configs.json").write_text(json.dumps(configs, indent=1, default=str))
    lb, stats = summarize_results(out, task=study.task, primary=metric, seed=study.seed)
    dl_models = [m for m in lb["model"] if m in fold_records]
    best = package_best(dl_models[0], fold_records, out, study.task, metric) if dl_models else {}
    if dl_models and task.with_mask:
        from tumorbench.study.overlays import write_overlays

        predictions = pd.read_csv(out / "predictions.csv")
        write_overlays(predictions, dl_models[0], _local_records(fold_records[dl_models[0]], out / "checkpoints"),
                       frame, out)
    write_manifest(study, out, preset, doc, time.perf_counter() - started, best, code | {"storage": root})
    write_report(out, title=f"tumorbench: {study.name} ({preset})", task=study.task, primary=metric,
                 seed=study.seed)
    copy_results(out, root)
    print(format_leaderboard(lb, study.task, stats=stats), flush=True)
    print(f"[tumorbench] TensorBoard, every trial and fold: tensorboard --logdir {storage.join(root, 'searches')}",
          flush=True)
    return {"leaderboard": lb, "stats": stats, "best": best, "out": out, "storage": root}


def _local_records(records: list, folder: Path) -> list:
    """Fold records whose checkpoints are local folders (remote ones are downloaded under ``folder``)."""
    from dataclasses import replace

    local = []
    for record in records:
        if storage.is_remote(record.checkpoint):
            target = folder / f"fold_{record.fold}"
            storage.download(record.checkpoint, target, skip=("training_state.pt",))
            record = replace(record, checkpoint=str(target))
        local.append(record)
    return local


def copy_results(out: Path, root: str) -> None:
    """The results (tables, report, figures, best package) beside the searches on storage, when that is elsewhere."""
    if not storage.is_remote(root) and Path(root).resolve() == out:
        return
    for name in RESULT_FILES:
        if (out / name).is_file():
            storage.upload(out / name, storage.join(root, name))
    for folder in ("best", "figures", "overlays"):
        if (out / folder).is_dir():
            storage.upload(out / folder, storage.join(root, folder))
