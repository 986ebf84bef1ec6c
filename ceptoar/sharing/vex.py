"""A vendor's answers as a CSAF 2.0 VEX document (category `csaf_vex`): per advisory, one
vulnerability (per CVE, else named by the advisory's id) whose product status says, per product and
version the vendor was asked about, not affected (with its justification as a flag), affected (with
the planned fix as a remediation), fixed or under investigation.

The document names products and versions only: which facilities run them stays in the registers
(TLP:RED). Where the vendor answered differently for different customers running the same version,
the newest answer stands for that version here. Its TLP is the highest of the advisories it answers,
at most the vendor's clearance; valid against the OASIS CSAF 2.0 JSON schema.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ceptoar.core.model import TLP_ORDER
from ceptoar.facilities import vendors as parties
from ceptoar.store import Store

STATUS_KEY = {"not_affected": "known_not_affected", "affected": "known_affected", "fixed": "fixed",
              "under_investigation": "under_investigation"}
TLP_CSAF = {"CLEAR": "WHITE", "GREEN": "GREEN", "AMBER": "AMBER", "AMBER+STRICT": "AMBER", "RED": "RED"}


def vex(store: Store, vendor_id: str, advisory: str | None = None, actor: str = "ceptoar") -> tuple[dict, int]:
    """(the CSAF VEX document, how many answers it holds); audited as an export."""
    v = parties.get(store, vendor_id)
    answers = [a for a in store.vendors.answers().values()
               if a["vendor"] == vendor_id and (advisory is None or a["advisory"] == advisory)]
    if not answers:
        raise parties.VendorError(f"vendor {vendor_id!r} has no answers" + (f" for {advisory}" if advisory else ""))
    rows = {(r["facility"], r["n"]): r for a in {x["advisory"] for x in answers}
            for r in store.vendors.requested_rows(vendor_id, a)}
    products: dict[tuple[str, str], str] = {}
    newest: dict[tuple[str, str, str], dict] = {}  # (advisory, product, version) → answer
    for a in sorted(answers, key=lambda x: x["time"]):
        r = rows.get((a["facility"], a["n"]))
        if r is None or r["product"] is None:
            continue
        pv = (" ".join(x for x in (r["vendor"], r["product"]) if x), (r["version"] or "").strip())
        products.setdefault(pv, f"CEPTOAR-{vendor_id}-{len(products) + 1}")
        newest[(a["advisory"], *pv)] = a
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    vulns, tlps = [], []
    for aid in sorted({k[0] for k in newest}):
        adv = store.advisories.get(aid) or {}
        tlps.append(adv.get("tlp") or "GREEN")
        status: dict[str, list[str]] = {}
        flags, remediations = [], []
        for (a_id, name, version), a in newest.items():
            if a_id != aid:
                continue
            pid = products[(name, version)]
            status.setdefault(STATUS_KEY[a["status"]], []).append(pid)
            if a["justification"]:
                flags.append({"label": a["justification"], "product_ids": [pid]})
            if a["status"] == "affected":
                remediations.append({"category": "vendor_fix" if a["fix_date"] else "none_available",
                                     "details": (f"修正予定日 {a['fix_date']}" if a["fix_date"] else
                                                 a["note"] or "修正の予定は保守業者にお問い合わせください。"),
                                     "product_ids": [pid],
                                     **({"date": f"{a['fix_date']}T00:00:00.000Z"} if a["fix_date"] else {})})
            if a["status"] == "fixed":
                remediations.append({"category": "vendor_fix", "details": f"修正版 {a['fixed_version']}",
                                     "product_ids": [pid]})
        base = {"product_status": {k: sorted(set(p)) for k, p in status.items()},
                "ids": [{"system_name": "CEPTOAR advisory", "text": aid}]}
        if flags:
            base["flags"] = flags
        if remediations:
            base["remediations"] = remediations
        cves = adv.get("cves") or []
        for cve in [c for c in cves if c.startswith("CVE-")] or [None]:
            vulns.append(base | ({"cve": cve} if cve else {}))
    tlp = max(tlps, key=TLP_ORDER.index)
    tlp = min(tlp, v["clearance"], key=TLP_ORDER.index)
    doc = {
        "document": {
            "category": "csaf_vex", "csaf_version": "2.0", "lang": "ja",
            "title": f"{v['name']} の回答 (医療セプター)",
            "publisher": {"category": "coordinator", "name": "医療セプター (CEPTOAR hub)",
                          "namespace": "https://www.med.or.jp/"},
            "distribution": {"tlp": {"label": TLP_CSAF[tlp]}},
            "notes": [{"category": "summary",
                       "text": f"保守業者 {v['name']} が医療セプターに寄せた、担当製品への影響の回答。"}],
            "tracking": {"id": f"CEPTOAR-VEX-{vendor_id}-{now[:10]}", "status": "interim", "version": "1",
                         "initial_release_date": now, "current_release_date": now,
                         "revision_history": [{"date": now, "number": "1", "summary": "Answers as recorded."}]},
        },
        "product_tree": {"full_product_names": [{"name": f"{name} {version}".strip(), "product_id": pid}
                                                for (name, version), pid in products.items()]},
        "vulnerabilities": vulns,
    }
    store.audit.add(actor, "export", f"vex:{vendor_id}", {"advisory": advisory, "answers": len(newest)})
    return doc, len(newest)
