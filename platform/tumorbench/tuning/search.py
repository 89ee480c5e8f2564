"""Ray Tune searches: the searcher factory, trial resources, and the search driver (schedulers: ``tuning.schedulers``).

``run_search`` checks everything before a trial starts (the space against the
searcher and the config, the data and split file, that one trial's workers fit
the cluster), then runs a ``Tuner`` whose trials are :func:`crossval_trial`.
A failed trial is recorded as failed and the others go on; ``resume=True``
continues an interrupted search without redoing finished trials.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from tumorbench import storage
from tumorbench.data.splits import load_splits
from tumorbench.tasks import TaskError, get_task
from tumorbench.training.config import TrainConfig, TrainConfigError
from tumorbench.training.trainer import cluster_resources, ensure_ray, preflight
from tumorbench.tuning.leaks import sweeping
from tumorbench.tuning.resources import (
    ResourcePlan,
    Resources,
    ensure_feasible,
    ensure_trials_can_stop,
    largest_node_cpus,
    plan_for,
    plan_resources,
)
from tumorbench.tuning.schedulers import ASHA_REDUCTION_FACTOR, SCHEDULERS, asha_grace_epochs, make_scheduler
from tumorbench.tuning.space import SearchSpaceError, check_domains, grid_size, searcher_space, validate_space
from tumorbench.tuning.trial import TrialSetup, crossval_trial, recover_state, trial_dirname, tune_metric

FOLDS_ATTR = "folds_done"
__all__ = ["ResourcePlan", "Resources", "best_row", "plan_resources", "run_search", "trial_rows"]


def make_searcher(
    kind: str, space: dict[str, Any], metric: str, mode: str, seed: int, num_samples: int, max_concurrent: int = 0
):
    """A Tune search algorithm for ``kind`` (``grid``, ``random``, ``bayes``, ``bayes-gp``).

    Grid and random search are Tune's ``BasicVariantGenerator`` (random draws
    seeded); ``bayes`` is Optuna's TPE and ``bayes-gp`` Optuna's Gaussian-process
    sampler, both through ``OptunaSearch``, with as many random start-up trials
    as a third of the budget (Optuna's default of 10 would make a small search random).
    ``max_concurrent`` (0: no limit) caps running trials of grid and random search,
    for which Tune ignores ``TuneConfig.max_concurrent_trials``.
    """
    from ray.tune.search import BasicVariantGenerator

    check_domains(space, kind)
    if kind in ("grid", "random"):
        return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    startup = max(1, min(10, num_samples // 3))
    sampler = (
        optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
        if kind == "bayes"
        else optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    )
    return OptunaSearch(metric=metric, mode=mode, sampler=sampler)


def prepare_base(base: TrainConfig, experiment_dir: Path, n_folds: int | None) -> tuple[TrainConfig, int]:
    """Check data, model and split file; the base config pinned to its split file, and the folds to run.

    Without ``base.split_file`` the split is made once at ``<experiment>/splits.json``
    (so concurrent trials never race to write it).
    """
    probe = base.replace(out=str(experiment_dir))
    preflight(probe, resume=False)
    split = Path(probe.split_file) if probe.split_file else experiment_dir / "splits.json"
    total = len(load_splits(split)["folds"])
    n_folds = total if n_folds is None else n_folds
    if not 1 <= n_folds <= total:
        raise TrainConfigError(f"{n_folds} folds asked for, the split file {split} has {total}")
    return base.replace(split_file=str(split), n_folds=total, fold=0), n_folds


def _new_tuner(
    trainable,
    tune_space: dict[str, Any],
    space: dict[str, Any],
    experiment: str,
    *,
    searcher: str,
    scheduler: str,
    num_samples: int,
    planned: int,
    n_folds: int,
    metric: str,
    mode: str,
    seed: int,
    concurrent: int,
    verbose: int,
    stopper=None,
    asha: tuple[int, float] = (1, ASHA_REDUCTION_FACTOR),
    max_t: int = 1,
    trial_retries: int = 0,
):
    from ray import tune

    from tumorbench.tuning.progress import SearchProgress

    trials = grid_size(space) if searcher == "grid" else planned
    # Live lines per fold on the driver, whatever Tune's own verbosity (the study runs Tune silent).
    progress = SearchProgress(experiment.rsplit("/", 1)[-1], metric, n_folds, trials, list(space))
    return tune.Tuner(
        trainable,
        param_space=tune_space,
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(
                searcher, space, tune_metric(metric), mode, seed, planned, max_concurrent=concurrent
            ),
            scheduler=make_scheduler(
                scheduler,
                max_t=max_t,
                metric=tune_metric(metric),
                mode=mode,
                grace_period=asha[0],
                reduction_factor=asha[1],
            ),
            num_samples=1 if searcher == "grid" else num_samples,
            # A trial holds a sliver of CPU and its workers ask for the rest later: without this cap,
            # Tune would start more trials than there are CPUs for their workers.
            max_concurrent_trials=concurrent if searcher.startswith("bayes") else None,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=experiment.rsplit("/", 1)[1],
            storage_path=experiment.rsplit("/", 1)[0],
            verbose=verbose,
            failure_config=tune.FailureConfig(max_failures=trial_retries),
            stop=stopper,
            # a budget guard is a Callback too: it watches trials start and end
            callbacks=[progress] + ([stopper] if stopper is not None else []),
        ),
    )


def run_search(
    base: TrainConfig,
    space: dict[str, Any],
    *,
    searcher: str = "random",
    scheduler: str = "asha",
    num_samples: int = 8,
    planned_samples: int | None = None,
    n_folds: int | None = None,
    metric: str | None = None,
    mode: str | None = None,
    storage_path: str | Path,
    name: str,
    resume: bool = False,
    trial_cpus: float = 0.1,
    max_concurrent: int = 1,
    seed: int = 0,
    address: str | None = None,
    verbose: int = 1,
    stopper=None,
    grace_period: int | None = None,
    reduction_factor: float = ASHA_REDUCTION_FACTOR,
    resources: Resources | None = None,
    workdir: str | Path | None = None,
    trial_retries: int = 0,
):
    """Search ``space`` around ``base``; each trial cross-validates one configuration.

    Args:
        base: The study's config for one model (``out`` is unused: trials write under the experiment).
        space: Dotted keys -> Tune domains (see ``tuning.space``).
        searcher: ``grid`` (every combination once; ``num_samples`` ignored), ``random``, ``bayes``, ``bayes-gp``.
        scheduler: ``asha`` (stop poor trials early, at epoch rungs) or ``none``.
        num_samples: Trials for random and Bayesian search.
        planned_samples: Of those, the trials planned, where a budget ``stopper`` may end the search sooner
            (the plan's; Optuna's random start-up trials and the progress lines count these); default all.
        n_folds: Folds per trial (default: all of the split file).
        metric: Per-fold metric (default: the task's primary); trials are ranked by ``<metric>_mean``.
        mode: ``max``/``min`` (default: the task's order).
        storage_path, name: The experiment is ``storage_path/name`` (a path or an ``s3://``/``gs://`` URI):
            Tune's trial records and every checkpoint go there.
        resume: Continue the experiment there (finished trials are kept, not rerun).
        trial_cpus: CPU the trial function itself holds (its Train workers get the rest).
        max_concurrent: Trials at once, lowered to what the cluster fits.
        seed: Searcher seed.
        address: Ray cluster to connect to (default: ``RAY_ADDRESS`` or a local Ray).
        verbose: Tune's console verbosity (0 silent).
        grace_period, reduction_factor: ASHA's, in epochs (see :func:`make_scheduler`); default grace
            :func:`asha_grace_epochs` of ``base.epochs``.
        stopper: A :class:`~tumorbench.tuning.budget.BudgetGuard` (or any Tune stopper) ending the
            search on time; not applied when resuming.
        resources: Per-trial requests (overrides ``trial_cpus``/``max_concurrent``; see ``tuning.resources``).
        workdir: Local working folder of the experiment (split file, fold histories before they are
            copied to storage); default ``storage_path/name`` when that is a path, else a temporary folder.
        trial_retries: Times Tune restarts a failed trial (a lost node) from its last fold checkpoint.

    Returns:
        Tune's ``ResultGrid`` (failed trials carry their error).
    """
    from ray import tune

    task = get_task(base.task)
    if not task.rankable:
        raise TrainConfigError(
            f"a {task.name} model has no validation score to rank configurations by; search its classifier"
        )
    try:
        metric = task.check_metric(metric or base.metric)
    except TaskError as exc:
        raise TrainConfigError(str(exc)) from None
    if mode is not None and mode != task.mode(metric):
        raise TrainConfigError(f"{metric} improves towards {task.mode(metric)}, not {mode!r}")
    mode = task.mode(metric)
    # Every fold keeps the epoch that is best on the search's own metric, in its direction.
    base = base.replace(metric=metric)
    validate_space(space, searcher, base)
    if scheduler not in SCHEDULERS:
        raise SearchSpaceError(f"unknown scheduler {scheduler!r}; choose from {', '.join(SCHEDULERS)}")
    experiment = storage.join(storage_path, name)
    local = Path(workdir) / name if workdir else _workdir(experiment)
    restoring = resume and tune.Tuner.can_restore(experiment)
    if not resume and tune.Tuner.can_restore(experiment):
        raise TrainConfigError(f"{experiment} already holds a search: pass resume to continue it, or another name")
    base, n_folds = prepare_base(base, local, n_folds)
    ensure_ray(address)
    if scheduler == "asha" or stopper is not None:
        ensure_trials_can_stop()
    resources = resources or Resources(trial_cpus=trial_cpus)
    if resources.concurrent_trials is None:  # the planner's trials side by side, unless asked for explicitly
        resources = replace(resources, concurrent_trials=max_concurrent)
    plan = plan_for(base, resources, *cluster_resources(), node_cpus=largest_node_cpus())
    ensure_feasible(plan, resources)
    tune_space, choices = searcher_space(space, searcher)
    setup = TrialSetup(
        base=base.to_dict(),
        n_folds=n_folds,
        metric=metric,
        mode=mode,
        worker_resources=plan.worker,
        experiment=str(local),
        choices=choices,
        storage=experiment,
        split=Path(base.split_file).read_text(),
    )
    trainable = tune.with_resources(tune.with_parameters(crossval_trial, setup=setup), {"cpu": plan.trial_cpus})
    if verbose:
        trials = grid_size(space) if searcher == "grid" else num_samples
        print(
            f"[tumorbench] search {name}: {searcher} ({trials} trials), scheduler {scheduler}, "
            f"{n_folds} folds per trial, ranked by {tune_metric(metric)} ({mode}); "
            f"{plan.describe(base.workers)}; {'resuming ' if restoring else ''}{experiment}",
            flush=True,
        )
    if restoring:
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_errored=False)
    else:
        tuner = _new_tuner(
            trainable,
            tune_space,
            space,
            experiment,
            searcher=searcher,
            scheduler=scheduler,
            num_samples=num_samples,
            planned=min(num_samples, planned_samples or num_samples),
            n_folds=n_folds,
            metric=metric,
            mode=mode,
            seed=seed,
            concurrent=plan.concurrent,
            verbose=verbose,
            stopper=stopper,
            asha=(grace_period or asha_grace_epochs(base.epochs), reduction_factor),
            # one past the last epoch: ASHA stops a trial at max_t, and the trial's fold-end and closing
            # reports come after its last epoch
            max_t=n_folds * base.epochs + 1,
            trial_retries=trial_retries,
        )
    # A trial stopped early (Ray Train's abort race) or whose process died leaves its workers' placement group
    # reserved; Train's own cleaner is not started (raycompat.torch_trainer), so every search sweeps (tuning.leaks)
    with _tune_output(verbose), sweeping({"CPU": plan.trial_cpus}):
        grid = tuner.fit()
    if verbose:
        print(f"[tumorbench] TensorBoard for every trial and fold: tensorboard --logdir {experiment}", flush=True)
    return grid


@contextlib.contextmanager
def _tune_output(verbose: int) -> Iterator[None]:
    """Silence Tune completely at ``verbose=0``; at every verbosity, tensorboardX's NaN warning.

    Ray 2.60's default console engine prints its "Configuration for experiment" box at every
    verbosity (``TuneTerminalReporter.experiment_started`` ignores it); the legacy engine, chosen
    with Ray's documented ``RAY_AIR_NEW_OUTPUT=0``, prints nothing at 0. Tune reads the variable
    when ``fit`` starts, so it is set only around the call (our live lines come from ``SearchProgress``).
    Tune's TensorBoard logger warns "NaN or Inf found in input tensor." for every NaN or inf it writes,
    and both are legitimate results (a one-fold SD, the HD95 of a missed tumour): TensorBoard leaves a gap.
    Tune's "Failed to fetch metrics" for trials stopped before their first report (:class:`NotReportedYet`), and
    Optuna's INFO lines.
    """
    # optuna: its "A new study created in memory with name: optuna" line, one per Bayesian search
    quiet = {"tensorboardX.x2num": logging.ERROR, "optuna": logging.WARNING}
    quiet |= {} if verbose else {"ray.tune.tune": logging.WARNING}
    analysis, unreported = logging.getLogger(NotReportedYet.LOGGER), NotReportedYet()
    analysis.addFilter(unreported)
    levels = {name: logging.getLogger(name).level for name in quiet}
    for name, level in quiet.items():  # ray.tune.tune: its "Wrote the latest version of all result files" line
        logging.getLogger(name).setLevel(max(levels[name], level))
    before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    if not verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        analysis.removeFilter(unreported)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if not verbose:  # the variable as it was
            if before is None:
                os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
            else:
                os.environ["RAY_AIR_NEW_OUTPUT"] = before


class NotReportedYet(logging.Filter):
    """Drops Tune's end-of-search warning "Failed to fetch metrics for N trial(s)" when every trial it names has
    no result file at all: a trial stopped before its first report (a budget's cut, ASHA, a draw the guard
    stopped at once). Nothing of it is lost, and :func:`trial_rows` lists it as stopped; a failure to read
    results that exist still warns."""

    LOGGER = "ray.tune.analysis.experiment_analysis"
    NO_FILES = "FileNotFoundError('Could not fetch metrics"

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("Failed to fetch metrics"):
            return True
        named = [line for line in message.splitlines()[1:] if line.startswith("- ")]
        return not (named and all(self.NO_FILES in line for line in named))


def _workdir(experiment: str) -> Path:
    if not storage.is_remote(experiment):
        return Path(experiment)
    import tempfile

    return Path(tempfile.gettempdir()) / "tumorbench" / experiment.split("://", 1)[1]


def trial_rows(grid, metric: str, n_folds: int) -> list[dict[str, Any]]:
    """One row per trial of a finished search, in the order the trials started: status, params, scores, folders.

    ``status`` is ``done`` (all folds), ``stopped`` (cut by the scheduler) or ``error``;
    ``checkpoint`` holds the trial's ``folds.json`` and ``oof_predictions.json``. The
    order is that of each trial's first report (the searcher's proposal order when
    trials run one at a time): a restored ``ResultGrid`` lists them in another order,
    and Optuna's trial names are random.
    """
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        folds = int(metrics.get(FOLDS_ATTR, 0))
        checkpoint = storage.uri_of(result.checkpoint.filesystem, result.checkpoint.path) if result.checkpoint else None
        if checkpoint is None and folds >= n_folds and not result.error:  # cut before its closing report
            checkpoint = recover_state(result.path, n_folds)
        status = "error" if result.error else "done" if folds >= n_folds and checkpoint else "stopped"
        history = result.metrics_dataframe
        first = float(history["timestamp"].min()) if history is not None and "timestamp" in history else math.inf
        rows.append(
            {
                "trial": Path(result.path).name,
                "first_report": first,
                "status": status,
                "params": dict(result.config or {}),
                "folds_done": folds,
                "mean": metrics.get(tune_metric(metric), float("nan")),
                "sd": metrics.get(f"{metric}_sd", float("nan")),
                "folds": [metrics.get(f"fold_{k}_{metric}") for k in range(folds)],
                "epochs_spent": int(metrics.get("epochs_spent", 0)),
                "path": result.path,
                "checkpoint": checkpoint,
                "error": str(result.error) if result.error else None,
            }
        )
    return sorted(rows, key=lambda row: (row["first_report"], row["trial"]))


def best_row(rows: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """The best trial that finished every fold (a stopped trial's partial mean does not compete)."""
    # An infinite mean (HD95 with a missed tumour) is a real score that loses to every finite one; NaN is no score.
    done = [r for r in rows if r["status"] == "done" and not math.isnan(float(r["mean"]))]
    if not done:
        return None
    return (max if mode == "max" else min)(done, key=lambda r: float(r["mean"]))
