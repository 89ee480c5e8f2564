"""The record of a run that a user watches: ``history.csv``, TensorBoard events, a line per epoch.

Ray Train V2 writes only checkpoints for a standalone run, so this callback,
run by the Train controller after every report, writes the history and the
events; the driver follows the history and prints each new epoch.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from ray.train import UserCallback

from tumorbench.tasks import get_task


def _fmt(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "nan" if math.isnan(number) else f"{number:.4f}"


def _true(value: Any) -> bool:
    return value is True or str(value) == "True"


def format_epoch(row: dict[str, Any], task: str) -> str:
    """The console line of one epoch (``row`` from a report or from ``history.csv``)."""
    shown = " ".join(f"{k}={_fmt(row[k])}" for k in get_task(task).shown if k in row)
    speed = float(row.get("images_per_second") or 0)
    loss = f"loss={_fmt(row['train_loss'])}  " if "train_loss" in row else ""  # a GAN has two, in ``shown``
    return (
        f"[tumorbench] epoch {int(float(row.get('epoch', -1))):3d}  {loss}"
        f"{shown}  {speed:.1f} img/s{'  *best*' if _true(row.get('improved')) else ''}"
        f"{'  early stop' if _true(row.get('early_stop')) else ''}"
    )


def _add_sample_grid(writer, checkpoint, epoch: int) -> None:
    """The GAN's sample grid of this epoch (``samples.png`` in its checkpoint) as a TensorBoard image."""
    import numpy as np
    from PIL import Image

    with checkpoint.as_directory() as directory:
        path = Path(directory) / "samples.png"
        if path.exists():
            writer.add_image("samples", np.asarray(Image.open(path).convert("RGB")), epoch, dataformats="HWC")


class EpochLogger(UserCallback):
    """Keeps ``history.csv`` and TensorBoard scalars under ``out`` (the driver prints from the history).

    ``fold_outs``: a trial's run trains several folds; each report's ``fold`` picks its folder (fold-end
    summaries, ``fold_end``, are not epochs and are skipped).
    """

    def __init__(self, out: str | Path, task: str, fold_outs: dict[int, str] | None = None):
        self.out = str(out)
        self.task = get_task(task)
        self.fold_outs = dict(fold_outs or {})
        self._writers: dict[str, Any] = {}

    def _tensorboard(self, out: str):
        if out not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            for writer in self._writers.values():  # one fold at a time: the finished ones' files are closed
                writer.close()
            self._writers = {out: SummaryWriter(log_dir=str(Path(out) / "tensorboard"))}
        return self._writers[out]

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        row = {k: v for k, v in metrics[0].items() if isinstance(v, (int, float, bool, str))}
        if row.get("fold_end"):
            return
        out = self.fold_outs.get(int(row.get("fold", -1)), self.out)
        epoch = int(row.get("epoch", -1))
        self._append_history(out, row)
        writer = self._tensorboard(out)
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                validated = key in self.task.shown and self.task.rankable  # GAN losses are training losses
                writer.add_scalar(f"{'val' if validated else 'train'}/{key}", value, epoch)
        if getattr(self.task, "logs_samples", False) and checkpoint is not None:
            _add_sample_grid(writer, checkpoint, epoch)
        writer.flush()

    def _append_history(self, out: str, row: dict[str, Any]) -> None:
        path = Path(out) / "history.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        fields = list(row) if new else next(csv.reader(path.open()))
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
