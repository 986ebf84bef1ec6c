"""Schema drift: the fields of a feed item that its format's schema, as the hub knows it, does not
name. They are kept in the raw entry like everything else; listing them per source (`sources show`,
`status`, the operator's feed-health mail) tells the operator the upstream format has moved before
anything is lost by not reading it.

Known here means named by the schema the hub was written against, read or deliberately left alone:
CISA's KEV schema (cisagov/kev-data, known_exploited_vulnerabilities_schema.json), the OASIS CSAF 2.0
and 2.1 JSON schemas, and the elements JVN's RSS items carry (RSS 1.0, Dublin Core, JVN's mod_sec).
Paths name where the field is: `vulnerabilities[].epssScore`, `document.x_extensions`, `item.sec:cwe`.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

KEV_VULNERABILITY = frozenset({
    "cveID", "vendorProject", "product", "vulnerabilityName", "dateAdded", "shortDescription", "requiredAction",
    "dueDate", "knownRansomwareCampaignUse", "notes", "cwes"})

CSAF_TOP = frozenset({"$schema", "document", "product_tree", "vulnerabilities", "x_extensions"})
CSAF_DOCUMENT = frozenset({
    "acknowledgments", "aggregate_severity", "category", "csaf_version", "distribution", "lang", "license_expression",
    "notes", "publisher", "references", "source_lang", "title", "tracking", "x_extensions"})
CSAF_VULNERABILITY = frozenset({
    "acknowledgments", "cve", "cwe", "cwes", "disclosure_date", "discovery_date", "first_known_exploitation_dates",
    "flags", "ids", "involvements", "metrics", "notes", "product_status", "references", "release_date",
    "remediations", "scores", "threats", "title", "x_extensions"})

# An RSS item's children by namespace (JVN's mod_sec namespaces by their stem: it has had versions).
_RSS, _DC, _DCTERMS, _SEC = "http://purl.org/rss/1.0/", "http://purl.org/dc/elements/1.1/", \
    "http://purl.org/dc/terms/", "http://jvn.jp/rss/mod_sec/"
JVN_ITEM = {_RSS: frozenset({"title", "link", "description"}),
            _DC: frozenset({"date", "creator", "subject", "identifier", "publisher", "rights"}),
            _DCTERMS: frozenset({"issued", "modified"}),
            _SEC: frozenset({"identifier", "references", "cpe", "cvss"})}
_PREFIX = {_RSS: "", _DC: "dc:", _DCTERMS: "dcterms:", _SEC: "sec:"}


def kev_fields(v: dict) -> list[str]:
    return [f"vulnerabilities[].{k}"[:200] for k in v if k not in KEV_VULNERABILITY]


def csaf_fields(doc: dict) -> list[str]:
    out = [k for k in doc if k not in CSAF_TOP]
    if isinstance(doc.get("document"), dict):
        out += [f"document.{k}" for k in doc["document"] if k not in CSAF_DOCUMENT]
    if isinstance(doc.get("vulnerabilities"), list):
        out += list(dict.fromkeys(f"vulnerabilities[].{k}" for v in doc["vulnerabilities"] if isinstance(v, dict)
                                  for k in v if k not in CSAF_VULNERABILITY))
    return [p[:200] for p in out]


def jvn_fields(item: Element) -> list[str]:
    out = []
    for child in item:
        tag = child.tag if isinstance(child.tag, str) else ""
        ns, _, local = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
        stem = _SEC if ns.startswith(_SEC) else ns
        if local not in JVN_ITEM.get(stem, ()):
            out.append(f"item.{_PREFIX.get(stem, '{' + ns + '}')}{local}"[:200])
    return list(dict.fromkeys(out))
