"""The comparison study's ``report.html`` and its figures.

:func:`write_report` turns a results directory into one self-contained HTML page;
:func:`write_overlay` draws the prediction-vs-truth PNGs the study stores in
``overlays/`` (pick the cases with :func:`extreme_cases`).
"""

from __future__ import annotations

from tumorbench.reporting.figures import extreme_cases, write_overlay
from tumorbench.reporting.report import write_report

__all__ = ["extreme_cases", "write_overlay", "write_report"]
