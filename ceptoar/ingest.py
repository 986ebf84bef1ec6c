"""From normalized entries to stored versions: decide new / updated / unchanged, merge the
shared vulnerability objects, derive the analyst view, and write one source's batch atomically.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from ceptoar import medical
from ceptoar.model import (
    IDENTIFIER_RE,
    TLP_BY_ID,
    content_hash,
    later_than,
    tlp_max,
    vulnerability_id,
)
from ceptoar.normalize import Entry, cvss_key
from ceptoar.store import Store, utcnow


@dataclass
class Counts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    new_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"new": self.new, "updated": self.updated, "unchanged": self.unchanged}


def _union(a: list, b: list, key=lambda x: json.dumps(x, sort_keys=True)) -> list:
    seen = {key(x) for x in a}
    return a + [x for x in b if key(x) not in seen and not seen.add(key(x))]


def merge_vulnerability(old: dict, new: dict) -> dict:
    """The shared vulnerability object gathers the facts every source tells about its CVE."""
    merged = dict(old)
    merged["x_ceptoar_cvss"] = _union(old.get("x_ceptoar_cvss", []), new.get("x_ceptoar_cvss", []), cvss_key)
    for k in ("x_ceptoar_cpes", "x_ceptoar_cwes"):
        merged[k] = _union(old.get(k, []), new.get(k, []), key=str)
    if "x_ceptoar_kev" in new:
        merged["x_ceptoar_kev"] = new["x_ceptoar_kev"]
    return {k: v for k, v in merged.items() if v not in ([], None)}


def _is_own(obj: dict) -> bool:
    """Objects the hub itself authors may be re-versioned here; imported objects keep the
    versions their producer gave them."""
    if obj["type"] == "vulnerability":
        return obj["id"] == vulnerability_id(str(obj.get("name", "")))
    return "x_ceptoar_source" in obj


def advisory_row(entry: Entry, objects_by_id: dict[str, dict], source_id: str) -> dict:
    """The analyst's view of one advisory, derived from its STIX report and what it references."""
    r = entry.report
    refs = r.get("external_references") or []
    vulns = [objects_by_id[i] for i in r.get("object_refs", []) if i.startswith("vulnerability--") and i in objects_by_id]
    cves = list(dict.fromkeys(
        [x["external_id"].upper() for v in vulns for x in v.get("external_references", [])
         if x.get("source_name") == "cve" and x.get("external_id")]
        + [x["external_id"].upper() for x in refs if str(x.get("external_id", "")).upper().startswith("CVE-")]))
    identifiers = list(dict.fromkeys(
        x["external_id"] for x in refs if x.get("external_id") and IDENTIFIER_RE.fullmatch(x["external_id"])))
    url = next((x["url"] for x in refs if x.get("url")), None)
    cvss = [{k: c.get(k) for k in ("version", "score", "severity", "vector")} | ({"cve": c["cve"]} if c.get("cve") else {})
            for c in r.get("x_ceptoar_cvss") or []]
    scores = [c["score"] for c in cvss if isinstance(c.get("score"), (int, float))]
    dates = r.get("x_ceptoar_dates") or {}
    tlp = entry.tlp or tlp_max(*(TLP_BY_ID.get(m) for m in r.get("object_marking_refs") or [])) or "CLEAR"
    return {
        "id": r["id"],
        "source": source_id,
        "entry_key": entry.key,
        "title": r.get("name"),
        "description": r.get("description"),
        "published": dates.get("published") or r.get("published"),
        "published_utc": r.get("published") or r.get("created"),
        "modified": dates.get("modified") or r.get("modified"),
        "stix_modified": r.get("modified"),
        "url": url,
        "identifiers": identifiers,
        "cves": cves,
        "cvss": cvss,
        "cpes": list(r.get("x_ceptoar_cpes") or []),
        "max_cvss": max(scores) if scores else None,
        "tlp": tlp,
        "lang": r.get("lang"),
    }


def store_entries(store: Store, source_id: str, entries: list[Entry]) -> Counts:
    """Write a source's entries as new versions where they changed. The caller owns the
    transaction, so a failure later in the same fetch leaves nothing behind."""
    counts = Counts()
    # The same entry twice in one feed: the last one stands (feeds list newest last rarely, but
    # a duplicate must not become two versions).
    entries = list({e.key: e for e in entries}.values())
    all_ids = [o["id"] for e in entries for o in e.objects]
    latest = store.latest_objects(all_ids)
    states = store.advisory_states([e.report["id"] for e in entries])
    raw_known = store.raw_versions(source_id, [e.key for e in entries])
    pending: dict[str, dict] = {}  # id → newest object written in this batch
    obj_rows, adv_rows, cve_rows, raw_rows = [], [], [], []
    now = utcnow()

    def current(oid: str) -> dict | None:
        if oid in pending:
            return pending[oid]
        if oid in latest:
            obj = json.loads(latest[oid]["json"])
            pending[oid] = obj
            return obj
        return None

    def put(obj: dict) -> None:
        pending[obj["id"]] = obj
        obj_rows.append((obj["id"], obj.get("modified") or obj.get("created") or "", obj["type"],
                         content_hash(obj), json.dumps(obj, ensure_ascii=False, sort_keys=True)))

    for entry in entries:
        report_changed = False
        for obj in entry.objects:
            old = current(obj["id"])
            if old is None:
                put(obj)
                report_changed |= obj is entry.report
                continue
            candidate = merge_vulnerability(old, obj) if obj["type"] == "vulnerability" and _is_own(obj) else obj
            if content_hash(candidate) == content_hash(old):
                continue
            if _is_own(candidate):
                candidate = dict(candidate, created=old.get("created", candidate.get("created")),
                                 modified=later_than(obj.get("modified"), old.get("modified", "")))
            elif (candidate.get("modified") or "") <= (old.get("modified") or ""):
                continue  # an imported object only moves forward by its producer's `modified`
            put(candidate)
            report_changed |= obj is entry.report
        report = pending.get(entry.report["id"], entry.report)
        rid = report["id"]
        state = states.get(rid)
        if state is None:
            counts.new += 1
            counts.new_ids.append(rid)
        elif report_changed:
            counts.updated += 1
        else:
            counts.unchanged += 1
            if raw_known.get(entry.key, (None,))[0] == _raw_hash(entry.raw):
                continue
        by_id = {**{o["id"]: o for o in entry.objects}, **{k: v for k, v in pending.items() if k in report.get("object_refs", [])}}
        row = advisory_row(Entry(entry.key, [report, *entry.objects[1:]], entry.raw, entry.tags, entry.tlp), by_id, source_id)
        signals = medical.signals(report)
        auto = list(dict.fromkeys(entry.tags + ([medical.TAG] if signals else [])))
        if state is None:
            tags = auto
        else:  # keep the analyst's choices; only newly arising suggestions are added
            tags = state["tags"] + [t for t in auto if t not in state["auto_tags"] and t not in state["tags"]]
        row.update(tags=tags, auto_tags=auto, medical_signals=signals, updated_at=now,
                   first_seen=state["first_seen"] if state else now, status="new")
        adv_rows.append(row)
        cve_rows.extend((c, rid) for c in row["cves"])
        raw_rows.append((source_id, entry.key, _raw_hash(entry.raw), report.get("modified"), entry.raw))
    store.write_batch(objects=obj_rows, advisories=adv_rows, advisory_cves=cve_rows, raw_entries=raw_rows)
    return counts


def _raw_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()

