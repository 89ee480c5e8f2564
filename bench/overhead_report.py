"""What ``bench/train_overhead.py`` prints: its table of the modes, and the ratios between them."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from rounds import median_ratio

if TYPE_CHECKING:  # the modes' records; only their attributes are read here
    from train_overhead import ModeResult


def format_table(results: list[ModeResult], runs: dict[str, list[float]] | None = None) -> str:
    """The results as a Markdown table; speed-up is steady img/s over the plain loop's.

    ``runs``: every run's img/s per mode (``--repeats``), shown in a last column.
    """
    ref = next((r.steady_images_per_s for r in results if r.mode == "plain"), None)
    head = (
        "mode",
        "processes x threads",
        "start-up s",
        "steady img/s",
        "speed-up vs plain",
        "peak RSS MB (sum)",
        "ray.init s",
        "teardown s",
        "Ray daemons MB",
    ) + (("img/s of each run",) if runs else ())
    rows = [head, tuple("---" for _ in head)]

    def num(value, spec):
        return "-" if value is None else format(value, spec)

    for r in results:
        rows.append(
            (
                r.mode,
                f"{r.workers} x {r.threads}",
                f"{r.startup_s:.1f}",
                f"{r.steady_images_per_s:.1f}",
                f"{r.steady_images_per_s / ref:.2f}x" if ref else "n/a",
                f"{r.peak_rss_mb:.0f}",
                num(r.ray_init_s, ".1f"),
                num(r.teardown_s, ".1f"),
                num(r.ray_daemons_hwm_mb, ".0f"),
            )
            + ((", ".join(f"{v:.1f}" for v in runs[r.mode]),) if runs else ())
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def ratios(results: list[ModeResult], rounds: list[dict[str, ModeResult]] | None = None) -> list[str]:
    """``a / b`` lines for every pair the brief asks about that was run.

    ``rounds`` (``--repeats`` > 1): each ratio is the median of the ratios within each round, with the
    sign test's interval for that median from 6 rounds on (the machine's noise, in the ratio's units).
    """
    rounds = rounds or [{r.mode: r for r in results}]
    lines = []
    for a, b in (("ray-1", "plain"), ("ray-2", "plain"), ("ray-2", "ray-1")):
        pairs = [(one[a], one[b]) for one in rounds if a in one and b in one]
        if not pairs:
            continue

        def median(attr: str, pairs=pairs) -> float:
            return statistics.median(getattr(x, attr) / getattr(y, attr) for x, y in pairs)

        each = [x.steady_images_per_s / y.steady_images_per_s for x, y in pairs]
        lines.append(
            f"{a} / {b}: steady img/s {median_ratio(each)}, "
            f"start-up {median('startup_s'):.2f}x, peak RSS {median('peak_rss_mb'):.2f}x"
        )
    return lines
