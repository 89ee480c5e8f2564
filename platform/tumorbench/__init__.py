"""tumorbench: train, tune, compare and serve tumor detectors on Ray."""

from __future__ import annotations

__version__ = "0.1.0"
