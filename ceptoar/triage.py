"""Analyst decisions: tags, TLP, severity, medical relevance, notes, publish / reject / revoke.

A decision that alters published content makes a new STIX version of the report (the ingested
report with the analyst's overlay: labels, marking, severity, medical), which enters every
matching collection. Every mutation is audited in the same transaction. Publishing a high or
critical advisory during an alert period queues a flash alert (sent by the digest stage).
"""

from __future__ import annotations

import json

from ceptoar import collections as colls
from ceptoar.filters import SEVERITIES, compile_filter
from ceptoar.model import TLP_IDS, effective_severity, later_than, now_stix, serialize, tlp_name
from ceptoar.store import Store, utcnow


class TriageError(ValueError):
    pass


def _rows(store: Store, refs: list[str]) -> list[dict]:
    rows = [store.find_advisory(r) for r in refs]
    return list({r["id"]: r for r in rows}.values())


def overlay(source_report: dict, row: dict) -> dict:
    """The report as the hub publishes it."""
    pub = {k: v for k, v in source_report.items() if k not in ("labels", "x_ceptoar_severity", "x_ceptoar_medical")}
    if row.get("tags"):
        pub["labels"] = sorted(row["tags"])
    pub["object_marking_refs"] = [TLP_IDS[row["tlp"]]]
    if row.get("severity"):
        pub["x_ceptoar_severity"] = row["severity"]
    if row.get("medical") is not None:
        pub["x_ceptoar_medical"] = bool(row["medical"])
    return pub


def _new_version(store: Store, oid: str, obj: dict, origin: str = "triage") -> dict:
    """Store `obj` as a version later than every stored version of `oid`, unless it equals the
    newest version of that origin. Returns the version now current."""
    known = store.latest_objects([oid], origin=origin).get(oid)
    text, h = serialize(obj)
    if known and known["hash"] == h:
        return json.loads(known["json"])
    newest = store.latest_objects([oid], origin=None)[oid]["max_modified"]
    obj = dict(obj, modified=later_than(now_stix(), newest))
    text, h = serialize(obj)
    store.put_objects([(oid, obj["modified"], obj["type"], h, text)], origin=origin)
    return obj


def _publish_row(store: Store, row: dict, kev: set[str]) -> list[str]:
    source = json.loads(store.latest_objects([row["id"]], origin="source")[row["id"]]["json"])
    version = _new_version(store, row["id"], overlay(source, row))
    placed = colls.matching(store, row, kev)
    colls.place(store, version, placed)
    store.update_advisory(row["id"], status="published", published_source=source["modified"],
                          published_version=version["modified"], updated_at=utcnow())
    return placed


def _refresh_if_published(store: Store, row: dict) -> None:
    if row["status"] == "published":
        _publish_row(store, store.find_advisory(row["id"]), store.kev_cves())


def publish(store: Store, refs: list[str], actor: str) -> list[dict]:
    rows = _rows(store, refs)
    for r in rows:
        if r["status"] == "revoked":
            raise TriageError(f"{r['id']} is revoked; a revoked advisory is not published again")
    out = []
    with store.transaction():
        kev = store.kev_cves()
        periods = store.active_alert_periods(utcnow())
        for r in rows:
            placed = _publish_row(store, r, kev)
            flash = bool(periods and placed and effective_severity(r) in ("high", "critical")
                         and store.queue_flash(r["id"], periods[0]["name"]))
            store.audit(actor, "publish", r["id"], {"collections": placed, "previous_status": r["status"],
                                                    **({"flash": periods[0]["name"]} if flash else {})})
            out.append({"id": r["id"], "collections": placed, "flash": flash})
    return out


def reject(store: Store, refs: list[str], reason: str, actor: str) -> list[dict]:
    rows = _rows(store, refs)
    for r in rows:
        if r["status"] in ("published", "revoked"):
            raise TriageError(f"{r['id']} is {r['status']}: revoke a published advisory instead")
    with store.transaction():
        for r in rows:
            store.update_advisory(r["id"], status="rejected", notes=r["notes"] + [_note(actor, f"rejected: {reason}")],
                                  updated_at=utcnow())
            store.audit(actor, "reject", r["id"], {"reason": reason})
    return [{"id": r["id"], "status": "rejected"} for r in rows]


def revoke(store: Store, refs: list[str], reason: str, actor: str) -> list[dict]:
    """A `revoked: true` version goes to every collection that holds the advisory."""
    rows = _rows(store, refs)
    for r in rows:
        if r["status"] != "published":
            raise TriageError(f"{r['id']} is {r['status']}: only published advisories are revoked (reject the others)")
    out = []
    with store.transaction():
        holders = store.collections_of([r["id"] for r in rows])
        for r in rows:
            current = json.loads(store.latest_objects([r["id"]], origin="triage")[r["id"]]["json"])
            version = _new_version(store, r["id"], dict(current, revoked=True))
            colls.place(store, version, holders.get(r["id"], []))
            store.update_advisory(r["id"], status="revoked", published_version=version["modified"],
                                  notes=r["notes"] + [_note(actor, f"revoked: {reason}")], updated_at=utcnow())
            store.audit(actor, "revoke", r["id"], {"reason": reason, "collections": holders.get(r["id"], [])})
            out.append({"id": r["id"], "collections": holders.get(r["id"], [])})
    return out


def _note(actor: str, text: str) -> dict:
    return {"time": utcnow(), "actor": actor, "text": text}


def retag(store: Store, refs: list[str], add: list[str], remove: list[str], actor: str) -> list[dict]:
    bad = [t for t in add if not t.strip() or any(c.isspace() for c in t)]
    if bad:
        raise TriageError(f"tags are single words: {bad!r}")
    rows = _rows(store, refs)
    with store.transaction():
        for r in rows:
            tags = [t for t in r["tags"] if t not in remove] + [t for t in add if t not in r["tags"]]
            if tags == r["tags"]:
                continue
            store.update_advisory(r["id"], tags=tags, updated_at=utcnow())
            store.audit(actor, "tag" if add else "untag", r["id"], {"added": add, "removed": remove})
            _refresh_if_published(store, r)
    return [{"id": r["id"], "tags": store.find_advisory(r["id"])["tags"]} for r in rows]


def triage(store: Store, ref: str, actor: str, *, tlp: str | None = None, severity: str | None = None,
           medical: bool | None = None, note: str | None = None) -> dict:
    r = store.find_advisory(ref)
    changes: dict = {}
    if tlp is not None:
        changes["tlp"] = tlp_name(tlp)
    if severity is not None:
        if severity.lower() not in SEVERITIES:
            raise TriageError(f"unknown severity {severity!r} (use {', '.join(SEVERITIES)})")
        changes["severity"] = severity.lower()
    if medical is not None:
        changes["medical"] = medical
        # The decision replaces the suggestion.
        tags = [t for t in r["tags"] if t not in (colls.SUGGESTED, "medical")] + (["medical"] if medical else [])
        changes["tags"] = tags
    if note:
        changes["notes"] = r["notes"] + [_note(actor, note)]
    if not changes:
        raise TriageError("nothing to change: give --tlp, --severity, --medical/--not-medical or --note")
    with store.transaction():
        store.update_advisory(r["id"], **changes, updated_at=utcnow())
        store.audit(actor, "triage", r["id"], {k: v for k, v in changes.items() if k != "notes"}
                    | ({"note": note} if note else {}))
        _refresh_if_published(store, r)
    return store.find_advisory(r["id"])


def auto_publish(store: Store, source: dict, ids: list[str]) -> list[str]:
    """The source's `auto_publish` rule (a filter) publishes matching new or changed advisories."""
    rule = (source.get("options") or {}).get("auto_publish")
    if not rule or not ids:
        return []
    pred = compile_filter(rule)
    rows = colls.filter_view(store.list_advisories(ids=ids), store.kev_cves())
    chosen = [r["id"] for r in rows if r["status"] in ("new", "published") and pred(r)]
    if chosen:
        publish(store, chosen, f"auto-publish:{source['id']}")
    return chosen
