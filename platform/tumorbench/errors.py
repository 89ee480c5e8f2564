"""Errors that name the offending file and the problem."""

from __future__ import annotations

from pathlib import Path


class TumorbenchError(Exception):
    """Base class of every error tumorbench raises on purpose."""


class DataError(TumorbenchError, ValueError):
    """A data file or folder that cannot be used, with its path and the reason.

    Args:
        path: The file or folder at fault.
        problem: What is wrong with it, in words a user can act on.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # Rebuild from (path, problem): Ray pickles errors raised in workers back to the driver.
        return type(self), (self.path, self.problem)
