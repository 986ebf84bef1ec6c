"""Plain RSS 0.9x/1.0/2.0 and Atom (JPCERT/CC, IPA, NCO, MHLW): common fields through feedparser.

The body is first read with defusedxml so that hostile XML (entities, external references,
HTML pages, undecodable bytes) is refused before feedparser, which is lenient, sees it.
"""

from __future__ import annotations

import hashlib
import warnings
from html import escape

import feedparser

from ceptoar.core.model import Source, find_cves, find_identifiers
from ceptoar.normalize import Entries, Entry, FeedError, advisory, date_field, each_item, xmlsafe

_FEED_ROOTS = {"RDF", "rss", "feed", "channel"}


def parse(raw: bytes, source: Source, charset: str | None = None) -> Entries:
    text = xmlsafe.decode(raw, charset)
    root = xmlsafe.parse_text(text)
    if xmlsafe.local(root.tag) not in _FEED_ROOTS:
        raise FeedError(f"not an RSS/Atom feed (root element <{xmlsafe.local(root.tag)}>)")
    with warnings.catch_warnings():  # feedparser's notice about its updated→published fallback
        warnings.simplefilter("ignore", DeprecationWarning)
        parsed = feedparser.parse(text, sanitize_html=True, resolve_relative_uris=False)
        lang = str(parsed.feed.get("language") or source.lang or "ja")[:2]
        out = Entries()
        return each_item(parsed.entries, lambda i, e: f"item {i}" + (f" ({e.get('title', '')[:40]})" if
                                                                       e.get("title") else ""),
                         lambda e: _entry(e, source, lang, out.warnings), out)


def _entry(e: dict, source: Source, lang: str, notes: list[str]) -> Entry:
    title = e.get("title", "")
    description = e.get("summary", "") or ""
    link = e.get("link")
    published_text = e.get("published") or e.get("dc_date") or e.get("updated")
    # An item without link or guid is known by its content: two such items stay two advisories.
    key = e.get("id") or link or "content:" + hashlib.sha256(
        "\x1f".join([title, description, published_text or ""]).encode("utf-8", "surrogatepass")).hexdigest()[:32]
    where = link or title[:40] or "an item"
    published = date_field(published_text, where, "date", notes)
    modified = date_field(e.get("updated") or published_text, where, "updated date", notes)
    idents = [i for i in find_identifiers(title, description, link) if not i.startswith("CVE-")]
    raw = _atom_document({k: e.get(k) for k in ("id", "title", "link", "summary", "published", "updated", "tags")
                          if e.get(k)})
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
        raw=raw,
    )


def _atom_document(fields: dict) -> str:
    """What the hub keeps of a news item (feedparser's common fields), as a one-entry Atom feed
    that this module parses back to the same entry."""
    def el(name: str, value) -> str:
        return f"<{name}>{escape(str(value))}</{name}>" if value else ""

    tags = "".join(f'<category term="{escape(str(t.get("term")), quote=True)}"/>' for t in fields.get("tags") or []
                   if isinstance(t, dict) and t.get("term"))
    link = f'<link href="{escape(fields["link"], quote=True)}"/>' if fields.get("link") else ""
    return ('<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><entry>'
            + el("id", fields.get("id")) + el("title", fields.get("title")) + link
            + el("summary", fields.get("summary")) + el("published", fields.get("published"))
            + el("updated", fields.get("updated")) + tags + "</entry></feed>")
