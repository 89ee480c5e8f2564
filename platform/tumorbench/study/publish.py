"""Where Serve finds a study's model: ``runs/best/<task>`` links to the last study's ``<out>/best/<task>``.

``serve/config.yaml`` serves ``runs/best`` by default, and a study writes its package under its own
results folder; the link joins the two. The package is the best *deep* model's best fold: baselines
are not packaged, so when a baseline leads the leaderboard the note says so instead of calling the
package the winner.
"""

from __future__ import annotations

import os
from pathlib import Path

SERVE_ROOT = Path("runs") / "best"


def best_note(leader: str, best: dict) -> str:
    """The package's note, saying it is the best deep model and naming the leaderboard's leader when it is not."""
    note = f"{best['note']}; " if best.get("note") else ""
    note += f"the best deep-learning model ({best['model']}); baselines are not packaged"
    if leader != best["model"]:
        note += f"; the leaderboard's first place is {leader}, which this package is not"
    return note


def link_best(package: Path, task: str, root: Path = SERVE_ROOT) -> Path | None:
    """Point ``root/<task>`` at ``package`` (a symlink, replaced each study); ``None`` where a real folder is there."""
    link = root / task
    root.mkdir(parents=True, exist_ok=True)
    if link.exists() and not link.is_symlink():
        print(f"[tumorbench] {link} is a folder, not a link: left as it is (serve {package} directly)", flush=True)
        return None
    tmp = root / f".{task}.tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(package.resolve(), target_is_directory=True)
    os.replace(tmp, link)  # atomic: a running `serve` never sees a missing link
    return link
