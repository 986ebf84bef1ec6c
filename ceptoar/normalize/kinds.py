"""The kinds of source and the normalizer of each: `KINDS` is the one list of source kinds (the
catalogue, `sources add` and the pipeline read it), `PARSERS` the parser of each kind that sends a
body (a TAXII source sends objects), `STREAMS` the kinds whose large documents are read as a stream
(stored a chunk at a time, never held whole; the normalizing child processes read this table too)."""

from __future__ import annotations

from collections.abc import Callable

from ceptoar.normalize import Entry, csaf, jvn, kev, rss, stix

KINDS = {
    "jvn": "JVN iPedia / MyJVN: RDF, Atom or VULDEF XML",
    "rss": "RSS or Atom news (JPCERT/CC, IPA, the National Cybersecurity Office, MHLW)",
    "kev": "CISA Known Exploited Vulnerabilities catalog (JSON)",
    "csaf": "a CSAF 2.0 document, or a ROLIE index followed to its documents",
    "stix": "a STIX 2.x bundle (JSON)",
    "taxii": "an upstream TAXII 2.1 collection",
    "epss": "FIRST's EPSS daily file (CSV, optionally gzip): scores of the hub's CVEs, not advisories",
}

PARSERS: dict[str, Callable[..., list[Entry]]] = {
    "jvn": jvn.parse,
    "rss": rss.parse,
    "kev": kev.parse,
    "csaf": csaf.parse,
    "stix": stix.parse,
}
# A TAXII source sends objects; an EPSS file scores CVEs (ceptoar.normalize.epss): neither is parsed to entries.
assert set(PARSERS) == set(KINDS) - {"taxii", "epss"}, "every kind of KINDS but taxii and epss needs its parser"
STREAMS: dict[str, Callable[..., object]] = {"jvn": jvn.stream, "kev": kev.stream}
