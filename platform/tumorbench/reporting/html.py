"""HTML building blocks of ``report.html``: the page's CSS, escaped cells and numbers, tables, inline images."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from matplotlib.figure import Figure

from tumorbench.reporting.figures import figure_png

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1300px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;white-space:normal;vertical-align:bottom}td.t,th.t{text-align:left}
td.t{white-space:normal;overflow-wrap:break-word}tr.sig td{background:#eef7ee}
.note{color:#555;font-size:.9em;max-width:60em}.fig{margin:.8em 0}.fig img{max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:1em}.grid figure{margin:0;max-width:100%}
figcaption{font-size:.85em;color:#444}.scroll{overflow-x:auto}
"""


def esc(x: Any) -> str:
    return html.escape(str(x))


def num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return esc(x)
    if math.isnan(v):
        return "n/a"
    return "inf" if math.isinf(v) else f"{v:.{digits}f}"


def pvalue(x: Any) -> str:
    v = float(x)
    if math.isnan(v):
        return "n/a"
    return f"{v:.1e}" if v < 1e-4 else f"{v:.4f}"


def html_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, text_cols: int = 1, row_class: Sequence[str] | None = None
) -> str:
    """An HTML table; cells are already escaped/formatted; the first ``text_cols`` align left."""
    head = "".join(f'<th class="t">{h}</th>' if i < text_cols else f"<th>{h}</th>" for i, h in enumerate(header))
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{row_class[k]}"' if row_class and row_class[k] else ""
        cells = "".join(f'<td class="t">{c}</td>' if i < text_cols else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def img_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def figure_tag(fig: Figure, alt: str) -> str:
    return f'<div class="fig">{img_tag(figure_png(fig), alt)}</div>'


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(d, dict):
        return [kv for k, v in d.items() for kv in _flatten(v, f"{prefix}{k}." if prefix or k else "")]
    if isinstance(d, list) and all(not isinstance(x, (dict, list)) for x in d):
        return [(prefix.rstrip("."), ", ".join(map(str, d)))]
    return [(prefix.rstrip("."), json.dumps(d) if isinstance(d, list) else str(d))]


def key_values(title: str, data: dict) -> str:
    if not data:
        return ""
    rows = [[esc(k), esc(v)] for k, v in _flatten(data)]
    return f"<h2>{esc(title)}</h2>{html_table(['key', 'value'], rows, text_cols=2)}"
