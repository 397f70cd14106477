"""A self-contained HTML report: tables and figures (PNG files next to ``report.html``, linked by ``<img src>``).

The page carries a tiny script that, once loaded, records how many images decoded (``data-images-loaded`` /
``data-images-total`` on ``<body>``) so a headless browser test can check the report really renders.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionflows.io import atomic_write_text

__all__ = ["Report", "Section", "render_table_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #333;padding-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{border:1px solid #bbb;padding:.3em .6em;
text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.6em;vertical-align:top;text-align:center}
figure img{max-width:100%;border:1px solid #ddd;image-rendering:pixelated}
figcaption{font-size:.85em;color:#555;max-width:520px}.note{color:#555;font-size:.92em}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-loaded', String(ok));
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-tables', String(document.getElementsByTagName('table').length));
});
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:  # NaN
            return "—"
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    return html.escape(str(v))


def render_table_html(rows: list[dict[str, Any]], columns: list[str] | None = None, caption: str = "") -> str:
    if not rows:
        return ""
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class Section:
    title: str
    parts: list[str] = field(default_factory=list)

    def text(self, text: str) -> Section:
        self.parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def note(self, text: str) -> Section:
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')
        return self

    def table(self, rows: list[dict[str, Any]], columns: list[str] | None = None, caption: str = "") -> Section:
        self.parts.append(render_table_html(rows, columns, caption))
        return self

    def figure(self, src: str, caption: str = "", width: int | None = None) -> Section:
        style = f' style="width:{width}px"' if width else ""
        self.parts.append(
            f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption or src)}"{style}>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
        return self


class Report:
    """Collects sections and writes ``report.html`` atomically; image paths are made relative to the report."""

    def __init__(self, title: str, root: str | os.PathLike) -> None:
        self.title = title
        self.root = Path(root)
        self.sections: list[Section] = []
        self.intro: list[str] = []

    def section(self, title: str) -> Section:
        s = Section(title)
        self.sections.append(s)
        return s

    def rel(self, path: str | os.PathLike) -> str:
        return Path(os.path.relpath(Path(path).resolve(), self.root.resolve())).as_posix()

    def render(self) -> str:
        toc = "".join(f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(self.sections))
        body = "".join(
            f'<h2 id="s{i}">{html.escape(s.title)}</h2>' + "".join(s.parts) for i, s in enumerate(self.sections)
        )
        intro = "".join(f"<p>{html.escape(t)}</p>" for t in self.intro)
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style><script>{_SCRIPT}</script></head>"
            f"<body><h1>{html.escape(self.title)}</h1>{intro}<ul>{toc}</ul>{body}</body></html>\n"
        )

    def write(self, name: str = "report.html") -> Path:
        path = self.root / name
        atomic_write_text(path, self.render())
        return path
