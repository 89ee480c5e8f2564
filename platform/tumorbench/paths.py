"""Where things are when tumorbench runs from a source checkout, and where the shared data sets live."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA_ENV = "TUMORBENCH_SHARED_DATA"


def checkout_root() -> Path | None:
    """The repository root when tumorbench is imported from a checkout (editable install, PYTHONPATH), else None."""
    root = Path(__file__).resolve().parents[2]  # <root>/platform/tumorbench/paths.py
    return root if (root / "pyproject.toml").is_file() and (root / "platform" / "tumorbench").is_dir() else None


def shared_data() -> Path:
    """The shared data folder: ``$TUMORBENCH_SHARED_DATA``; else ``../shared/data`` beside a checkout, else from
    the working directory (an installed tumorbench run from the repository root finds the same folder)."""
    if os.environ.get(SHARED_DATA_ENV):
        return Path(os.environ[SHARED_DATA_ENV]).expanduser()
    root = checkout_root()
    return root.parent / "shared" / "data" if root is not None else Path("..") / "shared" / "data"
