"""Database locations as text: which targets are URLs, a URL without its password, a SQLite
target's file. Pure string functions, at the bottom so settings and the store share them."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def is_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://", "sqlite://"))


def redacted(url: str) -> str:
    """A database URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def sqlite_path(target: str) -> Path | None:
    """The file of a SQLite target (a plain path or sqlite:///path), None for in-memory."""
    if target.startswith("sqlite://"):
        target = target[len("sqlite://"):]
        if target.startswith("/") and not target.startswith("//"):
            target = target[1:] if re.match(r"^/[A-Za-z]:", target) else target
    return None if target in ("", ":memory:", "/:memory:") else Path(target)
