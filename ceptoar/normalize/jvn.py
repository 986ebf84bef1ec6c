"""JVN iPedia / MyJVN RSS 1.0 with mod_sec (and MyJVN's Atom alert list).

feedparser keeps only the last `sec:references`, `sec:cvss` and `sec:cpe` of an item and drops
their text, so the whole item is read here with defusedxml, under both mod_sec namespace URIs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from xml.etree.ElementTree import Element

from ceptoar.model import CVE_RE, Source, find_cves, tlp_max, tlp_name
from ceptoar.normalize import (
    Entries,
    Entry,
    FeedError,
    advisory,
    date_field,
    each_item,
    score,
    to_json,
    xmlsafe,
)

RSS = "{http://purl.org/rss/1.0/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
DC = "{http://purl.org/dc/elements/1.1/}"
DCTERMS = "{http://purl.org/dc/terms/}"
ATOM = "{http://www.w3.org/2005/Atom}"
SEC_NAMESPACES = ("{http://jvn.jp/rss/mod_sec/}", "{http://jvn.jp/rss/mod_sec/3.0/}")


def _sec(el: Element, name: str) -> list[Element]:
    return [c for ns in SEC_NAMESPACES for c in el.iter(ns + name)]


def _feed_tlp(root: Element) -> str | None:
    for handling in _sec(root, "handling"):
        for ms in handling.iter():
            color = ms.get("color")
            if color:
                try:
                    return tlp_name(color)
                except ValueError:
                    return None
    return None


def item_texts(text: str, name: str = "item") -> list[str]:
    """Each `<item …>…</item>` (or another element without a prefix) of the document as written,
    in one linear pass (a lazy regex over the document is quadratic when items are not closed)."""
    out, i, n = [], 0, len(name) + 1
    while True:
        start = text.find(f"<{name}", i)
        if start < 0:
            return out
        if start + n < len(text) and text[start + n] not in " \t\r\n>":
            i = start + n
            continue
        end = text.find(f"</{name}>", start)
        if end < 0:
            return out
        out.append(text[start:end + n + 2])
        i = end + n + 2


_ROOT_START = re.compile(r"<(?![?!])([^\s>/]+)[^>]*>")
_HANDLING = re.compile(r"<((?:[\w.-]+:)?)handling\b.*?</\1handling>", re.S)


def envelope(text: str) -> Callable[[str], str]:
    """Wraps one item's text in the document's own root element (its namespace declarations) and
    the document-wide handling marking, so the stored entry parses alone, by this module."""
    m = _ROOT_START.search(text)
    if not m:
        return lambda item: item
    handling = _HANDLING.search(text)
    head = m.group(0) + (handling.group(0) if handling else "")
    tail = f"</{m.group(1)}>"
    return lambda item: head + item + tail


def parse(raw: bytes, source: Source, charset: str | None = None) -> Entries:
    text = xmlsafe.decode(raw, charset)
    root = xmlsafe.parse_text(text)
    tlp = tlp_max(source.tlp, _feed_tlp(root))
    out = Entries()
    if root.tag == RDF + "RDF":
        items = list(root.iter(RSS + "item"))
        # Provenance: each item's own text, cut from the document (ElementTree cannot give it back).
        wrap = envelope(text)
        texts = [wrap(t) for t in item_texts(text)]
        if len(texts) != len(items):
            texts = [None] * len(items)
        return each_item(list(zip(items, texts, strict=True)), _describe,
                         lambda pair: _rss_item(pair[0], source, tlp, pair[1], out.warnings), out)
    if root.tag == ATOM + "feed":
        entries = list(root.iter(ATOM + "entry"))
        wrap = envelope(text)
        texts = [wrap(t) for t in item_texts(text, "entry")]
        if len(texts) != len(entries):
            texts = [None] * len(entries)
        return each_item(list(zip(entries, texts, strict=True)), lambda i, pair: f"entry {i}",
                         lambda pair: _atom_entry(pair[0], source, tlp, out.warnings, pair[1]), out)
    raise FeedError(f"not a JVN RDF/Atom feed (root element <{xmlsafe.local(root.tag)}>)")


def _describe(i: int, pair) -> str:
    ident = "".join(xmlsafe.text(e) for e in _sec(pair[0], "identifier")[:1])
    return f"item {i}" + (f" ({ident[:40]})" if ident else "")


def _raw(el: Element) -> str:
    """The element as JSON [tag, attributes, text, children], when its text cannot be cut out."""
    def tree(e: Element) -> list:
        return [e.tag, e.attrib, e.text or "", [tree(c) for c in e]]
    return to_json(tree(el))


def _rss_item(item: Element, source: Source, tlp: str, raw: str | None, warnings: list[str]) -> Entry:
    def child(path: str) -> str:
        return xmlsafe.text(item.find(path))

    link = child(RSS + "link") or item.get(RDF + "about", "")
    jvndb = "".join(xmlsafe.text(e) for e in _sec(item, "identifier")[:1])
    title, description = child(RSS + "title"), child(RSS + "description").replace("\r", "")
    where = jvndb or link or title[:40] or "an item"

    identifiers, references, cves, cwes = [], [], [], []
    for ref in _sec(item, "references"):
        rid, url = (ref.get("id") or "").strip(), xmlsafe.text(ref) or None
        src = (ref.get("source") or "").strip()
        if rid.upper().startswith("CWE-"):
            cwes.append(rid)
            identifiers.append((rid, url))
        elif CVE_RE.fullmatch(rid) and (src in ("CVE", "NVD") or rid.upper().startswith("CVE-")):
            cves.append(rid)
            if src == "CVE":
                identifiers.append((rid, url))
            elif url:  # NVD's page: a CVE-like external_id is only valid under source_name "cve"
                references.append({"source_name": src or "nvd", "description": rid, "url": url})
        elif find_cves(rid):  # a related document whose title lists CVEs: linked, not a CVE itself
            cves.extend(find_cves(rid))
            related = {"source_name": src or "reference", "description": rid[:500]}
            if url:
                related["url"] = url
            references.append(related)
        elif src == "JVN" or rid.upper().startswith(("JVN#", "JVNVU#", "JVNTA")):
            identifiers.append((rid, url))
        else:
            ref_dict = {"source_name": src or ref.get("title") or "reference"}
            if rid:
                ref_dict["external_id"] = rid
            if url:
                ref_dict["url"] = url
            if len(ref_dict) > 1:
                references.append(ref_dict)
    cvss = [
        {
            "version": c.get("version"),
            "score": score(c.get("score"), where, warnings),
            "severity": c.get("severity"),
            "vector": c.get("vector"),
            "type": c.get("type") or "Base",
            "source": "JVN",
        }
        for c in _sec(item, "cvss")
    ]
    cpes = [xmlsafe.text(c) for c in _sec(item, "cpe") if xmlsafe.text(c)]
    cpe_products = [
        {"cpe": xmlsafe.text(c), "vendor": c.get("vendor"), "product": c.get("product")}
        for c in _sec(item, "cpe")
        if xmlsafe.text(c)
    ]
    issued = child(DCTERMS + "issued") or child(DC + "date")
    modified = child(DCTERMS + "modified") or child(DC + "date")
    if not (jvndb or link):
        raise ValueError("it has neither an identifier nor a link")
    return advisory(
        source,
        jvndb or link,
        title=title,
        description=description,
        published=date_field(issued, where, "issued date", warnings),
        modified=date_field(modified, where, "modified date", warnings),
        url=link or None,
        own_id=jvndb or None,
        identifiers=identifiers,
        references=references,
        cves=cves or find_cves(title, description),
        cvss=cvss,
        cpes=cpes,
        cwes=cwes,
        tlp=tlp,
        lang=item.get("{http://www.w3.org/XML/1998/namespace}lang"),
        extra={"products": cpe_products},
        raw=raw or _raw(item),
    )


def _atom_entry(entry: Element, source: Source, tlp: str, warnings: list[str], raw: str | None = None) -> Entry:
    def child(name: str) -> str:
        return xmlsafe.text(entry.find(ATOM + name))

    link_el = entry.find(ATOM + "link")
    link = link_el.get("href") if link_el is not None else None
    eid, title, summary = child("id"), child("title"), child("summary")
    items = [
        {"title": xmlsafe.text(i.find(ns + "title")), "identifier": xmlsafe.text(i.find(ns + "identifier")),
         "link": (i.find(ns + "link").get("href") if i.find(ns + "link") is not None else None)}
        for ns in SEC_NAMESPACES for i in entry.iter(ns + "item")
    ]
    text_all = " ".join([title, summary, *[i["title"] for i in items]])
    where = eid or link or title[:40] or "an entry"
    return advisory(
        source,
        eid or link or title,
        title=title,
        description=summary,
        published=date_field(child("published"), where, "published date", warnings),
        modified=date_field(child("updated"), where, "updated date", warnings),
        url=link,
        own_id=eid or None,
        cves=find_cves(text_all),
        cpes=[xmlsafe.text(c) for c in _sec(entry, "cpe") if xmlsafe.text(c)],
        tlp=tlp,
        extra={"items": items},
        raw=raw or _raw(entry),
    )
