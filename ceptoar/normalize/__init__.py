"""Normalizers: one pure module per feed format, bytes → STIX 2.1 dicts, no I/O.

Each format module exposes `parse(raw: bytes, source: Source, charset: str | None = None)`
returning a list of `Entry`. This module holds what they share: the `Entry` record and
`advisory()`, which turns the facts of one advisory into its report, vulnerabilities,
source identity and TLP marking.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from ceptoar.core import extensions
from ceptoar.core.errors import CeptoarError
from ceptoar.core.model import (
    CVE_RE,
    OTHER_VULN_RE,
    TLP_IDS,
    Source,
    canonical_identifier,
    find_cves,
    identifier_reference,
    identity_id,
    iso_original,
    listed,
    parse_date,
    stable_id,
    stix_time,
    vulnerability_id,
)
from ceptoar.normalize import budget


class FeedError(CeptoarError, ValueError):
    """The body is not a usable feed of the expected kind; the message is one line for the user."""


class Entries(list):
    """What a normalizer read from a document: its entries, and the items it skipped or fields it
    dropped, each in one line naming the item and the field."""

    def __init__(self, items=(), warnings: list[str] | None = None):
        super().__init__(items)
        self.warnings: list[str] = list(warnings or [])
        self.skipped = 0


# What a malformed item raises while it is read: it is skipped, the document's other items are kept.
ITEM_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)


class EntryStream:
    """Entries read lazily from one document (a large feed is stored a chunk at a time and never
    held whole); `warnings` and `skipped` fill as it is read. Iterable once.

    `known`, set by the caller before reading: an item's raw text → (key, version) when the store
    holds that very text for this source already. A stream that has an item's raw text before
    building it (JVN RSS) then yields `Known(key, version)` instead of building what would be
    thrown away as unchanged: a re-fetched yearly feed costs its parsing, not its normalizing."""

    def __init__(self, make, selectable: bool = False):
        self.warnings: list[str] = []
        self.skipped = 0
        self.known: Callable[[str], tuple[str, str | None] | None] | None = None
        # `select`, set by a reader that builds only some of the items (ceptoar.ingest.offload splits a
        # document between processes): the n-th item (from 1) is built only when select(n) is true.
        # Honoured by streams that read their items one by one (`selectable`).
        self.selectable = selectable
        self.select: Callable[[int], bool] | None = None
        self._entries = make(self)

    def __iter__(self):
        return self._entries

    def wanted(self, n: int) -> bool:
        return self.select is None or self.select(n)

    def keep(self, build, item, describe) -> Entry | None:
        return kept(build, item, describe, self)

    def read(self) -> Entries:
        out = Entries(self, self.warnings)
        out.warnings = self.warnings
        out.skipped = self.skipped
        return out


def kept(build, item, describe, out) -> Entry | None:
    """`build(item)`, or None with `out` counting the skip and a warning saying which item
    (`describe()`) and why; a FeedError (the whole document is unreadable) goes on."""
    try:
        return build(item)
    except FeedError:
        raise
    except ITEM_ERRORS as e:
        out.skipped += 1
        out.warnings.append(f"skipped {describe()}: {plain_reason(e)}")
        return None


def each_item(items, describe, build, out: Entries) -> Entries:
    """`build(item)` for each item; an item that fails is skipped with a warning saying which."""
    for i, item in enumerate(items, 1):
        if i % 256 == 0:
            budget.check(lambda i=i: f"at item {i:,}" + (f" of {len(items):,}" if hasattr(items, "__len__") else ""))
        e = kept(build, item, lambda i=i, item=item: describe(i, item), out)
        if e is not None:
            out.append(e)
    return out


def plain_reason(e: Exception) -> str:
    text = " ".join(str(e).split())[:200]
    return text if text and not text.startswith("'") else f"a field has the wrong type ({type(e).__name__})"


def score(value, where: str, warnings: list[str]) -> float | None:
    """A CVSS score: a finite number from 0 to 10, else dropped with a warning."""
    if value is None or value == "":
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if math.isfinite(v) and 0 <= v <= 10:
        return v
    warnings.append(f"{where}: CVSS score {str(value)[:40]!r} is not a number from 0 to 10: dropped")
    return None


def text_field(value, where: str, name: str, warnings: list[str]) -> str | None:
    """A text field of a JSON feed: a string, else dropped with a warning."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    warnings.append(f"{where}: {name} is not text: dropped")
    return None


def list_field(value, where: str, name: str, warnings: list[str], kind=str) -> list:
    """A list field: the items of the expected type; anything else dropped with a warning."""
    if value is None:
        return []
    if not isinstance(value, list):
        warnings.append(f"{where}: {name} is not a list: dropped")
        return []
    good = [v for v in value if isinstance(v, kind)]
    if len(good) != len(value):
        warnings.append(f"{where}: {len(value) - len(good)} item(s) of {name} of the wrong type dropped")
    return good


def date_field(text, where: str, name: str, warnings: list[str]):
    """A date the STIX timestamps can carry (years 1970–9000), else dropped with a warning."""
    if text in (None, ""):
        return None
    d = parse_date(text) if isinstance(text, str) else None
    if d is None:
        warnings.append(f"{where}: {name} {str(text)[:40]!r} is not a usable date: dropped")
    return d


@dataclass(frozen=True)
class Known:
    """An item whose raw text the store holds unchanged for its source: its key and version (as the
    source gave it when that text was stored)."""

    key: str
    version: str | None


@dataclass
class Entry:
    """One advisory as its source tells it. Only source facts: the hub's own objects (the shared
    vulnerability per CVE, the source identity, the TLP marking definitions) are made by ingest."""

    key: str  # identity of the entry within its source (never a GUID alone: ids add the source)
    report: dict  # the source's report
    raw: str  # the entry as received, for provenance and re-normalization
    objects: list[dict] = field(default_factory=list)  # what the source supplied with it (STIX imports)
    tags: list[str] = field(default_factory=list)
    tlp: str = "CLEAR"  # of the advisory as a whole, as the source marks it
    cves: list[str] = field(default_factory=list)
    cve_facts: dict[str, dict] = field(default_factory=dict)  # CVE → facts for the shared vulnerability
    object_tlps: dict[str, str] = field(default_factory=dict)  # own TLP of supplied objects, by id
    cvss: list[dict] = field(default_factory=list)  # a producer's report: the scores of what it refers to
    unknown: list[str] = field(default_factory=list)  # field paths its format's schema does not name (drift)
    # What storing derives from the entry alone, computed ahead (ceptoar.ingest.entries.prepare).
    prepared: object = field(default=None, compare=False, repr=False)


def source_identity(source: Source) -> dict:
    return {
        "type": "identity",
        "spec_version": "2.1",
        "id": identity_id(source.id),
        "created": "2020-01-01T00:00:00.000Z",
        "modified": "2020-01-01T00:00:00.000Z",
        "name": source.name or source.id,
        "identity_class": "organization",
        "extensions": {extensions.SOURCE: {"extension_type": "property-extension", "source": source.id}},
    }


def _dedupe(items: list, key=lambda x: x) -> list:
    seen, out = set(), []
    for it in items:
        k = key(it)
        if k not in seen:
            seen.add(k)
            out.append(it)
    return out


def cvss_key(c: dict) -> tuple:
    return (c.get("source"), c.get("cve"), c.get("version"), c.get("vector"))


def advisory(
    source: Source,
    key: str,
    *,
    title: str,
    raw: str,
    description: str = "",
    published: datetime | date | None = None,
    modified: datetime | date | None = None,
    url: str | None = None,
    own_id: str | None = None,
    identifiers: list[tuple[str, str | None]] = (),
    references: list[dict] = (),
    cves: list[str] = (),
    cvss: list[dict] = (),
    cpes: list[str] = (),
    cwes: list[str] = (),
    lang: str | None = None,
    tlp: str | None = None,
    extra: dict | None = None,
    per_cve: dict[str, dict] | None = None,
    medical_signals: list[str] = (),
    tags: list[str] = (),
    object_refs: list[str] = (),
    included: list[dict] = (),
    unknown: list[str] = (),
) -> Entry:
    """Build the STIX objects of one advisory. `unknown`: field paths of the item its format's
    schema does not name (ceptoar.normalize.drift).

    `cvss` and `cpes` are advisory-level facts; `per_cve` maps a CVE to facts known for that CVE
    alone (CSAF scores, KEV listing), which also land on the shared vulnerability object.
    """
    fetched = datetime.now(UTC)
    published = published or modified or fetched
    modified = modified or published
    tlp = tlp or source.tlp
    # Only well-formed CVE ids are CVEs; one found inside other text (a related document's title
    # listing CVEs) is linked as the CVE it names.
    # An EUVD or GCVE id stands where a vulnerability has no CVE (normalizers pass one only then).
    cves = _dedupe([c.upper() for c in cves if CVE_RE.fullmatch(c) or OTHER_VULN_RE.fullmatch(c)]
                   + [f for c in cves if not CVE_RE.fullmatch(c) and not OTHER_VULN_RE.fullmatch(c)
                      for f in find_cves(c)])
    ident = identity_id(source.id)

    refs: list[dict] = []
    if url or own_id:
        top = {"source_name": source.id}
        if own_id and not CVE_RE.fullmatch(own_id.strip()):  # a CVE is named by its `cve` reference
            top["external_id"] = canonical_identifier(own_id)
        if url:
            top["url"] = url
        refs.append(top)
    for ident_str, ident_url in [*identifiers, *[(c, None) for c in cves], *[(w, None) for w in cwes]]:
        refs.append(identifier_reference(ident_str, ident_url))
    refs.extend(references)
    # The first reference of an identifier wins: feeds give better URLs than our templates.
    refs = _dedupe(refs, key=lambda r: (r["source_name"], r.get("external_id") or r.get("url")))

    report = {
        "type": "report",
        "spec_version": "2.1",
        "id": stable_id("report", source.id, key),
        "created": stix_time(published),
        "modified": stix_time(modified),
        "name": (title or "").strip() or f"{source.id} {key}",
        "published": stix_time(published),
        "report_types": ["vulnerability"] if cves else ["threat-report"],
        "created_by_ref": ident,
        "object_refs": _dedupe([vulnerability_id(c) for c in cves] + list(object_refs) + [ident]),
        "object_marking_refs": [TLP_IDS[tlp]],
        "lang": lang or source.lang,
    }
    if description and description.strip():
        report["description"] = description.strip()
    if refs:
        report["external_references"] = refs
    report = extensions.with_props(
        report, extensions.ADVISORY, source=source.id, entry=key,
        dates={"published": iso_original(published), "modified": iso_original(modified)},
        cvss=_dedupe(list(cvss), cvss_key), cpes=_dedupe(list(cpes)),
        cwes=_dedupe([canonical_identifier(w) for w in cwes]), medical_signals=_dedupe(list(medical_signals)),
        **(extra or {}))

    # Facts about each CVE for the shared vulnerability object; ingest decides whether they may be
    # shared (only public CLEAR sources' facts are).
    cve_facts = {}
    for cve in cves:
        facts = dict((per_cve or {}).get(cve, {}))
        if cvss and "cvss" not in facts and len(cves) == 1:
            facts["cvss"] = list(cvss)
        if cpes and "cpes" not in facts:
            facts["cpes"] = list(cpes)
        if url and url.lower().startswith(("https://", "http://")):  # the page importers keep as a reference
            facts["references"] = [{k: v for k, v in refs[0].items() if k != "external_id"}]
        cve_facts[cve] = {k: v for k, v in facts.items() if v not in (None, [], {})}
    return Entry(key=key, report=report, raw=raw, objects=list(included), tags=list(tags), tlp=tlp, cves=cves,
                 unknown=list(unknown),
                 cve_facts=cve_facts)


def vulnerability(cve: str, created: str, facts: dict | None = None) -> dict:
    """The hub's shared vulnerability object for a CVE (id from the CVE alone), always TLP:CLEAR.
    `facts` (cvss, cpes, cwes, kev) go in the hub's extension, `references` (advisories' pages) in
    its external references; what importers read is derived from the facts: CWE references, a
    description stating the scores, weaknesses and KEV listing, and the CVSS properties OpenCTI
    imports."""
    facts = {k: v for k, v in (facts or {}).items() if v not in (None, [], {})}
    cwes = [w for w in listed_strings(facts.get("cwes")) if CWE_ID_RE.fullmatch(w)]
    v = {
        "type": "vulnerability",
        "spec_version": "2.1",
        "id": vulnerability_id(cve),
        "created": created,
        "modified": created,
        "name": cve,
        "external_references": [identifier_reference(cve), *(identifier_reference(w) for w in cwes),
                                *facts.pop("references", [])],
        "object_marking_refs": [TLP_IDS["CLEAR"]],
    }
    text = describe_vulnerability(facts, cwes)
    if text:
        v["description"] = text
    v.update(opencti_properties(facts, cwes))
    return extensions.with_props(v, extensions.VULNERABILITY, **facts)


CWE_ID_RE = re.compile(r"CWE-\d{1,7}")
CVSS_SEVERITIES = ((9.0, "CRITICAL"), (7.0, "HIGH"), (4.0, "MEDIUM"), (0.1, "LOW"), (0.0, "NONE"))


def listed_strings(value) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _cvss_entries(facts: dict, major: str) -> list[dict]:
    """The CVSS entries of one major version (\"3\", \"2\", \"4\") with a usable score, best first:
    the latest minor version, then the highest score."""
    found = []
    for c in facts.get("cvss") or []:
        if not isinstance(c, dict):
            continue
        version, value = str(c.get("version") or ""), c.get("score")
        vector = c.get("vector") if isinstance(c.get("vector"), str) else ""
        if not version and vector.startswith("CVSS:"):
            version = vector[5:].split("/")[0]
        if version.split(".")[0] == major and isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append((version, float(value), vector, c))
    found.sort(key=lambda f: (f[0], f[1]), reverse=True)
    return [{"version": v, "score": sc, "vector": vec, "severity": c.get("severity")} for v, sc, vec, c in found]


def cvss_severity(value: float, given=None) -> str:
    if isinstance(given, str) and given.strip():
        return given.strip().upper()
    return next(name for floor, name in CVSS_SEVERITIES if value >= floor)


def opencti_properties(facts: dict, cwes: list[str]) -> dict:
    """OpenCTI imports a vulnerability's scores only from its own `x_opencti_*` properties."""
    out = {}
    for major, prefix in (("3", "x_opencti_cvss_"), ("2", "x_opencti_cvss_v2_"), ("4", "x_opencti_cvss_v4_")):
        best = _cvss_entries(facts, major)
        if not best:
            continue
        b = best[0]
        vector = b["vector"]
        if vector and major in ("3", "4") and not vector.startswith("CVSS:"):
            vector = f"CVSS:{b['version']}/{vector}"
        out[prefix + "base_score"] = b["score"]
        if major != "2":
            out[prefix + "base_severity"] = cvss_severity(b["score"], b["severity"])
        if vector:
            out[prefix + "vector_string"] = vector
    if cwes:
        out["x_opencti_cwe"] = cwes
    if isinstance(facts.get("kev"), dict):
        out["x_opencti_cisa_kev"] = True
    return out


def describe_vulnerability(facts: dict, cwes: list[str]) -> str:
    """One line per fact, for importers that keep a description and little else (MISP)."""
    lines = []
    for major in ("4", "3", "2"):
        for c in _cvss_entries(facts, major):
            sev = "" if major == "2" else f" {cvss_severity(c['score'], c['severity'])}"
            lines.append(f"CVSS {c['version']}: {c['score']:.1f}{sev}" + (f" ({c['vector']})" if c["vector"] else ""))
    if cwes:
        lines.append("CWE: " + ", ".join(cwes))
    kev = facts.get("kev") if isinstance(facts.get("kev"), dict) else None
    if kev:
        added = f", added {kev['date_added']}" if isinstance(kev.get("date_added"), str) else ""
        lines.append(f"CISA Known Exploited Vulnerabilities catalog{added}.")
        if isinstance(kev.get("required_action"), str):
            lines.append(f"Required action: {kev['required_action']}")
        if kev.get("known_ransomware_campaign_use") == "Known":
            lines.append("Known to be used in ransomware campaigns.")
    return "\n".join(dict.fromkeys(lines))


def load_json(raw: bytes, what: str):
    return load_json_text(raw, what)[0]


def load_json_text(raw: bytes, what: str) -> tuple[object, str]:
    """The document and its decoded text (for a normalizer that keeps the text as the raw entry)."""
    with json_errors(raw, what):
        text = _json_text(raw)
        doc = _DECODER.decode(text)
        if _ESCAPED_SURROGATE.search(text):  # a lone one cannot be stored or sent on
            _check_surrogates(doc)
        return doc, text


def json_list_items(raw: bytes, what: str, key: str) -> Iterator | None:
    """The items of the list under `key` in the document's top-level object, decoded one at a time,
    so a large catalog is never held as one tree; the rest of the document is read and checked as
    `load_json` would (malformed JSON, NaN, a lone surrogate, too deep: FeedError, raised when the
    reading gets there). None when the document is no object holding such a list (the caller then
    reads it whole for the exact error); a second `key` after the list is refused (`json.loads` would
    keep the last, after the first was read)."""
    with json_errors(raw, what):
        text = _json_text(raw)
    raw = raw[:_LEADING_SPACE.match(raw).end() + 16]  # what an error reads of it: the body is not held twice
    at = _space_end(text, 0)
    if not text.startswith("{", at):
        return None
    # Find the list first (the keys before it are small values), so a document without one is
    # answered before a single item is taken.
    with json_errors(raw, what):
        at, found = _seek_key(text, at + 1, key)
    if found is None:
        return None
    surrogates = _ESCAPED_SURROGATE.search(text) is not None

    def items():
        with json_errors(raw, what):
            i = _space_end(text, found + 1)
            if text.startswith("]", i):
                i += 1
            else:
                while True:
                    item, end = _DECODER.raw_decode(text, i)
                    if surrogates and _ESCAPED_SURROGATE.search(text, i, end):
                        _check_surrogates(item)
                    yield item
                    i = _space_end(text, end)
                    if text.startswith(",", i):
                        i = _space_end(text, i + 1)
                    elif text.startswith("]", i):
                        i += 1
                        break
                    else:
                        raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            # What follows the list: the object's other members, then nothing.
            at, again = _seek_key(text, i, key, after_value=True)
            if again is not None:
                raise FeedError(f"{what} holds {key!r} twice: the first at {_position(text, found)}, the second "
                                f"at {_position(text, again)}; which one is meant is ambiguous, so neither is read")
            if _space_end(text, at) != len(text):
                raise json.JSONDecodeError("Extra data", text, _space_end(text, at))

    return items()


def _seek_key(text: str, i: int, key: str, after_value: bool = False) -> tuple[int, int | None]:
    """Read an object's members from `i` (just after its `{`, or after a member's value when
    `after_value`) up to the member `key`: (where the object ended, None) when there is none, else
    (-, where its value starts). Before the list, a `key` whose value is no list is read past (a later
    one is the one `json.loads` would keep); after it, any `key` is returned (a second one)."""
    first = not after_value
    while True:
        i = _space_end(text, i)
        if text.startswith("}", i):
            return i + 1, None
        if not first:
            if not text.startswith(",", i):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            i = _space_end(text, i + 1)
        first = False
        if not text.startswith('"', i):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
        member = i
        name, i = _DECODER.raw_decode(text, i)
        i = _space_end(text, i)
        if not text.startswith(":", i):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
        i = _space_end(text, i + 1)
        if name == key and (after_value or text.startswith("[", i)):
            return i, i
        value, i = _DECODER.raw_decode(text, i)
        if _ESCAPED_SURROGATE.search(text, member, i):
            _check_surrogates({name: value})


_SPACE = re.compile(r"[ \t\n\r]*")
_LEADING_SPACE = re.compile(rb"\s*")
_HTML_START = re.compile(rb"\s*(?:<!doctype|<html)", re.I)  # an HTML page where JSON was expected
# A \uD800–\uDFFF escape: json decodes it into a string that cannot be encoded (unless paired).
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _position(text: str, i: int) -> str:
    """Where character `i` of a document is, as an editor shows it."""
    line = text.count("\n", 0, i) + 1
    return f"line {line} column {i - (text.rfind(chr(10), 0, i) + 1) + 1} (character {i})"


def _space_end(text: str, i: int) -> int:
    return _SPACE.match(text, i).end()


def _check_surrogates(value) -> None:
    json.dumps(value, ensure_ascii=False).encode("utf-8")


def _json_text(raw: bytes) -> str:
    if _LEADING_SPACE.match(raw).end() == len(raw):  # (strip() would copy a large body to find out)
        raise FeedError("empty body")
    return raw.decode("utf-8-sig")


@contextmanager
def json_errors(raw: bytes, what: str):
    """JSON reading errors as one-line FeedErrors naming `what`."""
    try:
        yield
    except UnicodeEncodeError:
        raise FeedError(f"{what} holds a lone surrogate (an invalid \\ud800–\\udfff escape) in a string") from None
    except RecursionError:
        raise FeedError(f"{what} is nested too deeply") from None
    except UnicodeDecodeError as e:
        raise FeedError(f"{what} is not UTF-8 (bad byte at offset {e.start})") from None
    except json.JSONDecodeError as e:
        if _HTML_START.match(raw):
            raise FeedError(f"got an HTML page instead of {what}") from None
        raise FeedError(f"malformed JSON in {what}: {e}") from None
    except FeedError:
        raise
    except ValueError as e:  # NaN, Infinity, 1e999: not numbers a feed may carry
        raise FeedError(f"malformed JSON in {what}: {e}") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"{text[:20]} is not a finite number")
    return v


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def to_json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)


def _union(a: list, b: list, key=lambda x: json.dumps(x, sort_keys=True)) -> list:
    seen = {key(x) for x in a}
    return a + [x for x in b if key(x) not in seen and not seen.add(key(x))]


def merge_vulnerability(old: dict, facts: dict) -> dict:
    """The shared vulnerability object gathers the (public) facts every source tells about its CVE;
    the properties consumers read (description, CWE references, OpenCTI's CVSS) follow from them."""
    have = extensions.props(old, extensions.VULNERABILITY)
    merged = {"cvss": _union(listed(have.get("cvss")), facts.get("cvss", []), cvss_key)}
    for k in ("cpes", "cwes"):
        merged[k] = _union(listed(have.get(k)), facts.get(k, []), key=str)
    merged["kev"] = facts.get("kev") or have.get("kev")
    pages = [r for r in listed(old.get("external_references")) if isinstance(r, dict)
             and r.get("source_name") not in ("cve", "cwe")]
    merged["references"] = _union(pages, facts.get("references", []), key=lambda r: r.get("url"))
    return vulnerability(old["name"], old["created"], merged) | {"modified": old["modified"]}
