"""The hub's one way to make a Jinja environment: every value from data escaped in HTML templates
(`*.html` and `*.html.j2`; text templates are for plain-text mail), the `breaks` filter as the only
markup data ever gets, and no stat per render (templates ship with the code). Digests, incident
notices and posters, and the hub's web pages each load their own folder through it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup, escape


def _html(name: str | None) -> bool:
    return bool(name) and name.endswith((".html", ".html.j2"))


def breaks(text: str) -> Markup:
    """Text with its line breaks as <br> (escaped first)."""
    return Markup("<br>\n").join(escape(line) for line in (text or "").split("\n"))


@lru_cache(maxsize=8)
def environment(folder: Path, keep_trailing_newline: bool = True) -> Environment:
    env = Environment(loader=FileSystemLoader(folder), autoescape=_html, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=keep_trailing_newline, auto_reload=False)
    env.filters["breaks"] = breaks
    return env
