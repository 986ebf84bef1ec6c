"""Medical relevance: structural signals from the normalizers plus keyword lists from feeds/.

Suggestions only: they become the `medical-suggested` tag, which the analyst confirms or removes.
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from pathlib import Path

from ceptoar.core import extensions
from ceptoar.core.model import listed
from ceptoar.core.paths import project_file

TAG = "medical-suggested"


@lru_cache(maxsize=4)
def _patterns(path: str) -> tuple[list[str], list[tuple[str, re.Pattern]]]:
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    ja = [w for w in data.get("ja", {}).get("keywords", []) if w]
    # English terms must stand on word boundaries ("PACS" is not in "impacts"); a cheap substring
    # test of the lower-cased text comes first, the boundary check only on a hit.
    en = [(w.lower(), re.compile(r"(?<![a-z0-9])" + re.escape(w.lower()) + r"(?![a-z0-9])"))
          for w in data.get("en", {}).get("keywords", []) if w]
    return ja, en


@lru_cache(maxsize=1)
def _default_path() -> str:
    return str(project_file("feeds/medical_keywords.toml"))


def keyword_signals(texts: list[str], path: Path | None = None) -> list[str]:
    ja, en = _patterns(str(path) if path else _default_path())
    blob = "\n".join(t for t in texts if t)
    lower = blob.lower()
    hits = [w for w in ja if w in blob] + [w for w, rx in en if w in lower and rx.search(lower)]
    return [f"keyword:{h}" for h in dict.fromkeys(hits)]


def signals(report: dict) -> list[str]:
    """Why a report looks medical: structural signals from its normalizer, then keywords in its text
    (any property of the wrong shape, as a producer's report may have, is simply not read)."""
    hub = extensions.props(report, extensions.ADVISORY)
    structural = [s for s in listed(hub.get("medical_signals")) if isinstance(s, str)]
    csaf = hub.get("csaf") if isinstance(hub.get("csaf"), dict) else {}
    texts = [report.get("name"), report.get("description"), *listed(csaf.get("products")),
             *[p.get("product") for p in listed(hub.get("products")) if isinstance(p, dict)]]
    return structural + keyword_signals([t for t in texts if isinstance(t, str)])
