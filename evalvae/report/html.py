"""The self-contained HTML report: one file, every image embedded as a data URI."""

from __future__ import annotations

import base64
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


def data_uri(content: bytes | Path | str, mime: str = "image/png") -> str:
    """``data:`` URI of PNG bytes or of a file's bytes."""
    raw = content if isinstance(content, bytes) else Path(content).read_bytes()
    return f"data:{mime};base64," + base64.b64encode(raw).decode("ascii")


def render_html(context: dict) -> str:
    """Render ``templates/report.html.j2`` with the report's context (see :func:`write_report`)."""
    env = Environment(
        loader=PackageLoader("evalvae.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["data_uri"] = data_uri
    return env.get_template("report.html.j2").render(**context)
