"""What a comparison study is: data, task, candidate models with search spaces, baselines, budget.

Studies are Python objects (``tumorbench.study.presets``) so that Tune search
spaces are real ``tune`` domains; everything is validated before any trial starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tumorbench.baselines import list_baselines
from tumorbench.errors import TumorbenchError
from tumorbench.models import list_models, model_info
from tumorbench.tasks import TaskError, get_task, list_tasks
from tumorbench.training.config import TrainConfig, merge_settings
from tumorbench.tuning.schedulers import SCHEDULERS
from tumorbench.tuning.space import SEARCHERS, validate_space


class StudyError(TumorbenchError, ValueError):
    """A study that cannot run (reported before any trial starts)."""


@dataclass(frozen=True)
class Candidate:
    """One deep model of a study and how to search it.

    Args:
        name: Leaderboard name (unique in the study).
        config: ``TrainConfig`` settings for this model (``model`` at least), merged onto the study's
            ``config`` key by key (``training.config.merge_settings``).
        space: Dotted keys -> Tune domains (``tumorbench.tuning.space``).
        searcher: ``grid``, ``random``, ``bayes`` or ``bayes-gp``.
        num_samples: Trials for random and Bayesian searches.
    """

    name: str
    config: dict[str, Any]
    space: dict[str, Any] = field(default_factory=dict)
    searcher: str = "random"
    num_samples: int = 1


@dataclass(frozen=True)
class Study:
    """A comparison of deep models and classical baselines on one data set and one split file.

    Args:
        name: Study name (results folder and manifest).
        task: A task that ranks configurations (``tumorbench.tasks.list_tasks(rankable=True)``).
        data: Dataset root; ``None`` makes the synthetic study (``synthetic`` names which).
        candidates: Deep models with their search spaces.
        baselines: Classical baseline names (``tumorbench.baselines.list_baselines``).
        layout: Catalog layout or ``auto``.
        n_folds: Patient-level folds of the split file (every model and baseline uses them).
        primary: Primary metric of the task (default: the task's, AUC / per-patient Dice), ranked in its
            direction everywhere (HD95: lowest first).
        scheduler: ``asha`` or ``none``.
        config: ``TrainConfig`` settings shared by every candidate (nested dicts or dotted keys).
        baseline_params: Keyword arguments per baseline.
        synthetic: ``brain-mri`` or ``lung-ct`` when ``data`` is None, and its case count.
        seed: Seed of the split, the searches and the baselines.
        require_deid: Refuse DICOM input still carrying identifying tags (see ``tumorbench data deid``).
        explain_cases: Out-of-fold cases explained per fold and deep model (Grad-CAM scores in
            ``explanations.csv`` and the leaderboard; 0 turns explanations off).
        test: A locked test set (dataset root, same layout): final models retrained on every training
            patient are scored on it once (``study/final.py``).
    """

    name: str
    task: str
    data: str | None
    candidates: tuple[Candidate, ...]
    baselines: tuple[str, ...] = ()
    layout: str = "auto"
    n_folds: int = 5
    primary: str | None = None
    scheduler: str = "asha"
    config: dict[str, Any] = field(default_factory=dict)
    baseline_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    synthetic: tuple[str, int] | None = None
    seed: int = 0
    require_deid: bool = False
    explain_cases: int = 4
    test: str | None = None

    def __post_init__(self) -> None:
        try:
            task = get_task(self.task)
            task.check_metric(self.primary)
        except TaskError as exc:
            raise StudyError(f"study {self.name}: {exc}") from None
        if not task.rankable:
            raise StudyError(
                f"study {self.name}: a {task.name} study has no score to compare models by "
                f"(choose from {list_tasks(rankable=True)})"
            )
        if not self.candidates:
            raise StudyError(f"study {self.name}: no candidate models")
        if self.scheduler not in SCHEDULERS:
            raise StudyError(f"study {self.name}: unknown scheduler {self.scheduler!r} (choose from {SCHEDULERS})")
        if self.n_folds < 2:
            raise StudyError(f"study {self.name}: n_folds must be at least 2")
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise StudyError(f"study {self.name}: candidate names repeat: {names}")
        for candidate in self.candidates:
            self._check_candidate(candidate)
        unknown = sorted(set(self.baselines) - set(list_baselines(self.task)))
        if unknown:
            raise StudyError(
                f"study {self.name}: unknown {self.task} baselines {unknown} (choose from {list_baselines(self.task)})"
            )

    @property
    def metric(self) -> str:
        """The primary metric (the study's, else its task's)."""
        return get_task(self.task).check_metric(self.primary)

    @property
    def mode(self) -> str:
        """``max`` or ``min``: the direction of :attr:`metric`."""
        return get_task(self.task).mode(self.primary)

    def _check_candidate(self, candidate: Candidate) -> None:
        model = candidate.config.get("model")
        if model not in list_models():
            raise StudyError(
                f"study {self.name}: candidate {candidate.name} names unknown model {model!r} "
                f"(choose from {list_models(self.task)})"
            )
        if not get_task(self.task).owns(model_info(model).task):
            raise StudyError(
                f"study {self.name}: {model} is a {model_info(model).task} model, the study is {self.task}"
            )
        if candidate.searcher not in SEARCHERS:
            raise StudyError(
                f"study {self.name}: candidate {candidate.name}: unknown searcher "
                f"{candidate.searcher!r} (choose from {SEARCHERS})"
            )
        # The settings and the space are typed now, not when the candidate's search starts.
        try:
            config = self.train_config(candidate, data=self.data or "synthetic", out=self.name)
            validate_space(candidate.space, candidate.searcher, config)
        except (TypeError, ValueError) as exc:
            raise StudyError(f"study {self.name}: candidate {candidate.name}: {exc}") from exc

    def train_config(self, candidate: Candidate, **run: Any) -> TrainConfig:
        """The candidate's base ``TrainConfig``: study defaults -> ``run`` (data, out, split file) -> the
        study's ``config`` -> the candidate's ``config``, merged by the one rule (``merge_settings``)."""
        values = {"task": self.task, "layout": self.layout, "n_folds": self.n_folds, "seed": self.seed} | run
        return TrainConfig.from_dict(merge_settings(values, self.config, candidate.config))
