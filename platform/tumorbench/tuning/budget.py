"""A time budget for one Tune search: stop proposing trials, end folds cleanly, cut at a hard deadline.

:class:`BudgetGuard` is both a Tune ``Stopper`` and a ``Callback`` (it sees every trial at
each step). Trials report every epoch; its decisions fall at fold boundaries (the report whose
``folds_done`` grew), and a fold lasts what the last folds lasted, measured between boundaries:

- a running trial whose remaining folds no longer fit before ``deadline`` stops after the
  fold it just finished (its folds so far are kept, but it cannot win: only trials that
  finished every fold compete);
- the search ends (no new trial is proposed) once a trial has finished every fold and no
  running trial could finish its folds before ``deadline``, nor a new one the share of its
  folds early stopping is expected to leave it (``new_trial_share``: ASHA stops most new trials
  at a rung, and the planner counted them so; a promoted one meets the fold-boundary stop; a trial
  started so keeps running to its rung);
- at ``deadline + grace`` everything still running is cut, whatever it is doing.

Until one trial has finished every fold, only the hard deadline stops the search, and it
lies at least a fold past ``deadline`` (a fold as long as the last ones): a search whose
folds run somewhat longer than planned still gets its result, rather than losing its only
trial in its last fold (LGG ``--budget 15``: folds 13% over the plan cut U-Net 30 s before
its last fold ended). A fold lasts what the last folds lasted (the planner's estimate until
one has been seen).
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback, Stopper

FOLDS_KEY = "folds_done"


class BudgetGuard(Stopper, Callback):
    """Stops a search within ``seconds`` (+ ``grace``) of its creation.

    Args:
        seconds: The search's share of the study budget.
        n_folds: Folds a trial must finish to count.
        fold_seconds: Planned seconds of one fold (start-up included), until measured.
        grace: Seconds past the deadline before running folds are cut.
        clock: Monotonic clock (tests pass a fake one).
        new_trial_share: Share of its folds a new trial is expected to train (ASHA's,
            ``tuning.schedulers.asha_expected_share``; 1 without early stopping).
        planned_trials: The search's trials (``num_samples`` times a grid's size); once all have been seen
            and none is left, the search ends on its own and the guard does not claim it ended it.
    """

    def __init__(
        self,
        seconds: float,
        n_folds: int,
        fold_seconds: float,
        grace: float = 0.0,
        clock=time.monotonic,
        new_trial_share: float = 1.0,
        planned_trials: int | None = None,
    ) -> None:
        self.new_trial_share = min(1.0, max(0.0, new_trial_share))
        self.planned_trials = planned_trials
        self._clock = clock
        self.started = clock()
        self.deadline = self.started + max(0.0, seconds)
        self.hard_deadline = self.deadline + max(0.0, grace)
        self.n_folds = n_folds
        self.planned_fold = fold_seconds
        self._first_seen: dict[str, float] = {}
        self._last_report: dict[str, float] = {}
        self._folds: dict[str, int] = {}
        self._durations: list[float] = []
        self._live: set[str] = set()
        self._running: set[str] = set()
        self.stopped_trials: list[str] = []
        self.ended_by: str | None = None

    # ---- Callback: which trials exist and run
    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        now = self._clock()
        self._live, self._running = set(), set()
        for trial in trials:
            self._first_seen.setdefault(trial.trial_id, now)
            if trial.status in ("PENDING", "RUNNING", "PAUSED"):
                self._live.add(trial.trial_id)
            if trial.status == "RUNNING":
                self._running.add(trial.trial_id)

    # ---- Stopper
    def fold_seconds(self) -> float:
        """Seconds one fold takes: the mean of the last three seen, else the plan's."""
        recent = self._durations[-3:]
        return sum(recent) / len(recent) if recent else self.planned_fold

    def finished(self) -> int:
        return sum(1 for folds in self._folds.values() if folds >= self.n_folds)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        now = self._clock()
        folds, before = int(result.get(FOLDS_KEY, 0)), self._folds.get(trial_id, 0)
        if folds <= before:  # an epoch inside a fold (or the trial's closing report): no new fold to time
            return False
        previous = self._last_report.get(trial_id, self._first_seen.get(trial_id, self.started))
        self._durations.append((now - previous) / (folds - before))
        self._last_report[trial_id] = now
        self._folds[trial_id] = folds
        if folds >= self.n_folds or not self.finished():
            return False
        if now + (self.n_folds - folds) * self.fold_seconds() > self.deadline:
            self.stopped_trials.append(trial_id)
            return True
        return False

    def _viable(self, trial_id: str) -> bool:
        """Could this trial still finish every fold before the deadline? (One whose folds are done is
        making its closing report, the trial's outcome: it is waited for.) A trial that appeared when a new
        one fitted at its expected share keeps that chance until its first fold: ASHA judges it at a rung
        inside that fold, and a promoted one meets the fold-boundary stop. Ending the search under it
        instead cut it before the rung, its start-up spent for nothing (yes/no ``--budget 15``: a trial
        of each of two searches, 1 and 0 epochs trained)."""
        folds = self._folds.get(trial_id, 0)
        if folds >= self.n_folds:
            return True
        first = self._first_seen.get(trial_id, self._clock())
        if folds == 0 and first + self.new_trial_share * self.n_folds * self.fold_seconds() <= self.deadline:
            return True
        since = self._last_report.get(trial_id, first)
        return since + (self.n_folds - folds) * self.fold_seconds() <= self.deadline

    def stop_all(self) -> bool:
        now = self._clock()
        hard = self.hard_deadline
        if not self.finished():  # no result yet: the trial in its last fold may finish it
            hard = max(hard, self.deadline + self.fold_seconds())
        if now >= hard:  # what it ends says whether folds were lost (the LGG study's summary said so, wrongly)
            # a trial whose folds are all reported is only making its closing report (as a step's results
            # come after its on_step_begin, its last fold may have been reported since)
            running = [t for t in self._running if self._folds.get(t, 0) < self.n_folds]
            cut = "running folds cut" if running else "no further trial started, nothing running was cut"
            self.ended_by = self.ended_by or f"hard deadline: {cut}"
            return True
        live = [t for t in self._live if t not in self.stopped_trials]
        if not live and self.planned_trials is not None and len(self._first_seen) >= self.planned_trials:
            return False  # every trial has run: Tune ends the search (LGG's 1-trial searches said "budget")
        if (
            self.finished()
            and not any(self._viable(t) for t in live)
            and now + self.new_trial_share * self.n_folds * self.fold_seconds() > self.deadline
        ):
            self.ended_by = self.ended_by or "budget: no further trial fits"
            return True
        return False

    def summary(self) -> dict[str, Any]:
        """What the guard did, for the study's report."""
        return {
            "budget_s": round(self.deadline - self.started, 1),
            "grace_s": round(self.hard_deadline - self.deadline, 1),
            "elapsed_s": round(self._clock() - self.started, 1),
            "ended_by": self.ended_by,
            "trials_stopped_for_time": len(self.stopped_trials),
            "fold_seconds_seen": round(self.fold_seconds(), 1),
        }
