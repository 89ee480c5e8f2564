"""Live progress of a search on the driver's console: one line per fold a trial finishes, and a heartbeat.

Tune's own verbose output stays off (a table per trial is too much on a laptop and nothing at all
while a fold trains). A trial reports every epoch (``tuning.trial``); this callback turns the report that
ends a fold into a line naming the search, the trial and its parameters, fold k/K, the fold's epochs and score, the
running mean, the time spent and an estimate of the time left (the mean time per fold so far times
the folds still to run; trials the scheduler stops early make it pessimistic).
"""

from __future__ import annotations

import math
import time
from typing import Any

from ray import tune

from tumorbench.tuning.trial import tune_metric


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def remaining_estimate(elapsed: float, folds_done: int, folds_total: int) -> float | None:
    """Seconds left, from the mean time per finished fold; ``None`` before the first fold."""
    if folds_done <= 0:
        return None
    return elapsed / folds_done * max(0, folds_total - folds_done)


class SearchProgress(tune.Callback):
    """Prints ``[search NAME] trial i/N {params} fold k/K: epochs e, metric=… (mean …), elapsed …, ~… left``.

    Args:
        name: The search (candidate) name.
        metric: Per-fold metric (trials report ``fold_<k>_<metric>`` and ``<metric>_mean``).
        n_folds: Folds per trial.
        num_trials: Trials the search will run (grid searches: a lower bound, raised as trials appear).
        keys: Search-space keys to show from each trial's config.
        heartbeat_s: Seconds between "still running" lines while no fold finishes.
    """

    def __init__(
        self,
        name: str,
        metric: str,
        n_folds: int,
        num_trials: int,
        keys: list[str],
        heartbeat_s: float = 60.0,
        clock=time.monotonic,
        echo=None,
    ) -> None:
        self.name, self.metric, self.n_folds, self.num_trials = name, metric, n_folds, max(1, num_trials)
        self.keys, self.heartbeat_s, self.clock, self.echo = keys, heartbeat_s, clock, echo
        self.started = clock()
        self.last_line = self.started
        self.numbers: dict[str, int] = {}
        self.folds: dict[str, int] = {}
        self.epochs: dict[str, int] = {}

    def _params(self, config: dict[str, Any]) -> str:
        shown = {k: config.get(k) for k in self.keys if k in config}
        return "{" + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()) + "}"

    def _timing(self) -> str:
        elapsed = self.clock() - self.started
        left = remaining_estimate(elapsed, sum(self.folds.values()), self.num_trials * self.n_folds)
        return f"elapsed {format_duration(elapsed)}" + ("" if left is None else f", ~{format_duration(left)} left")

    def _say(self, text: str) -> None:
        self.last_line = self.clock()
        # print looked up at call time: Tune pickles this callback with the tuner, and a stored print
        # (replaced by pytest's capture, or any wrapper) is not picklable.
        (self.echo or print)(f"[search {self.name}] {text}", flush=True)

    def _number(self, trial) -> int:
        if trial.trial_id not in self.numbers:
            self.numbers[trial.trial_id] = len(self.numbers) + 1
            self.num_trials = max(self.num_trials, len(self.numbers))
        return self.numbers[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        number = self._number(trial)
        self._say(f"trial {number}/{self.num_trials} {self._params(trial.config)} started; {self._timing()}")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        number, done = self._number(trial), int(result.get("folds_done", 0))
        if done <= self.folds.get(trial.trial_id, 0):  # trials report every epoch; a line per fold is enough
            return
        self.folds[trial.trial_id] = done
        spent = int(result.get("epochs_spent", 0))
        epochs, self.epochs[trial.trial_id] = spent - self.epochs.get(trial.trial_id, 0), spent
        score = result.get(f"fold_{done - 1}_{self.metric}", math.nan)
        mean = result.get(tune_metric(self.metric), math.nan)
        self._say(
            f"trial {number}/{self.num_trials} {self._params(trial.config)} fold {done}/{self.n_folds}: "
            f"epochs {epochs}, {self.metric}={score:.4f} (mean {mean:.4f}); {self._timing()}"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        done = self.folds.get(trial.trial_id, 0)
        how = "finished" if done >= self.n_folds else f"stopped by the scheduler after {done} fold(s)"
        self._say(f"trial {self._number(trial)}/{self.num_trials} {how}; {self._timing()}")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._say(f"trial {self._number(trial)}/{self.num_trials} failed (see its error.txt); {self._timing()}")

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if self.clock() - self.last_line >= self.heartbeat_s:
            running = sum(1 for t in trials if t.status == "RUNNING")
            self._say(
                f"{running} trial(s) training, {sum(self.folds.values())} of ~{self.num_trials * self.n_folds} "
                f"folds done; {self._timing()}"
            )


def wait_with_progress(
    refs: list, labels: list[str], *, what: str = "baselines", clock=time.monotonic, echo=print
) -> list:
    """``ray.get(refs)`` in order, printing a line as each task completes (label, k/N, elapsed, time left)."""
    import ray

    started, pending, names = clock(), list(refs), dict(zip(refs, labels, strict=True))
    for done in range(1, len(refs) + 1):
        ready, pending = ray.wait(pending, num_returns=1)
        elapsed = clock() - started
        left = remaining_estimate(elapsed, done, len(refs))
        echo(
            f"[{what}] {names[ready[0]]} done ({done}/{len(refs)}); elapsed {format_duration(elapsed)}"
            + (f", ~{format_duration(left)} left" if done < len(refs) else ""),
            flush=True,
        )
    return ray.get(list(refs))
