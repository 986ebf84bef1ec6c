"""CSAF 2.0 security advisories (CISA ICSMA/ICSA): one advisory per document.

A ROLIE feed index is recognised here (`rolie_entries`) but followed by the fetching stage,
since following means I/O.
"""

from __future__ import annotations

from ceptoar.model import Source, parse_date, tlp_max, tlp_name
from ceptoar.normalize import Entry, FeedError, advisory, to_json
from ceptoar.normalize.kev import load_json

HEALTHCARE_SECTOR = "healthcare"


def is_rolie(doc) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("feed"), dict) and "entry" in doc["feed"]


def rolie_entries(doc) -> list[dict]:
    """`{id, url, updated, title}` of each entry of a ROLIE JSON feed, newest first."""
    out = []
    for e in doc["feed"].get("entry") or []:
        if not isinstance(e, dict):
            continue
        url = (e.get("content") or {}).get("src") or next(
            (lk.get("href") for lk in e.get("link") or [] if lk.get("rel") == "self"), None)
        if url:
            out.append({"id": str(e.get("id") or url), "url": url, "title": e.get("title"),
                        "updated": e.get("updated") or e.get("published") or ""})
    out.sort(key=lambda x: x["updated"], reverse=True)
    return out


def _product_names(node) -> list[str]:
    names = []
    if isinstance(node, dict):
        if isinstance(node.get("product"), dict) and node["product"].get("name"):
            names.append(node["product"]["name"])
        for fp in node.get("full_product_names") or []:
            if isinstance(fp, dict) and fp.get("name"):
                names.append(fp["name"])
        for b in node.get("branches") or []:
            names.extend(_product_names(b))
    return names


def _scores(vuln: dict, cve: str) -> list[dict]:
    out = []
    for s in vuln.get("scores") or []:
        for key in ("cvss_v3", "cvss_v2"):
            c = s.get(key)
            if isinstance(c, dict):
                out.append({"version": c.get("version"), "score": c.get("baseScore"),
                            "severity": (c.get("baseSeverity") or "").capitalize() or None,
                            "vector": c.get("vectorString"), "type": "Base", "source": "CSAF", "cve": cve})
    return out


def parse(raw: bytes, source: Source, charset: str | None = None) -> list[Entry]:
    doc = load_json(raw, "the CSAF document")
    if is_rolie(doc):
        raise FeedError("this is a ROLIE index: fetch it as a csaf source so its documents are followed")
    return [document(doc, source)]


def document(doc, source: Source) -> Entry:
    meta = doc.get("document") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("tracking"), dict):
        raise FeedError("not a CSAF document (no document.tracking)")
    tracking = meta["tracking"]
    tracking_id = str(tracking.get("id") or "").strip()
    if not tracking_id:
        raise FeedError("CSAF document without tracking.id")
    notes = [n for n in meta.get("notes") or [] if isinstance(n, dict)]
    sectors = [n.get("text", "") for n in notes if (n.get("title") or "").lower() == "critical infrastructure sectors"]
    summary = "\n\n".join(n.get("text", "") for n in notes if n.get("category") == "summary")
    self_urls = [r.get("url") for r in meta.get("references") or [] if r.get("category") == "self" and r.get("url")]
    url = next((u for u in self_urls if not u.endswith(".json")), self_urls[0] if self_urls else None)

    cves, cwes, cvss, per_cve, remediations = [], [], [], {}, []
    for v in doc.get("vulnerabilities") or []:
        cve = str(v.get("cve") or "").upper()
        cwe = (v.get("cwe") or {}).get("id")
        scores = _scores(v, cve or None)
        cvss.extend(scores)
        if cwe:
            cwes.append(cwe)
        for r in v.get("remediations") or []:
            if r.get("details") and r["details"] not in remediations:
                remediations.append(r["details"])
        if cve:
            cves.append(cve)
            per_cve[cve] = {"x_ceptoar_cvss": scores, "x_ceptoar_cwes": [cwe] if cwe else []}
    tlp_label = ((meta.get("distribution") or {}).get("tlp") or {}).get("label")
    try:
        tlp = tlp_max(source.tlp, tlp_name(tlp_label)) if tlp_label else source.tlp
    except ValueError:
        tlp = source.tlp
    signals = []
    if tracking_id.upper().startswith("ICSMA-"):
        signals.append("icsma")
    signals += [f"csaf-sector:{s}" for s in sectors if HEALTHCARE_SECTOR in s.lower()]
    return advisory(
        source,
        tracking_id,
        title=meta.get("title") or tracking_id,
        description=summary,
        published=parse_date(tracking.get("initial_release_date")),
        modified=parse_date(tracking.get("current_release_date")),
        url=url,
        own_id=tracking_id,
        cves=cves,
        cvss=cvss,
        cwes=cwes,
        lang=(meta.get("lang") or "en")[:2],
        tlp=tlp,
        extra={
            "x_ceptoar_csaf": {
                "tracking_id": tracking_id,
                "version": tracking.get("version"),
                "products": sorted(set(_product_names(doc.get("product_tree") or {}))),
                "sectors": sectors,
                "remediations": remediations,
            }
        },
        per_cve=per_cve,
        medical_signals=signals,
        raw=to_json(doc),
    )
