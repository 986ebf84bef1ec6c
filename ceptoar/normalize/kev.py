"""CISA Known Exploited Vulnerabilities catalog: one advisory per catalog entry.

The catalog's `count` has been seen wrong in published copies: the list is the truth.
"""

from __future__ import annotations

import json

from ceptoar.model import Source, parse_date
from ceptoar.normalize import Entry, FeedError, advisory, to_json

CATALOG_URL = "https://www.cisa.gov/known-exploited-vulnerabilities-catalog"


def load_json(raw: bytes, what: str):
    if not raw or not raw.strip():
        raise FeedError("empty body")
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise FeedError(f"{what} is not UTF-8 (bad byte at offset {e.start})") from None
    except json.JSONDecodeError as e:
        head = raw.lstrip()[:15].lower()
        if head.startswith((b"<!doctype", b"<html")):
            raise FeedError(f"got an HTML page instead of {what}") from None
        raise FeedError(f"malformed JSON in {what}: {e}") from None


def parse(raw: bytes, source: Source, charset: str | None = None) -> list[Entry]:
    doc = load_json(raw, "the KEV catalog")
    if not isinstance(doc, dict) or not isinstance(doc.get("vulnerabilities"), list):
        raise FeedError("not a KEV catalog (no 'vulnerabilities' list)")
    entries = []
    for i, v in enumerate(doc["vulnerabilities"]):
        cve = str(v.get("cveID", "")).strip().upper() if isinstance(v, dict) else ""
        if not cve.startswith("CVE-"):
            raise FeedError(f"KEV entry {i + 1} has no cveID")
        ransomware = str(v.get("knownRansomwareCampaignUse", "")).strip()
        kev = {
            "vendor_project": v.get("vendorProject"),
            "product": v.get("product"),
            "vulnerability_name": v.get("vulnerabilityName"),
            "date_added": v.get("dateAdded"),
            "due_date": v.get("dueDate"),
            "required_action": v.get("requiredAction"),
            "known_ransomware_campaign_use": ransomware,
            "notes": v.get("notes"),
        }
        kev = {k: val for k, val in kev.items() if val not in (None, "")}
        cwes = [c for c in v.get("cwes") or [] if isinstance(c, str)]
        entries.append(advisory(
            source,
            cve,
            title=v.get("vulnerabilityName") or cve,
            description=v.get("shortDescription", ""),
            published=parse_date(v.get("dateAdded")),
            url=f"https://nvd.nist.gov/vuln/detail/{cve}",
            own_id=cve,
            cves=[cve],
            cwes=cwes,
            lang="en",
            extra={"x_ceptoar_kev": kev},
            per_cve={cve: {"x_ceptoar_kev": kev, "x_ceptoar_cwes": cwes}},
            tags=["kev"] + (["ransomware"] if ransomware.lower() == "known" else []),
            raw=to_json(v),
        ))
    return entries
