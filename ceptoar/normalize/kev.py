"""CISA Known Exploited Vulnerabilities catalog: one advisory per catalog entry.

The catalog's `count` has been seen wrong in published copies: the list is the truth.
"""

from __future__ import annotations

from ceptoar.core.model import CVE_RE, Source
from ceptoar.normalize import (
    drift,
    CWE_ID_RE,
    Entries,
    Entry,
    EntryStream,
    FeedError,
    advisory,
    date_field,
    json_list_items,
    list_field,
    load_json,
    text_field,
    to_json,
)

CATALOG_URL = "https://www.cisa.gov/known-exploited-vulnerabilities-catalog"


def parse(raw: bytes, source: Source, charset: str | None = None) -> Entries:
    return stream(raw, source, charset).read()


def stream(raw: bytes, source: Source, charset: str | None = None) -> EntryStream:
    """The catalog's entries one at a time, each decoded from the text when its turn comes (a large
    catalog is never held as one tree; a malformed catalog fails when the reading reaches the fault,
    before the ingest's one transaction commits)."""
    vulns = json_list_items(raw, "the KEV catalog", "vulnerabilities")
    if vulns is None:  # no object holding that list: read whole, for the exact error
        doc = load_json(raw, "the KEV catalog")
        if not isinstance(doc, dict) or not isinstance(doc.get("vulnerabilities"), list):
            raise FeedError("not a KEV catalog (no 'vulnerabilities' list)")
        vulns = iter(doc.pop("vulnerabilities"))

    def entries(out: EntryStream):
        for i, v in enumerate(vulns, 1):
            if not out.wanted(i):
                continue
            e = out.keep(lambda v: _entry(v, source, out.warnings), v, lambda i=i, v=v: _describe(i, v))
            if e is not None:
                yield e

    return EntryStream(entries, selectable=True)


def _describe(i: int, v) -> str:
    cve = v.get("cveID") if isinstance(v, dict) else None
    return f"KEV entry {i}" + (f" ({cve[:30]})" if isinstance(cve, str) and cve else "")


def _entry(v, source: Source, warnings: list[str]) -> Entry:
    if not isinstance(v, dict):
        raise TypeError("it is not a JSON object")
    cve = v.get("cveID")
    if not isinstance(cve, str) or not CVE_RE.fullmatch(cve.strip()):
        raise ValueError(f"cveID {str(cve)[:40]!r} is not a CVE id" if cve else "it has no cveID")
    cve = cve.strip().upper()

    def text(name: str) -> str | None:
        return text_field(v.get(name), cve, name, warnings)

    ransomware = (text("knownRansomwareCampaignUse") or "").strip()
    kev = {
        "vendor_project": text("vendorProject"),
        "product": text("product"),
        "vulnerability_name": text("vulnerabilityName"),
        "date_added": text("dateAdded"),
        "due_date": text("dueDate"),
        "required_action": text("requiredAction"),
        "known_ransomware_campaign_use": ransomware,
        "notes": text("notes"),
    }
    kev = {k: val for k, val in kev.items() if val not in (None, "")}
    cwes = [c for c in list_field(v.get("cwes"), cve, "cwes", warnings) if CWE_ID_RE.fullmatch(c)]
    return advisory(
        source,
        cve,
        title=kev.get("vulnerability_name") or cve,
        description=text("shortDescription") or "",
        published=date_field(kev.get("date_added"), cve, "dateAdded", warnings),
        url=f"https://nvd.nist.gov/vuln/detail/{cve}",
        own_id=cve,
        cves=[cve],
        cwes=cwes,
        lang="en",
        extra={"kev": kev},
        per_cve={cve: {"kev": kev, "cwes": cwes}},
        tags=["kev"] + (["ransomware"] if ransomware.lower() == "known" else []),
        raw=to_json({"vulnerabilities": [v]}),  # a one-entry catalog: kev.parse reads it alone
        unknown=drift.kev_fields(v),
    )
