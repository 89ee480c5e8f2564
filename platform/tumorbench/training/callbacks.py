"""Driver-side record of a run: a progress line per epoch, ``history.csv`` and TensorBoard events.

Ray Train V2 writes only checkpoints for a standalone run, so this callback,
run by the Train controller after every report, writes what a user watches.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from ray.train import UserCallback

_SHOWN = {
    "classification": ("accuracy", "auc", "f1", "sensitivity", "specificity"),
    "segmentation": ("dice", "dice_sd", "iou", "hd95"),
    "gan": ("d_loss", "g_loss"),
}


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.4f}"


class EpochLogger(UserCallback):
    """Prints one line per epoch and keeps ``history.csv`` and TensorBoard scalars under ``out``."""

    def __init__(self, out: str | Path, task: str, info: dict[str, Any] | None = None, *, verbose: bool = True):
        self.out = str(out)
        self.task = task
        self.info = info or {}
        self.verbose = verbose
        self._writer = None

    def _tensorboard(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(Path(self.out) / "tensorboard"))
        return self._writer

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        row = {k: v for k, v in metrics[0].items() if isinstance(v, (int, float, bool, str))}
        epoch = int(row.get("epoch", -1))
        self._append_history(row)
        writer = self._tensorboard()
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(f"{'val' if key in _SHOWN[self.task] else 'train'}/{key}", value, epoch)
        writer.flush()
        if self.verbose:
            shown = " ".join(f"{k}={_fmt(row[k])}" for k in _SHOWN[self.task] if k in row)
            print(f"[tumorbench] epoch {epoch:3d}  loss={_fmt(row.get('train_loss'))}  {shown}  "
                  f"{row.get('images_per_second', 0):.1f} img/s"
                  f"{'  *best*' if row.get('improved') else ''}{'  early stop' if row.get('early_stop') else ''}",
                  flush=True)

    def _append_history(self, row: dict[str, Any]) -> None:
        path = Path(self.out) / "history.csv"
        new = not path.exists()
        fields = list(row) if new else next(csv.reader(path.open()))
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
