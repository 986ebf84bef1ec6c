"""Fetching: HTTP with conditional GET and hard limits, ROLIE indexes followed to their documents,
TAXII pulls. Bytes in, bytes out: parsing is the normalizers' (ceptoar.normalize), which do no I/O.

`KINDS` is the one list of source kinds: the catalogue, `sources add` and the pipeline read it.
"""

KINDS = {
    "jvn": "JVN iPedia / MyJVN: RDF, Atom or VULDEF XML",
    "rss": "RSS or Atom news (JPCERT/CC, IPA, the National Cybersecurity Office, MHLW)",
    "kev": "CISA Known Exploited Vulnerabilities catalog (JSON)",
    "csaf": "a CSAF 2.0 document, or a ROLIE index followed to its documents",
    "stix": "a STIX 2.x bundle (JSON)",
    "taxii": "an upstream TAXII 2.1 collection",
}
