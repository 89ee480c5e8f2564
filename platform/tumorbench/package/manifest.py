"""The model-package format: a folder with ``model.json`` (this module) and ``model.pt`` (``weights.py``).

Read and written without torch, so a Serve config's build step, the CLI and reports can
inspect packages cheaply.

Version policy: ``model.json`` carries ``format: "tumorbench-model/<N>"``. ``N`` changes with
any change of the schema (a field added, removed, renamed or reinterpreted), so a reader never
guesses. This tumorbench writes :data:`FORMAT_VERSION` and reads every version in
:data:`READABLE_VERSIONS` (older ones are migrated on read); a missing, malformed, unknown or
newer format is refused with an error naming the package and the version.
"""

from __future__ import annotations

import json
import platform as std_platform
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tumorbench.errors import DataError
from tumorbench.tasks import get_task

MANIFEST = "model.json"
WEIGHTS = "model.pt"
FORMAT_PREFIX = "tumorbench-model/"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_PREFIX}{FORMAT_VERSION}"
READABLE_VERSIONS = (1,)
_VERSIONED = ("tumorbench", "torch", "monai", "timm", "ray", "numpy", "scikit-learn")


class PackageError(DataError):
    """A model package that cannot be used: its path and the problem."""


def package_versions() -> dict[str, str]:
    """Versions of the packages a model package depends on."""
    versions = {"python": std_platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True)
class ModelManifest:
    """What a model package says about itself (``model.json``, format 1)."""

    name: str
    task: str
    model_kwargs: dict[str, Any]
    spatial_dims: int
    data_dims: int
    in_channels: int
    out_channels: int
    preprocess: dict[str, Any]
    class_names: list[str] | None = None
    positive_class: str | None = None
    channel_names: list[str] | None = None
    roi_size: list[int] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    epoch: int = -1
    versions: dict[str, str] = field(default_factory=package_versions)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    format: str = FORMAT

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise ValueError(f"a manifest is built at format {FORMAT}, not {self.format!r} (read_manifest migrates)")
        for name in ("class_names", "channel_names", "roi_size"):  # JSON has lists only: keep equality on read
            if isinstance(getattr(self, name), tuple):
                object.__setattr__(self, name, list(getattr(self, name)))
        _check_types(self)
        if self.spatial_dims not in (2, 3) or self.data_dims not in (2, 3):
            raise ValueError(f"spatial_dims and data_dims must be 2 or 3, got {self.spatial_dims}, {self.data_dims}")
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {self.in_channels}, {self.out_channels}")
        if self.class_names is not None and self.positive_class not in (None, *self.class_names):
            raise ValueError(f"positive_class {self.positive_class!r} is not one of class_names {self.class_names}")
        get_task(self.task)  # unknown tasks raise TaskError (a ValueError)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True, default=float)

    @property
    def servable(self) -> bool:
        """Whether Serve has an endpoint for the package's task."""
        return get_task(self.task).endpoint is not None


_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "task": (str,),
    "model_kwargs": (dict,),
    "spatial_dims": (int,),
    "data_dims": (int,),
    "in_channels": (int,),
    "out_channels": (int,),
    "preprocess": (dict,),
    "class_names": (list, type(None)),
    "positive_class": (str, type(None)),
    "channel_names": (list, type(None)),
    "roi_size": (list, type(None)),
    "data": (dict,),
    "split": (dict,),
    "metrics": (dict,),
    "epoch": (int,),
    "versions": (dict,),
    "created": (str,),
    "format": (str,),
}


def _check_types(manifest: ModelManifest) -> None:
    for item in fields(manifest):
        value, allowed = getattr(manifest, item.name), _TYPES[item.name]
        if isinstance(value, bool) or not isinstance(value, allowed):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise ValueError(f"field {item.name!r} must be {names}, got {type(value).__name__}")
    bad = sorted(k for k, v in manifest.metrics.items() if not isinstance(v, (int, float)))
    if bad:
        raise ValueError(f"metrics {bad} must be numbers")


def format_version(value: Any, where: str | Path) -> int:
    """The version number of a ``format`` string; refuses what this tumorbench cannot read."""
    match = re.fullmatch(re.escape(FORMAT_PREFIX) + r"(\d+)", value) if isinstance(value, str) else None
    if match is None:
        raise PackageError(
            where,
            f"unknown model package format {value!r} (this tumorbench reads "
            f"{', '.join(FORMAT_PREFIX + str(v) for v in READABLE_VERSIONS)})",
        )
    version = int(match.group(1))
    if version > FORMAT_VERSION:
        raise PackageError(
            where,
            f"model package format {value} is newer than this tumorbench reads ({FORMAT}); "
            "upgrade tumorbench to use this package",
        )
    if version not in READABLE_VERSIONS:
        raise PackageError(
            where,
            f"model package format {value} is no longer readable (this tumorbench reads "
            f"{', '.join(FORMAT_PREFIX + str(v) for v in READABLE_VERSIONS)})",
        )
    return version


def _migrate(raw: dict[str, Any], version: int) -> dict[str, Any]:
    """Bring a manifest of an older readable version to the current one (format 1 is current)."""
    return raw | {"format": FORMAT}


def read_manifest(directory: str | Path) -> ModelManifest:
    """Read, check the format version of, migrate and validate a package's ``model.json``.

    Raises:
        PackageError: Missing, unreadable, unknown or newer format, or invalid manifest.
    """
    path = Path(directory) / MANIFEST
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PackageError(path, "not a tumorbench model package (no model.json)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(path, f"unreadable model manifest ({exc})") from exc
    if not isinstance(raw, dict):
        raise PackageError(path, "invalid model manifest: not a JSON object")
    if "format" not in raw:
        raise PackageError(path, "not a tumorbench model package (model.json has no 'format')")
    version = format_version(raw["format"], path)
    try:
        return ModelManifest(**_migrate(raw, version))
    except (TypeError, ValueError) as exc:
        raise PackageError(path, f"invalid model manifest: {exc}") from exc


def write_manifest(directory: str | Path, manifest: ModelManifest) -> Path:
    """Write ``model.json`` into ``directory`` (made if needed); returns its path."""
    path = Path(directory) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(manifest.to_json())
    return path


def is_package(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding ``model.json``."""
    return (Path(path) / MANIFEST).is_file()
