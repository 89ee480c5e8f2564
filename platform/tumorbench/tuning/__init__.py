"""Hyperparameter search on Ray Tune: each trial cross-validates one configuration through Ray Train."""

from __future__ import annotations

from tumorbench.tuning.space import SearchSpaceError, apply_params, validate_space

__all__ = ["SearchSpaceError", "apply_params", "validate_space"]
