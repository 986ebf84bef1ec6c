"""Entity-safe XML reading shared by the XML normalizers: strict charset, no DTD entities."""

from __future__ import annotations

import codecs
import re
from xml.etree.ElementTree import Element, ParseError
from xml.etree.ElementTree import fromstring as fast_fromstring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from ceptoar.normalize import FeedError

_DECL_RE = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"']")
_HTML_START = re.compile(r"<(!doctype\s+html|html)[\s>]", re.IGNORECASE)
# C1 controls: what UTF-8 (Japanese above all) looks like when decoded as ISO-8859-1 or cp1252.
_IMPLAUSIBLE = re.compile("[\x80-\x9f]")
# The same characters in UTF-8 bytes (C2 80 – C2 9F; C2 never continues another character), found
# about ten times faster than in the decoded text of a large feed.
_IMPLAUSIBLE_UTF8 = re.compile(b"\xc2[\x80-\x9f]")


def looks_like_html(text: str) -> bool:
    """Whether the body is an HTML page (after leading comments), in one linear pass."""
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if not text.startswith("<!--", i):
            break
        end = text.find("-->", i + 4)
        if end < 0:
            return False
        i = end + 3
    return _HTML_START.match(text, i) is not None


def _codec(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise FeedError(f"unknown charset {name!r}") from None


def decode(raw: bytes, charset: str | None = None) -> str:
    """Text of an XML body, decoded strictly as RFC 7303 says: a byte order mark first, then the
    HTTP charset, then the XML declaration, UTF-8 when none says. Undecodable bytes, and text that
    decodes to control characters (UTF-8 read as ISO-8859-1), are an error, never mojibake."""
    return decode_with_codec(raw, charset)[0]


def decode_with_codec(raw: bytes, charset: str | None = None) -> tuple[str, str]:
    """`decode`, and the codec it read the body with."""
    if not raw or not raw.strip():
        raise FeedError("empty body")
    declared = None
    if raw.startswith(codecs.BOM_UTF8):
        name, why = "utf-8-sig", "the byte order mark"
    elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        name, why = "utf-16", "the byte order mark"
    else:
        m = _DECL_RE.match(raw[:400])
        declared = m.group(1).decode() if m else None
        if charset:
            name, why = charset, "the HTTP Content-Type"
        elif declared:
            name, why = declared, "the XML declaration"
        else:
            name, why = "utf-8", "the default"
    codec = _codec(name)
    disagree = f" (the XML declaration says {declared})" if declared and _codec(declared) != codec else ""
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as e:
        raise FeedError(f"body does not decode as {codec} declared by {why} (bad byte at offset {e.start})"
                        f"{disagree}: wrong or missing charset") from None
    if codec in ("utf-8", "utf-8-sig"):
        bad = _IMPLAUSIBLE_UTF8.search(raw)
        at = len(raw[:bad.start()].decode(codec)) if bad else None
    else:
        bad = _IMPLAUSIBLE.search(text)
        at = bad.start() if bad else None
    if bad:
        raise FeedError(f"body decoded as {codec} declared by {why} gives control characters (at offset "
                        f"{at}){disagree}: wrong charset label")
    return text, codec


def parse(raw: bytes, charset: str | None = None) -> Element:
    """Root element of a feed; refuses entity declarations (XXE, expansion bombs) and HTML pages."""
    return parse_text(decode(raw, charset))


def parse_text(text: str) -> Element:
    if looks_like_html(text):
        raise FeedError("got an HTML page instead of a feed")
    # Re-encode as UTF-8 with a matching declaration: expat cannot read multi-byte legacy charsets.
    body = re.sub(r"^\s*<\?xml[^>]*\?>", '<?xml version="1.0" encoding="UTF-8"?>', text.lstrip("\ufeff"), count=1)
    try:
        if "<!DOCTYPE" not in body and "<!doctype" not in body:
            # Entities can only be declared in a DOCTYPE: without one, expat's C tree builder is
            # safe and several times faster than defusedxml's Python-level parser.
            return fast_fromstring(body.encode("utf-8"))
        return fromstring(body.encode("utf-8"), forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as e:
        raise FeedError(f"refused XML with entity or external declarations ({type(e).__name__})") from None
    except ParseError as e:
        raise FeedError(f"malformed XML: {e}") from None


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def text(el: Element | None) -> str:
    return "" if el is None else "".join(el.itertext()).strip()
