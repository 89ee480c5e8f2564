"""Which model packages an application serves: ``models`` entries -> names and package folders.

Package folders, folders of packages and training runs are found by :mod:`tumorbench.package`
(torch-free, so a Serve config's build step stays cheap); every manifest is validated here,
before any Ray work starts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tumorbench.package import PackageError, find_packages, read_manifest
from tumorbench.paths import checkout_root


def resolve_packages(entries: list[str]) -> dict[str, Path]:
    """Model names -> package folders, from ``PATH``, ``NAME=PATH`` or ``${VAR:-default}`` entries.

    Raises:
        PackageError: A package that cannot be read (unknown or newer format, invalid manifest)
            or whose task cannot be served.
    """
    found: dict[str, Path] = {}
    for entry in (path for item in entries for path in _expand(item)):
        name, _, raw = entry.rpartition("=") if "=" in entry else ("", "", entry)
        for package in find_packages(_existing(raw)):
            manifest = read_manifest(package)
            if not manifest.servable:
                raise PackageError(package, f"a {manifest.task} package cannot be served")
            layout = manifest.data.get("layout")
            default = f"{manifest.name}_{layout}" if layout else manifest.name
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
    """A relative path is taken from the working directory, else from the checkout's root (``runs/best``)."""
    path, root = Path(raw).expanduser(), checkout_root()
    candidates = (path, root / path) if not path.is_absolute() and root is not None else (path,)
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    where = f"the working directory or {root}" if root is not None else "the working directory"
    raise FileNotFoundError(f"model package {raw!r} not found (relative paths: from {where})")
