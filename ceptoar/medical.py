"""Medical relevance: structural signals from the normalizers plus keyword lists from feeds/.

Suggestions only: they become the `medical-suggested` tag, which the analyst confirms or removes.
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from pathlib import Path

from ceptoar.paths import project_file

TAG = "medical-suggested"


@lru_cache(maxsize=4)
def _patterns(path: str) -> tuple[list[str], re.Pattern | None]:
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    ja = [w for w in data.get("ja", {}).get("keywords", []) if w]
    en = [w for w in data.get("en", {}).get("keywords", []) if w]
    # English terms on word boundaries: "PACS" must not match "impacts".
    en_re = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(re.escape(w) for w in en) + r")(?![A-Za-z0-9])", re.IGNORECASE) if en else None
    return ja, en_re


def keyword_signals(texts: list[str], path: Path | None = None) -> list[str]:
    ja, en_re = _patterns(str(path or project_file("feeds/medical_keywords.toml")))
    blob = "\n".join(t for t in texts if t)
    hits = [w for w in ja if w in blob]
    if en_re:
        hits += sorted({m.group(1).lower() for m in en_re.finditer(blob)})
    return [f"keyword:{h}" for h in dict.fromkeys(hits)]


def signals(report: dict) -> list[str]:
    structural = list(report.get("x_ceptoar_medical_signals") or [])
    csaf = report.get("x_ceptoar_csaf") or {}
    texts = [report.get("name", ""), report.get("description", ""), *csaf.get("products", []),
             *[p.get("product") or "" for p in report.get("x_ceptoar_products") or []]]
    return structural + keyword_signals(texts)
