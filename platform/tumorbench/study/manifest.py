"""A study's provenance: ``manifest.json`` (data, split, spec, search spaces, statistics, code and versions)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tumorbench.package import package_versions
from tumorbench.study.spec import Study

COMMIT_ENV = "TUMORBENCH_GIT_COMMIT"
COMMIT_FILE = ".tumorbench-commit"  # written at submit time beside pyproject.toml: clusters get no .git

# The statistics every leaderboard of a study is computed with (recorded in manifest.json).
N_BOOT, ALPHA = 2000, 0.05


def code_version() -> dict[str, Any]:
    """The git commit of this package's checkout and whether it had uncommitted changes.

    Outside git (a cluster node gets the files without ``.git``) the commit recorded at submit
    time: ``$TUMORBENCH_GIT_COMMIT``, else ``.tumorbench-commit`` at the repository root
    (``<commit>`` or ``<commit> dirty``); ``None`` when neither exists.
    """
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=here).stdout.strip()

    try:
        return {
            "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.CalledProcessError):
        pass
    recorded = os.environ.get(COMMIT_ENV, "")
    file = here.parents[2] / COMMIT_FILE
    if not recorded and file.is_file():
        recorded = file.read_text()
    words = recorded.split()
    return {"git_commit": words[0] if words else None, "git_dirty": ("dirty" in words[1:]) if words else None}


def write_manifest(
    study: Study,
    out: Path,
    preset: str,
    doc: dict,
    seconds: float,
    best: dict,
    code: dict[str, Any],
    budget: dict[str, Any] | None = None,
    classes: list[str] | None = None,
) -> None:
    """``manifest.json``; ``code`` is :func:`code_version` taken when the study started.

    ``classes``: class names in label-index order (classification), for the report's axes.
    """
    manifest = {
        "study": study.name,
        "preset": preset,
        "task": study.task,
        "classes": classes,
        "seed": study.seed,
        "data": doc["dataset"],
        "split": {"file": str(out / "splits.json"), "hash": doc["hash"], "folds": len(doc["folds"])},
        "statistics": {"n_boot": N_BOOT, "alpha": ALPHA, "bootstrap": "patients resampled"},
        "spec": study_as_dict(study),
        "candidates": [
            {"name": c.name, "searcher": c.searcher, "num_samples": c.num_samples} for c in study.candidates
        ],
        "baselines": list(study.baselines),
        "scheduler": study.scheduler,
        "best": best,
        **code,
        "versions": package_versions(),
        "seconds": round(seconds, 1),
    }
    if budget is not None:
        manifest["budget"] = budget
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))


def study_as_dict(study: Study) -> dict[str, Any]:
    """A JSON-friendly view of a study for ``manifest.json``: search spaces as their distributions."""
    values = asdict(study)
    for candidate in values["candidates"]:
        candidate["space"] = {k: describe_domain(v) for k, v in candidate["space"].items()}
    return values


def describe_domain(value: Any) -> Any:
    """A Tune search domain as data, e.g. ``{"sample": "loguniform", "range": [1e-4, 1e-2]}``.

    The manifest must let a reader rerun the search; a Domain's repr is only its memory address.
    Grid searches (plain dicts) and constants are already data and are returned as they are.
    """
    from ray.tune.search.sample import Categorical, Domain, Quantized

    if not isinstance(value, Domain):
        return value if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    sampler, described = value.get_sampler(), {}
    if isinstance(sampler, Quantized):
        described["q"] = sampler.q
        sampler = sampler.get_sampler()
    name = type(sampler).__name__.lstrip("_").lower()  # "uniform", "loguniform", "normal"
    if isinstance(value, Categorical):
        return {"sample": "choice", "values": list(value.categories), **described}
    if type(value).__name__ == "Integer":
        name = "lograndint" if name == "loguniform" else "randint"
    return {"sample": name, "range": [value.lower, value.upper], **described}
