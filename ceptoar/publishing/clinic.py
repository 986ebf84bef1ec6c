"""What clinics read of an advisory besides its source's words: the analyst's plain-language
text (a triage decision) and JVN's Japanese entry for its CVEs.

JVN's entry is looked up when the advisory is published and carried in the published report (the
`clinic` part of the hub's extension), so digests, flash alerts and TAXII readers all read the
same pinned text. Only public JVN entries are taken (TLP:CLEAR from a CLEAR source, neither
rejected nor revoked): the text can go out at any TLP the advisory is served at.
"""

from __future__ import annotations

import html
import re

from ceptoar.core import extensions
from ceptoar.core.model import source_origin
from ceptoar.store import Store

OVERVIEW_MAX = 400
_ITEM = re.compile(r"<\s*li\b[^>]*>", re.I)
_BREAK = re.compile(r"<\s*(?:br|/?p|/?ul|/?ol|/?div)\b[^>]*>", re.I)
_TAG = re.compile(r"<[^>]*>")


def plain(text: str | None, limit: int | None = None) -> str:
    """JVN's text (which carries list markup) as plain lines: list items as '・', other tags
    dropped, entities read, blank runs squeezed; cut after a sentence near `limit` characters."""
    if not text:
        return ""
    text = _ITEM.sub("\n・", text)
    text = _BREAK.sub("\n", text)
    text = html.unescape(_TAG.sub("", text))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    text = "\n".join(line for line in lines if line)
    if limit and len(text) > limit:
        cut = text.rfind("。", 0, limit)
        text = text[:cut + 1] if cut > limit // 3 else text[:limit].rstrip() + "…"
    return text


# US-federal obligations in a source's words (CISA writes KEV's required actions for federal
# agencies): binding directives, agencies' networks, their due dates. No clinic can act on them.
_FEDERAL = re.compile(r"\b(?:BOD|ED)\s?\d{2}-\d{2}\b|\bfederal\b|\bFCEB\b|\bagenc(?:y|ies)\b|\bdue date\b|"
                      r"\bM-\d{2}-\d{2}\b|\bCISA(?:'s)? (?:instructions|guidance|mitigations)\b|"
                      r"\b(?:per|according to) CISA\b", re.IGNORECASE)
_BOD_CLAUSE = re.compile(r",? follow (?:applicable )?BOD \d{2}-\d{2} guidance for cloud services,?", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[])")


def for_clinics(text: str | None) -> str | None:
    """A source's English advice with what only US federal agencies must do taken out: the
    cloud-services BOD 22-01 clause, and every sentence about directives, agencies or their
    deadlines. None when nothing a clinic can do is left."""
    if not isinstance(text, str):
        return None
    kept = [s for s in _SENTENCE.split(_BOD_CLAUSE.sub("", " ".join(text.split()))) if s and not _FEDERAL.search(s)]
    return " ".join(kept).strip() or None


def jvn_entry(store: Store, row: dict) -> dict | None:
    """JVN's Japanese entry covering most of the advisory's CVEs (one with a solution preferred,
    then the newest), for an advisory whose own text is not Japanese."""
    cves = set(row.get("cves") or [])
    if not cves or row.get("lang") == "ja":
        return None
    best, best_key = None, None
    for cand in store.advisories.japanese_entries(sorted(cves), exclude=row["id"]):
        origin = source_origin(cand["source"])
        v = store.objects.latest([cand["source_report"]], origin).get(cand["source_report"])
        jvn = (extensions.prop(v.obj, "jvn", dict) if v else None) or {}
        solution = jvn.get("solution") if isinstance(jvn.get("solution"), str) else None
        covered = sorted(cves & set(cand["cves"]))
        key = (len(covered), solution is not None, cand["modified"] or "")
        if best_key is None or key > best_key:
            best_key = key
            best = {"id": cand["entry_key"], "title": cand["title"] or "", "overview": plain(cand["description"]),
                    "solution": plain(solution), "url": cand["url"] or "", "cves": covered}
    return {k: v for k, v in best.items() if v} if best else None
