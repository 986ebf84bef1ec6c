"""What every repository of the store shares: the Repository base, timestamps, chunking, JSON
text, SQL placeholders and schema scripts split into statements. The facade (`ceptoar.store`) and
each repository import from here, so no repository reaches back into the package it belongs to."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ceptoar.store import Store


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chunks(items: list, n: int = 500):
    for i in range(0, len(items), n):
        yield items[i:i + n]


_encode = json.JSONEncoder(ensure_ascii=False).encode


def dump(v) -> str:
    """JSON text of a stored value (lists of strings and dicts, Japanese kept readable)."""
    return "[]" if v == [] else _encode(v)


_decode = json.JSONDecoder().decode


def load(text: str | None, empty=None):
    """A stored JSON value; `empty` (a fresh [] by default) for NULL. The empty list and object,
    most of the stored lists, are answered without the parser."""
    if text is None or text == "[]":
        return [] if empty is None else empty
    return {} if text == "{}" else _decode(text)


def like_escaped(text: str) -> str:
    """`text` as a literal inside a LIKE pattern (ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def marks(n: int) -> str:
    return ",".join("?" * n)


def statements(script: str) -> list[str]:
    """Split a schema script on ';' outside trigger bodies."""
    out, buf = [], []
    for line in script.splitlines():
        buf.append(line)
        text = "\n".join(buf).strip()
        if text.endswith(";") and (not text.upper().startswith("CREATE TRIGGER") or text.upper().endswith("END;")):
            out.append(text)
            buf = []
    return out


class Repository:
    """One room of the store; reaches SQL only through the facade."""

    def __init__(self, store: Store):
        self.store = store
