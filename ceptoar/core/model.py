"""The shared vocabulary: TLP markings, deterministic ids, timestamps, identifiers.

Every normalizer builds its STIX objects through these helpers, so dates, ids and markings
are decided once, here.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from functools import lru_cache

from ceptoar.core.errors import CeptoarError

# Namespace of every UUIDv5 the hub derives; changing it would re-key the whole store.
NAMESPACE = uuid.UUID("6b1c0b5e-3f0e-5a7e-9d3c-ce9704a2c0de")

TLP_ORDER = ["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]
TLP_IDS = {
    "CLEAR": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "GREEN": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "AMBER": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "AMBER+STRICT": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "RED": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
# TLP 1.0 ids (stix2's TLP_WHITE etc.); OpenCTI labels TLP:CLEAR with the WHITE id.
TLP1_IDS = {
    "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9": "CLEAR",
    "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da": "GREEN",
    "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82": "AMBER",
    "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed": "RED",
}
TLP_BY_ID = {v: k for k, v in TLP_IDS.items()} | TLP1_IDS
# The OASIS TLP 2.0 extension (cti-stix-common-objects, extension-definition-specifications/tlp-2.0).
TLP2_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"

# Who authored a stored object version. Versions of different origins never overwrite each other.
HUB = "hub"  # the hub's own objects: published reports, vulnerabilities per CVE, identities, markings
INCIDENT = "incident"  # incident records (TLP:RED), never published
# The `defined_by` of the sources that hold members' TAXII submissions (not a catalogue source).
MEMBER_SUBMISSIONS = "taxii"
# The severity of a published report as a label: a machine tag, as MISP and OpenCTI keep labels.
SEVERITY_LABEL = 'ceptoar:severity="{}"'


class TLPError(CeptoarError, ValueError):
    """A TLP name that is none of TLP 2.0's."""


def source_origin(source_id: str) -> str:
    return f"source:{source_id}"


def tlp_name(value: str) -> str:
    """Canonical TLP name from user or feed spelling: 'tlp:white' → 'CLEAR', 'amber+strict' → …"""
    v = value.strip().upper().removeprefix("TLP:").removeprefix("TLP ").replace(" ", "")
    v = {"WHITE": "CLEAR", "AMBERSTRICT": "AMBER+STRICT"}.get(v, v)
    if v not in TLP_ORDER:
        raise TLPError(f"unknown TLP {value!r} (use one of {', '.join(TLP_ORDER)})")
    return v


def tlp_max(*names: str | None) -> str | None:
    present = [n for n in names if n]
    return max(present, key=TLP_ORDER.index) if present else None


def marking_definition(tlp: str) -> dict:
    """The fixed OASIS TLP 2.0 marking-definition object for `tlp` (a fresh copy each call)."""
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": TLP_IDS[tlp],
        "created": "2022-10-01T00:00:00.000Z",
        "name": f"TLP:{tlp}",
        "extensions": {TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": tlp.lower()}},
    }


def listed(value) -> list:
    """A producer's list property, or nothing when it is not a list (real bundles get shapes wrong)."""
    return value if isinstance(value, list) else []


def spec_version_of(obj: dict) -> str:
    """The STIX version of an object: its `spec_version`; without one, 2.0 for a domain or
    relationship object (STIX 2.0 had no such property) and 2.1 for a cyber-observable."""
    v = obj.get("spec_version")
    if isinstance(v, str) and v in ("2.0", "2.1"):
        return v
    return "2.0" if "created" in obj else "2.1"


def marking_rank(obj: dict, known: dict[str, str] | None = None) -> int | None:
    """The rank of the highest TLP an object is marked with (OASIS ids, or `known` definitions of
    its producer), None when unmarked. Marking definitions themselves are public."""
    if obj.get("type") == "marking-definition":
        return 0
    table = TLP_BY_ID if known is None else TLP_BY_ID | known
    ranks = [TLP_ORDER.index(table[m]) for m in listed(obj.get("object_marking_refs"))
             if isinstance(m, str) and m in table]
    return max(ranks) if ranks else None


_NAMESPACE_BYTES = NAMESPACE.bytes


# Both caches keep what repeats (CWE ids, the source's identity, shared CVEs); ids seen once pass
# through. 4,096 entries hold as many hits on a 30,000-item feed as 65,536 did, in 12 MiB instead of 54.
@lru_cache(maxsize=4096)
def stable_id(stix_type: str, *parts: str) -> str:
    """`type--` + the name-based (version 5) UUID of the parts: `uuid.uuid5`'s value, formatted
    without building a UUID object (a fifth of normalizing a large feed went there)."""
    b = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "|".join(parts).encode()).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{stix_type}--{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def vulnerability_id(cve: str) -> str:
    """Derived from the CVE id alone, so JVN, KEV and CSAF name the same object."""
    return stable_id("vulnerability", "cve", cve.upper())


def identity_id(source_id: str) -> str:
    return stable_id("identity", "source", source_id)


# --- timestamps -------------------------------------------------------------------------------

JST = timezone(timedelta(hours=9), "JST")  # Japan: the hub's people and deadlines live here
SYSTEM = "ceptoar"  # the actor of what the hub does by itself, or when a caller names none


def moment(text: str, default_zone=UTC) -> datetime | None:
    """A date or time given by a person (a date means its midnight; no offset means `default_zone`),
    as an aware UTC datetime; None when it is neither."""
    d = parse_date(text)
    if d is None:
        return None
    if not isinstance(d, datetime):
        d = datetime(d.year, d.month, d.day)
    if d.tzinfo is None:
        d = d.replace(tzinfo=default_zone)
    return d.astimezone(UTC)


def stamp(d: datetime) -> str:
    """The stored form of a moment (UTC, microseconds): compares as text with every stored time."""
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_date(text: str | None) -> datetime | date | None:
    """ISO 8601 (seconds optional, as JVN writes them) or RFC 2822; the original offset is kept.
    None for anything else, and for years outside 1970–9000 (year 1 or 9999 cannot carry an offset)."""
    if not text or not isinstance(text, str) or not text.strip():
        return None
    s = text.strip()[:64]
    d = None
    try:
        d = date.fromisoformat(s) if len(s) == 10 else datetime.fromisoformat(s.replace("z", "Z"))
    except ValueError:
        try:
            d = parsedate_to_datetime(s)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if d is None or not 1970 <= d.year <= 9000:
        return None
    return d


def iso_original(d: datetime | date | None) -> str | None:
    """ISO form with the source's own offset (dates stay dates)."""
    if d is None:
        return None
    if isinstance(d, datetime) and d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.isoformat()


def to_utc(d: datetime | date | None) -> datetime | None:
    if d is None:
        return None
    if not isinstance(d, datetime):
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.astimezone(UTC)


def stix_time(d: datetime | date | None) -> str | None:
    """STIX timestamp: UTC, millisecond precision, 'Z'."""
    u = to_utc(d)
    return None if u is None else u.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_stix_time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def later_than(candidate: str | None, previous: str) -> str:
    """A `modified` for a new version: the candidate if it is later, else previous + 1 ms."""
    if candidate and candidate > previous:
        return candidate
    return stix_time(parse_stix_time(previous) + timedelta(milliseconds=1))


def now_stix() -> str:
    return stix_time(datetime.now(UTC))


# --- identifiers ------------------------------------------------------------------------------

# Ids the operator chooses (sources, collections, members): safe in URLs, file names and filters.
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
CVE_RE = re.compile(r"\bCVE-\d{4}-\d{4,19}\b", re.IGNORECASE)
IDENTIFIER_RE = re.compile(
    r"(JVNDB-\d{4}-\d{6}|JVN#\d{8}|JVNVU#\d{5,8}|JVNTA#?\d{5,8}|ICSMA-\d{2}-\d{3}-\d{2}[A-Z]?"
    r"|ICSA-\d{2}-\d{3}-\d{2}[A-Z]?|CVE-\d{4}-\d{4,19}|CWE-\d+|VU#\d+|EUVD-\d{4}-\d{1,12}"
    r"|GCVE-\d{1,9}-\d{4}-\d{1,12})",
    re.IGNORECASE,
)
# Vulnerability ids beside the CVE: ENISA's EU Vulnerability Database (EUVD-2025-12345) and the Global
# CVE allocation system (GCVE-<numbering authority>-<year>-<number>). An advisory that names no CVE is
# keyed by these, so two that share one are recognised as one vulnerability, as a shared CVE is.
OTHER_VULN_RE = re.compile(r"\b(?:EUVD-\d{4}-\d{1,12}|GCVE-\d{1,9}-\d{4}-\d{1,12})\b", re.IGNORECASE)
_SCHEMES = {
    "JVNDB-": ("jvndb", "https://jvndb.jvn.jp/ja/contents/{year}/{id}.html"),
    "JVN#": ("jvn", "https://jvn.jp/jp/JVN{num}/"),
    "JVNVU#": ("jvn", "https://jvn.jp/vu/JVNVU{num}/"),
    "JVNTA": ("jvn", None),
    "ICSMA-": ("cisa", "https://www.cisa.gov/news-events/ics-medical-advisories/{lower}"),
    "ICSA-": ("cisa", "https://www.cisa.gov/news-events/ics-advisories/{lower}"),
    "CVE-": ("cve", "https://www.cve.org/CVERecord?id={id}"),
    "CWE-": ("cwe", "https://cwe.mitre.org/data/definitions/{num}.html"),
    "VU#": ("cert-vn", "https://www.kb.cert.org/vuls/id/{num}"),
    "EUVD-": ("euvd", "https://euvd.enisa.europa.eu/vulnerability/{id}"),
    "GCVE-": ("gcve", None),
}
_PREFIX_RE = re.compile(r"(JVNDB-|JVN#|JVNVU#|JVNTA|ICSMA-|ICSA-|CVE-|CWE-|VU#|EUVD-|GCVE-)", re.I)


def canonical_identifier(ident: str) -> str:
    """Known schemes upper-cased (cve-2024-1 → CVE-2024-1); anything else kept as written."""
    ident = ident.strip()
    return ident.upper() if IDENTIFIER_RE.fullmatch(ident) else ident


def find_cves(*texts: str | None) -> list[str]:
    seen: dict[str, None] = {}
    for t in texts:
        for m in CVE_RE.findall(t or ""):
            seen[m.upper()] = None
    return list(seen)


def other_vulnerability_ids(*texts: str | None) -> list[str]:
    """EUVD and GCVE ids in the texts, upper-cased, in order, once each."""
    return list(dict.fromkeys(m.upper() for t in texts for m in OTHER_VULN_RE.findall(t or "")))


def find_identifiers(*texts: str | None) -> list[str]:
    seen: dict[str, None] = {}
    for t in texts:
        for m in IDENTIFIER_RE.findall(t or ""):
            seen[canonical_identifier(m)] = None
    return list(seen)


@lru_cache(maxsize=4096)
def identifier_reference(ident: str, url: str | None = None) -> dict:
    """An external reference for a known identifier, with the canonical URL when none is given.
    The dict is shared between callers (cached): never mutate it."""
    ident = ident.strip()
    known = IDENTIFIER_RE.fullmatch(ident) is not None
    if known:
        ident = ident.upper()
    m = _PREFIX_RE.match(ident) if known else None  # "CVE-… in some title" is no CVE reference
    source_name, template = _SCHEMES[m.group(1).upper()] if m else ("other", None)
    ref = {"source_name": source_name, "external_id": ident}
    if url is None and template and known:
        tail = ident[m.end():]
        url = template.format(id=ident, num=re.sub(r"\D", "", tail), lower=ident.lower(),
                              year=tail.split("-")[0])
    if url:
        ref["url"] = url
    return ref


# One encoder for every stored object (json.dumps with options builds a new one per call).
_canonical = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode


def _body(obj: dict) -> str:
    return _canonical({k: v for k, v in obj.items() if k not in ("created", "modified")})


def content_hash(obj: dict) -> str:
    """Hash of an object's content, ignoring its version timestamps."""
    return hashlib.sha256(_body(obj).encode()).hexdigest()


def serialize(obj: dict) -> tuple[str, str]:
    """(JSON text, content hash) from one encoding: the version timestamps lead the text."""
    body = _body(obj)
    stamps = {k: obj[k] for k in ("created", "modified") if k in obj}
    head = json.dumps(stamps)[:-1]
    text = head + (", " + body[1:] if stamps and body != "{}" else body[1:]) if stamps else body
    return text, hashlib.sha256(body.encode()).hexdigest()


def _cvss_major(c: dict) -> int:
    version = c.get("version") if isinstance(c.get("version"), str) else ""
    vector = c.get("vector") if isinstance(c.get("vector"), str) else ""
    if vector.startswith("CVSS:"):
        version = vector[5:].split("/", 1)[0]
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() and len(head) < 3 else 0


def headline_cvss(cvss) -> dict | None:
    """The CVSS entry an advisory is ranked by: of the newest CVSS version it has (a 4.0 score stands
    over 3.x ones, which stand over 2.0), the highest score; None without a score."""
    best, key = None, None
    for c in cvss or []:
        if not isinstance(c, dict) or not isinstance(c.get("score"), (int, float)) or isinstance(c["score"], bool):
            continue
        k = (_cvss_major(c), c["score"])
        if key is None or k > key:
            best, key = c, k
    return best


def cvss_label(c: dict) -> str:
    """`CVSS 4.0 9.3`: the score with its version beside it."""
    version = c.get("version") if isinstance(c.get("version"), str) and c.get("version") else None
    return f"CVSS {version} {c.get('score'):g}" if version else f"CVSS {c.get('score'):g}"


def effective_severity(row: dict) -> str | None:
    """The analyst's severity, else one derived from the highest CVSS score."""
    if row.get("severity"):
        return row["severity"]
    score = row.get("max_cvss")
    if score is None:
        return None
    return "critical" if score >= 9 else "high" if score >= 7 else "medium" if score >= 4 else "low"


@dataclass
class Source:
    id: str
    kind: str
    url: str = ""
    name: str = ""
    tlp: str = "CLEAR"
    lang: str = "ja"
    options: dict = field(default_factory=dict)
    public: bool = True  # a catalogue source whose CLEAR facts may go on the shared vulnerability objects
