"""Plain RSS 0.9x/1.0/2.0 and Atom (JPCERT/CC, IPA, NCO, MHLW): common fields through feedparser.

The body is first read with defusedxml so that hostile XML (entities, external references,
HTML pages, undecodable bytes) is refused before feedparser, which is lenient, sees it.
"""

from __future__ import annotations

import hashlib
import warnings

import feedparser

from ceptoar.model import Source, find_cves, find_identifiers, parse_date
from ceptoar.normalize import Entry, FeedError, advisory, to_json, xmlsafe

_FEED_ROOTS = {"RDF", "rss", "feed", "channel"}


def parse(raw: bytes, source: Source, charset: str | None = None) -> list[Entry]:
    root = xmlsafe.parse(raw, charset)
    if xmlsafe.local(root.tag) not in _FEED_ROOTS:
        raise FeedError(f"not an RSS/Atom feed (root element <{xmlsafe.local(root.tag)}>)")
    text = xmlsafe.decode(raw, charset)
    with warnings.catch_warnings():  # feedparser's notice about its updated→published fallback
        warnings.simplefilter("ignore", DeprecationWarning)
        parsed = feedparser.parse(text, sanitize_html=True, resolve_relative_uris=False)
        lang = (parsed.feed.get("language") or source.lang or "ja")[:2]
        return [_entry(e, source, lang) for e in parsed.entries]


def _entry(e: dict, source: Source, lang: str) -> Entry:
    title = e.get("title", "")
    description = e.get("summary", "") or ""
    link = e.get("link")
    key = e.get("id") or link or hashlib.sha256(title.encode()).hexdigest()[:32]
    published = parse_date(e.get("published") or e.get("dc_date") or e.get("updated"))
    modified = parse_date(e.get("updated") or e.get("published") or e.get("dc_date"))
    idents = [i for i in find_identifiers(title, description, link) if not i.startswith("CVE-")]
    raw = {k: e.get(k) for k in ("id", "title", "link", "summary", "published", "updated", "tags") if e.get(k)}
    return advisory(
        source,
        key,
        title=title,
        description=description,
        published=published,
        modified=modified,
        url=link,
        identifiers=[(i, None) for i in idents],
        cves=find_cves(title, description),
        lang=lang,
        raw=to_json(raw),
    )
