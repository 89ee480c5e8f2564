"""Which model packages an application serves: ``models`` entries -> names and package folders."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

# Ranking of a run's checkpoints, as tumorbench.training.tasks (PRIMARY_METRIC, METRIC_ORDER); that module
# imports torch, MONAI and timm, which the build step of a Serve config should not pay for.
_PRIMARY_METRIC = {"classification": "auc", "segmentation": "dice"}
MANIFEST = "model.json"


def _manifest(package: Path) -> dict[str, Any]:
    """``model.json`` read without torch; every replica validates it fully (``read_manifest``) when loading."""
    try:
        manifest = json.loads((package / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{package / MANIFEST}: unreadable model manifest ({exc})") from exc
    if manifest.get("task") not in _PRIMARY_METRIC:
        raise ValueError(f"{package}: a {manifest.get('task')!r} package cannot be served")
    return manifest


def resolve_packages(entries: list[str]) -> dict[str, Path]:
    """Model names -> package folders, from ``PATH``, ``NAME=PATH`` or ``${VAR:-default}`` entries."""
    found: dict[str, Path] = {}
    for entry in (path for item in entries for path in _expand(item)):
        name, _, raw = entry.rpartition("=") if "=" in entry else ("", "", entry)
        for package in _packages_in(_existing(raw)):
            manifest = _manifest(package)
            layout = (manifest.get("data") or {}).get("layout")
            default = f"{manifest.get('name')}_{layout}" if layout else str(manifest.get("name"))
            base = re.sub(r"[^a-z0-9_-]+", "_", (name or default).lower()).strip("_") or "model"
            unique, n = base, 2
            while unique in found:
                unique, n = f"{base}_{n}", n + 1
            found[unique] = package
    return found


def _expand(entry: str) -> list[str]:
    """``${VAR:-default}`` -> the variable's paths (split on ``os.pathsep``), else the default."""
    match = re.fullmatch(r"\$\{(\w+)(?::-(.*))?\}", entry.strip())
    if match is None:
        return [entry]
    value = os.environ.get(match.group(1)) or match.group(2)
    if not value:
        raise ValueError(f"models entry {entry}: ${match.group(1)} is not set and there is no default")
    return [part for part in value.split(os.pathsep) if part]


def _existing(raw: str) -> Path:
    path = Path(raw).expanduser()
    for candidate in (path, REPO_ROOT / path) if not path.is_absolute() else (path,):
        if candidate.exists():
            return candidate.resolve()
    raise FileNotFoundError(f"model package {raw!r} not found (relative paths: from the working directory or {REPO_ROOT})")


def _packages_in(path: Path) -> list[Path]:
    """A package itself; the best ``checkpoint_*`` of a training run's folder; else the packages in it."""
    if (path / MANIFEST).is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a model package folder")
    children = sorted(p for p in path.iterdir() if (p / MANIFEST).is_file())
    if children and all(p.name.startswith("checkpoint_") for p in children):
        def score(package: Path) -> tuple[float, str]:
            manifest = _manifest(package)
            value = manifest.get("metrics", {}).get(_PRIMARY_METRIC[manifest["task"]])
            return (float(value) if isinstance(value, (int, float)) else float("-inf"), package.name)
        return [max(children, key=score)]
    if not children:
        raise FileNotFoundError(f"{path}: no model package (a folder with model.json) in it")
    return children
