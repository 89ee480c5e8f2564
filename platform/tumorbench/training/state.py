"""What a training run carries from epoch to epoch besides weights and optimizer (shared by every task's loop)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LoopState:
    """What resuming needs besides weights and optimizer (saved as ``vars(state)`` in the training state)."""

    epoch: int = -1
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def update(self, value: float, epoch: int, order: str) -> bool:
        """Record an epoch's primary metric; True when it is the best so far."""
        # NaN never improves; inf (HD95 of a missed tumour) is a real, worst value that a later epoch can beat.
        better = self.best is None or (value > self.best if order == "max" else value < self.best)
        if better and not np.isnan(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False
