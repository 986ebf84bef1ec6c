"""CSAF 2.0 security advisories (CISA ICSMA/ICSA): one advisory per document.

A ROLIE feed index is recognised here (`rolie_entries`) but followed by the fetching stage,
since following means I/O.
"""

from __future__ import annotations

from ceptoar.core.model import (
    CVE_RE,
    IDENTIFIER_RE,
    Source,
    canonical_identifier,
    other_vulnerability_ids,
    tlp_max,
    tlp_name,
)
from ceptoar.normalize import (
    drift,
    Entries,
    Entry,
    FeedError,
    advisory,
    date_field,
    list_field,
    load_json,
    scores,
    text_field,
    to_json,
)

HEALTHCARE_SECTOR = "healthcare"

# CSAF 2.0's remediation categories (section 3.2.3.12.2).
REMEDIATION_CATEGORIES = ("vendor_fix", "mitigation", "workaround", "none_available", "no_fix_planned", "fix_planned",
                          "optional_patch")


def is_rolie(doc) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("feed"), dict) and "entry" in doc["feed"]


def rolie_entries(doc, warnings: list[str] | None = None) -> list[dict]:
    """`{id, url, updated, title}` of each entry of a ROLIE JSON feed, newest first; entries of the
    wrong shape are left out (with a warning when a list is given)."""
    out = []
    entries = doc["feed"].get("entry")
    for i, e in enumerate(entries if isinstance(entries, list) else [], 1):
        content = e.get("content") if isinstance(e, dict) else None
        links = e.get("link") if isinstance(e, dict) else None
        url = content.get("src") if isinstance(content, dict) else None
        if not isinstance(url, str) and isinstance(links, list):
            url = next((lk.get("href") for lk in links if isinstance(lk, dict) and lk.get("rel") == "self"
                        and isinstance(lk.get("href"), str)), None)
        updated = (e.get("updated") or e.get("published") or "") if isinstance(e, dict) else ""
        if not isinstance(e, dict):
            if warnings is not None:
                warnings.append(f"skipped ROLIE entry {i}: a {type(e).__name__}, not an object")
            continue
        if not isinstance(url, str) or not isinstance(updated, str):
            if warnings is not None:
                warnings.append(f"skipped ROLIE entry {i}: " + ("no document URL (content.src or a self link)"
                                                                if not isinstance(url, str) else
                                                                f"its updated date is a {type(updated).__name__}"))
            continue
        ident = e.get("id") if isinstance(e.get("id"), str) and e.get("id") else url
        out.append({"id": ident, "url": url, "title": e.get("title"), "updated": updated})
    out.sort(key=lambda x: x["updated"], reverse=True)
    return out


def _product_names(tree) -> list[str]:
    """Every product name in a product tree, walked without recursion (trees can be deep)."""
    names, stack = [], [tree]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        product = node.get("product")
        if isinstance(product, dict) and isinstance(product.get("name"), str):
            names.append(product["name"])
        for fp in node.get("full_product_names") if isinstance(node.get("full_product_names"), list) else []:
            if isinstance(fp, dict) and isinstance(fp.get("name"), str):
                names.append(fp["name"])
        branches = node.get("branches")
        stack.extend(reversed(branches) if isinstance(branches, list) else [])
    return names


def _affected(tree, ids: set[str]) -> list[dict]:
    """The products of a product tree as vendor, product and version range or versions (the
    branches' vendor / product_name / product_version_range or product_version), limited to the
    product ids the vulnerabilities call affected when they name any."""
    out, stack = [], [(tree, {})]
    while stack:
        node, path = stack.pop()
        if not isinstance(node, dict):
            continue
        category, name = node.get("category"), node.get("name")
        if isinstance(category, str) and isinstance(name, str):
            path = path | {category: name}
        product = node.get("product")
        pid = product.get("product_id") if isinstance(product, dict) else None
        if isinstance(pid, str) and (not ids or pid in ids) and path.get("product_name"):
            version = path.get("product_version_range") or path.get("product_version")
            out.append({"vendor": path.get("vendor"), "product": path["product_name"],
                        **({"range": version} if version else {}), **_purl_of(product)})
        # Products named outside the branches, by their package URL (CSAF's full_product_names).
        for fp in node.get("full_product_names") if isinstance(node.get("full_product_names"), list) else []:
            if isinstance(fp, dict) and isinstance(fp.get("name"), str) and (not ids or fp.get("product_id") in ids) \
                    and _purl_of(fp):
                out.append({"vendor": None, "product": fp["name"], **_purl_of(fp)})
        branches = node.get("branches")
        stack.extend((b, path) for b in reversed(branches if isinstance(branches, list) else []))
    return [dict(t) for t in dict.fromkeys(tuple(sorted(a.items())) for a in out)]


def _purl_of(product) -> dict:
    """{"purl": …} from a product's identification helper (CSAF 2.0 `purl`, 2.1 `purls`), or {}."""
    helper = product.get("product_identification_helper") if isinstance(product, dict) else None
    if not isinstance(helper, dict):
        return {}
    given = [helper.get("purl"), *(helper.get("purls") if isinstance(helper.get("purls"), list) else [])]
    found = next((p for p in given if isinstance(p, str) and p.startswith("pkg:") and len(p) < 1000), None)
    return {"purl": found} if found else {}


def _scores(vuln: dict, cve: str | None, where: str, warnings: list[str]) -> list[dict]:
    """The CVSS scores of one vulnerability: CSAF 2.0's `scores[]` and CSAF 2.1's `metrics[].content`,
    each with `cvss_v4`, `cvss_v3` and `cvss_v2`, checked against their vectors."""
    held = [*list_field(vuln.get("scores"), where, "scores", warnings, dict),
            *(m["content"] for m in list_field(vuln.get("metrics"), where, "metrics", warnings, dict)
              if isinstance(m.get("content"), dict))]
    out = []
    for s in held:
        for key in ("cvss_v4", "cvss_v3", "cvss_v2"):
            c = s.get(key)
            if not isinstance(c, dict):
                continue
            found = scores.checked(text_field(c.get("version"), where, "cvss version", warnings), c.get("baseScore"),
                                   text_field(c.get("vectorString"), where, "vectorString", warnings), where, warnings,
                                   severity=text_field(c.get("baseSeverity"), where, "baseSeverity", warnings),
                                   type="Base", source="CSAF", cve=cve)
            if found:
                out.append(found)
    return out


def parse(raw: bytes, source: Source, charset: str | None = None) -> Entries:
    doc = load_json(raw, "the CSAF document")
    if is_rolie(doc):
        raise FeedError("this is a ROLIE index: fetch it as a csaf source so its documents are followed")
    out = Entries()
    out.append(document(doc, source, out.warnings))
    return out


def document(doc, source: Source, warnings: list[str] | None = None) -> Entry:
    """One CSAF document: the document's frame must be readable; a malformed vulnerability or field
    inside it is dropped with a warning."""
    warnings = [] if warnings is None else warnings
    meta = doc.get("document") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("tracking"), dict):
        raise FeedError("not a CSAF document (no document.tracking)")
    tracking = meta["tracking"]
    tracking_id = str(tracking.get("id") or "").strip() if isinstance(tracking.get("id"), str) else ""
    if not tracking_id:
        raise FeedError("CSAF document without tracking.id")
    where = tracking_id
    notes = list_field(meta.get("notes"), where, "notes", warnings, dict)
    sectors = [n["text"] for n in notes if str(n.get("title") or "").lower() == "critical infrastructure sectors"
               and isinstance(n.get("text"), str)]
    summary = "\n\n".join(n["text"] for n in notes if n.get("category") == "summary" and isinstance(n.get("text"), str))
    refs = list_field(meta.get("references"), where, "references", warnings, dict)
    self_urls = [r["url"] for r in refs if r.get("category") == "self" and isinstance(r.get("url"), str)]
    url = next((u for u in self_urls if not u.endswith(".json")), self_urls[0] if self_urls else None)

    cves, cwes, cvss, per_cve, remediations, categories, affected_ids = [], [], [], {}, [], [], set()
    identifiers: list[str] = []
    for i, v in enumerate(list_field(doc.get("vulnerabilities"), where, "vulnerabilities", warnings, dict), 1):
        cve = v.get("cve")
        if cve is not None and not (isinstance(cve, str) and CVE_RE.fullmatch(cve.strip())):
            warnings.append(f"{where}: vulnerability {i} has cve {str(cve)[:40]!r}, not a CVE id: dropped")
            cve = None
        cve = cve.strip().upper() if cve else None
        # `ids` (EUVD, GCVE, a vendor's bug id…): known schemes are the advisory's identifiers; a
        # vulnerability without a CVE is keyed by its EUVD (else GCVE) id.
        texts = [x["text"].strip() for x in list_field(v.get("ids"), where, "ids", warnings, dict)
                 if isinstance(x.get("text"), str)]
        identifiers += [canonical_identifier(t) for t in texts if IDENTIFIER_RE.fullmatch(t)]
        cve = cve or next(iter(other_vulnerability_ids(*texts)), None)
        # CSAF 2.0: one `cwe`; CSAF 2.1: a list, `cwes`.
        named = [v["cwe"]] if isinstance(v.get("cwe"), dict) else \
            list_field(v.get("cwes"), where, "cwes", warnings, dict)
        these = [c["id"] for c in named if isinstance(c.get("id"), str) and c["id"]]
        found = _scores(v, cve, f"{where} vulnerability {i}", warnings)
        cvss.extend(found)
        cwes += [c for c in these if c not in cwes]
        status = v.get("product_status") if isinstance(v.get("product_status"), dict) else {}
        for key in ("known_affected", "first_affected", "last_affected"):
            affected_ids.update(p for p in status.get(key) or [] if isinstance(p, str))
        for r in list_field(v.get("remediations"), where, "remediations", warnings, dict):
            if isinstance(r.get("details"), str) and r["details"] not in remediations:
                remediations.append(r["details"])
            if isinstance(r.get("category"), str) and r["category"] in REMEDIATION_CATEGORIES \
                    and r["category"] not in categories:
                categories.append(r["category"])
        if cve:
            cves.append(cve)
            per_cve[cve] = {"cvss": found, "cwes": these}
    distribution = meta.get("distribution") if isinstance(meta.get("distribution"), dict) else {}
    tlp_label = (distribution.get("tlp") or {}).get("label") if isinstance(distribution.get("tlp"), dict) else None
    try:
        tlp = tlp_max(source.tlp, tlp_name(tlp_label)) if isinstance(tlp_label, str) else source.tlp
    except ValueError:
        tlp = source.tlp
    signals = []
    if tracking_id.upper().startswith("ICSMA-"):
        signals.append("icsma")
    signals += [f"csaf-sector:{s}" for s in sectors if HEALTHCARE_SECTOR in s.lower()]
    title = meta.get("title") if isinstance(meta.get("title"), str) and meta.get("title") else tracking_id
    lang = meta.get("lang") if isinstance(meta.get("lang"), str) and meta.get("lang") else "en"
    return advisory(
        source,
        tracking_id,
        title=title,
        description=summary,
        published=date_field(tracking.get("initial_release_date"), where, "initial_release_date", warnings),
        modified=date_field(tracking.get("current_release_date"), where, "current_release_date", warnings),
        url=url,
        own_id=tracking_id,
        cves=cves,
        identifiers=[(i, None) for i in dict.fromkeys(identifiers) if i not in cves],
        cvss=cvss,
        cwes=cwes,
        lang=lang[:2],
        tlp=tlp,
        extra={
            "csaf": {
                "tracking_id": tracking_id,
                "version": tracking.get("version") if isinstance(tracking.get("version"), str) else None,
                "products": sorted(set(_product_names(doc.get("product_tree") or {}))),
                "affected": _affected(doc.get("product_tree") or {}, affected_ids),
                "sectors": sectors,
                "remediations": remediations,
                "remediation_categories": categories,
            }
        },
        per_cve=per_cve,
        medical_signals=signals,
        raw=to_json(doc),
        unknown=drift.csaf_fields(doc),
    )
