"""JVN iPedia / MyJVN RSS 1.0 with mod_sec, MyJVN's Atom alert list, and VULDEF detail documents
(MyJVN `getVulnDetailInfo`, JVN iPedia's detail feeds: overview, impact, solution, affected
products with versions, CVSS vectors and references, in Japanese).

feedparser keeps only the last `sec:references`, `sec:cvss` and `sec:cpe` of an item and drops
their text, so the whole item is read here with defusedxml, under both mod_sec namespace URIs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

from ceptoar.core.model import CVE_RE, Source, find_cves, tlp_max, tlp_name
from ceptoar.normalize import (
    drift,
    Entries,
    Entry,
    EntryStream,
    FeedError,
    Known,
    advisory,
    date_field,
    scores,
    to_json,
    xmlsafe,
)

RSS = "{http://purl.org/rss/1.0/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
DC = "{http://purl.org/dc/elements/1.1/}"
DCTERMS = "{http://purl.org/dc/terms/}"
ATOM = "{http://www.w3.org/2005/Atom}"
VULDEF = "{http://jvn.jp/vuldef/}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
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


def item_texts(text, name="item"):
    """Each `<item …>…</item>` (or another element without a prefix) of the document as written,
    one at a time, in one linear pass (a lazy regex over the document is quadratic when items are
    not closed)."""
    # `text` and `name` both str, or both bytes (a UTF-8 feed read without decoding it whole)
    lt, slash, gt, after = ("<", "</", ">", " \t\r\n>") if isinstance(text, str) else (b"<", b"</", b">", b" \t\r\n>")
    opening, closing = lt + name, slash + name + gt
    i, n = 0, len(name) + 1
    while True:
        start = text.find(opening, i)
        if start < 0:
            return
        if start + n < len(text) and text[start + n:start + n + 1] not in after:
            i = start + n
            continue
        end = text.find(closing, start)
        if end < 0:
            return
        yield text[start:end + n + 2]
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
    return stream(raw, source, charset).read()


def stream(raw: bytes, source: Source, charset: str | None = None) -> EntryStream:
    """The entries of an RDF feed read as the parser goes (each item's elements let go once read:
    a yearly JVN iPedia feed is never held as one tree); a UTF-8 feed is read from its bytes
    without a decoded copy. Atom feeds, and documents with a DOCTYPE (read by defusedxml), whole."""
    text, codec = xmlsafe.decode_with_codec(raw, charset)
    root = _ROOT_START.search(text)
    if root is None or not root.group(1).endswith("RDF") or "<!DOCTYPE" in text or "<!doctype" in text:
        return EntryStream(lambda out: iter(_whole(text, source, out)))
    if xmlsafe.looks_like_html(text):
        raise FeedError("got an HTML page instead of a feed")
    wrap = envelope(text)
    # The feed's own marking, from its handling element (before the items, as JVN writes it).
    marking = _feed_tlp(xmlsafe.parse_text(wrap(""))) if _HANDLING.search(text) else None
    tlp = tlp_max(source.tlp, marking)
    if codec == "utf-8" and not raw.startswith(b"\xef\xbb\xbf"):
        del text  # checked; the bytes themselves are read from here on
        document, texts = raw, (t.decode("utf-8") for t in item_texts(raw, b"item"))
        start = 0
    else:
        document, texts = text, item_texts(text)
        start = text.find("?>") + 2 if text.lstrip("\ufeff").startswith("<?xml") else 0

    def entries(out: EntryStream):
        parser = XMLPullParser(events=("end",))
        n = 0
        try:
            for pos in range(start, len(document), 1 << 20):
                piece = document[pos:pos + (1 << 20)]
                parser.feed(piece if isinstance(piece, (bytes, bytearray)) else piece.encode("utf-8"))
                for _, el in parser.read_events():
                    if el.tag == RSS + "item":
                        n += 1
                        item_text = next(texts, None)
                        if not out.wanted(n):
                            el.clear()
                            continue
                        raw_item = wrap(item_text) if item_text is not None else None
                        held = out.known(raw_item) if out.known and raw_item is not None else None
                        if held:
                            el.clear()
                            yield Known(*held)
                            continue
                        e = out.keep(lambda el, r=raw_item: _rss_item(el, source, tlp, r, out.warnings), el,
                                     lambda el=el, n=n: _describe(n, (el, None)))
                        el.clear()
                        if e is not None:
                            yield e
            parser.close()
        except ParseError as e:
            raise FeedError(f"malformed XML: {e}") from None
        if n == 0:
            _no_items(document)

    return EntryStream(entries, selectable=True)


def _whole(text: str, source: Source, out: EntryStream) -> list[Entry]:
    root = xmlsafe.parse_text(text)
    tlp = tlp_max(source.tlp, _feed_tlp(root))
    lang = root.get(XML_LANG)
    kinds = {  # root → (entry element, its name in the text, build, describe)
        RDF + "RDF": (RSS + "item", "item", lambda p: _rss_item(p[0], source, tlp, p[1], out.warnings),
                      lambda i, pair: _describe(i, pair)),
        ATOM + "feed": (ATOM + "entry", "entry", lambda p: _atom_entry(p[0], source, tlp, out.warnings, p[1]),
                        lambda i, pair: f"entry {i}"),
        VULDEF + "VULDEF-Document": (VULDEF + "Vulinfo", "Vulinfo",
                                     lambda p: _vulinfo(p[0], source, tlp, lang, out.warnings, p[1]),
                                     lambda i, pair: _describe_vulinfo(i, pair[0])),
    }
    if root.tag in kinds:
        tag, name, build, describe = kinds[root.tag]
        elements = list(root.iter(tag))
        if not elements and root.tag == RDF + "RDF":
            _no_items(text)
        # Provenance: each entry's own text, cut from the document (ElementTree cannot give it back).
        wrap = envelope(text)
        texts = [wrap(t) for t in item_texts(text, name)]
        if len(texts) != len(elements):
            texts = [None] * len(elements)
        return [e for i, pair in enumerate(zip(elements, texts, strict=True), 1)
                if (e := out.keep(build, pair, lambda i=i, pair=pair: describe(i, pair))) is not None]
    raise FeedError(f"not a JVN RDF/Atom feed or VULDEF document (root element <{xmlsafe.local(root.tag)}>)")


_ANY_ITEM = re.compile(r"<(?:[\w.-]+:)?item[\s>/]")


def _no_items(document) -> None:
    """A feed that has <item> elements but none this normalizer reads (not in the RSS 1.0
    namespace: a channel without JVN's namespace declarations) fails, saying so: never `ok` with
    nothing."""
    text = document if isinstance(document, str) else bytes(document[:1 << 24]).decode("utf-8", "replace")
    found = len(_ANY_ITEM.findall(text))
    if found:
        raise FeedError(f"{found} <item> element(s), none in the RSS 1.0 namespace ({RSS[1:-1]}): the feed does "
                        "not declare the namespaces of a JVN RDF feed, so nothing of it could be read")


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
    cvss = [found for c in _sec(item, "cvss")
            if (found := scores.checked(c.get("version"), c.get("score"), c.get("vector"), where, warnings,
                                        severity=c.get("severity"), type=c.get("type") or "Base", source="JVN"))]
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
        unknown=drift.jvn_fields(item),
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


def _describe_vulinfo(i: int, info: Element) -> str:
    ident = xmlsafe.text(info.find(VULDEF + "VulinfoID"))
    return f"Vulinfo {i}" + (f" ({ident[:40]})" if ident else "")


def _vulinfo(info: Element, source: Source, tlp: str, lang: str | None, warnings: list[str],
             raw: str | None = None) -> Entry:
    """One VULDEF `Vulinfo`: JVN's whole entry (the raw text keeps every element and namespace)."""
    jvndb = xmlsafe.text(info.find(VULDEF + "VulinfoID"))
    data = info.find(VULDEF + "VulinfoData")
    if not jvndb or data is None:
        raise ValueError("it has no VulinfoID or no VulinfoData")

    def text(parent: Element | None, path: str) -> str:
        return xmlsafe.text(parent.find(path)) if parent is not None else ""

    def texts(path: str) -> list[str]:
        return [t for e in data.iterfind(path) if (t := xmlsafe.text(e))]

    v = VULDEF
    affected = []
    for item in data.iterfind(f"{v}Affected/{v}AffectedItem"):
        product = {"vendor": text(item, v + "Name") or None, "product": text(item, v + "ProductName") or None,
                   "cpe": text(item, v + "Cpe") or None,
                   "versions": [t for e in item.iterfind(v + "VersionNumber") if (t := xmlsafe.text(e))]}
        affected.append({k: val for k, val in product.items() if val not in (None, [])})
    cvss = []
    for c in data.iterfind(f"{v}Impact/{v}Cvss"):
        found = scores.checked(c.get("version"), text(c, v + "Base"), text(c, v + "Vector") or None, jvndb, warnings,
                               severity=text(c, v + "Severity") or None,
                               type=(c.find(v + "Severity").get("type") if c.find(v + "Severity") is not None
                                     else None) or "Base", source="JVN")
        if found:
            cvss.append(found)
    identifiers, references, cves, cwes = [], [], [], []
    for rel in data.iterfind(f"{v}Related/{v}RelatedItem"):
        kind, name = rel.get("type") or "", text(rel, v + "Name")
        rid, url = text(rel, v + "VulinfoID"), text(rel, v + "URL") or None
        if kind == "cwe" and rid.upper().startswith("CWE-"):
            cwes.append(rid)
            identifiers.append((rid, url))
        elif CVE_RE.fullmatch(rid):
            cves.append(rid)
            if "NVD" in name or "National Vulnerability Database" in name:
                if url:
                    references.append({"source_name": "nvd", "description": rid, "url": url})
            else:
                identifiers.append((rid, url))
        elif rid.upper().startswith(("JVN#", "JVNVU#", "JVNTA")):
            identifiers.append((rid, url))
        else:
            ref = {"source_name": name[:200] or kind or "reference"}
            if rid:
                ref["description"] = rid[:500]
            if url:
                ref["url"] = url
            if len(ref) > 1:
                references.append(ref)
    history = [{"number": text(h, v + "HistoryNo"), "time": text(h, v + "DateTime"),
                "text": text(h, v + "Description").replace("\\n", "\n")}
               for h in data.iterfind(f"{v}History/{v}HistoryItem")]
    overview = text(data, f"{v}VulinfoDescription/{v}Overview")
    detail = {"impact": "\n".join(texts(f"{v}Impact/{v}ImpactItem/{v}Description")) or None,
              "solution": "\n".join(texts(f"{v}Solution/{v}SolutionItem/{v}Description")) or None,
              "affected": affected, "history": [{k: x for k, x in h.items() if x} for h in history]}
    published = text(data, v + "DateFirstPublished") or text(data, v + "DatePublic")
    modified = text(data, v + "DateLastUpdated") or published
    return advisory(
        source,
        jvndb,
        title=text(data, v + "Title"),
        description=overview,
        published=date_field(published, jvndb, "DateFirstPublished", warnings),
        modified=date_field(modified, jvndb, "DateLastUpdated", warnings),
        url=f"https://jvndb.jvn.jp/{'en' if (lang or source.lang) == 'en' else 'ja'}/contents/"
            f"{jvndb[6:10]}/{jvndb}.html" if re.fullmatch(r"JVNDB-\d{4}-\d{6}", jvndb) else None,
        own_id=jvndb,
        identifiers=identifiers,
        references=references,
        cves=cves,
        cvss=cvss,
        cpes=[p["cpe"] for p in affected if p.get("cpe")],
        cwes=cwes,
        tlp=tlp,
        lang=info.get(XML_LANG) or lang,
        extra={"products": [{k: p.get(k) for k in ("cpe", "vendor", "product", "versions") if p.get(k)}
                            for p in affected],
               "jvn": {k: x for k, x in detail.items() if x not in (None, [], "") and k != "affected"}},
        raw=raw or _raw(info),
    )
