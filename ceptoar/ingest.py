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
    serialize,
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
    updated_ids: list[str] = field(default_factory=list)

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
    vulns = [objects_by_id[i] for i in r.get("object_refs", [])
             if i.startswith("vulnerability--") and i in objects_by_id]
    cves = list(dict.fromkeys(
        [x["external_id"].upper() for v in vulns for x in v.get("external_references", [])
         if x.get("source_name") == "cve" and x.get("external_id")]
        + [x["external_id"].upper() for x in refs if str(x.get("external_id", "")).upper().startswith("CVE-")]))
    identifiers = list(dict.fromkeys(
        x["external_id"] for x in refs
        if x.get("external_id") and IDENTIFIER_RE.fullmatch(x["external_id"])))
    url = next((x["url"] for x in refs if x.get("url")), None)
    cvss = [{k: c.get(k) for k in ("version", "score", "severity", "vector")}
            | ({"cve": c["cve"]} if c.get("cve") else {}) for c in r.get("x_ceptoar_cvss") or []]
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
    states = store.advisory_states([e.report["id"] for e in entries])
    raw_known = store.raw_versions(source_id, [e.key for e in entries])
    raw_hashes = {e.key: _raw_hash(e.raw) for e in entries}
    # Same bytes through the same normalizer give the same objects: nothing to compare.
    same = {e.key for e in entries
            if e.report["id"] in states and raw_known.get(e.key, (None,))[0] == raw_hashes[e.key]}
    counts.unchanged += len(same)
    entries = [e for e in entries if e.key not in same]
    latest = store.latest_objects([o["id"] for e in entries for o in e.objects])
    pending: dict[str, dict] = {}  # id → newest version, once loaded or written in this batch
    hashes = {oid: v["hash"] for oid, v in latest.items()}  # id → content hash of the newest version
    shared_done: set[str] = set()  # identities and markings repeat in every entry of a source
    obj_rows, adv_rows, cve_rows, raw_rows = [], [], [], []
    now = utcnow()

    def current(oid: str) -> dict:
        if oid not in pending:
            pending[oid] = json.loads(latest[oid]["json"])
        return pending[oid]

    def put(obj: dict) -> None:
        text, h = serialize(obj)
        pending[obj["id"]] = obj
        hashes[obj["id"]] = h
        obj_rows.append((obj["id"], obj.get("modified") or obj.get("created") or "", obj["type"], h, text))

    for entry in entries:
        report_changed = False
        for obj in entry.objects:
            oid = obj["id"]
            if obj["type"] in ("identity", "marking-definition"):
                if oid in shared_done:
                    continue
                shared_done.add(oid)
            if oid not in hashes:
                put(obj)
                report_changed |= obj is entry.report
                continue
            own_vuln = obj["type"] == "vulnerability" and _is_own(obj)
            candidate = merge_vulnerability(current(oid), obj) if own_vuln else obj
            h = content_hash(candidate)
            if h == hashes[oid]:
                continue
            old = current(oid)
            if _is_own(candidate):
                newest = max(old.get("modified", ""), latest.get(oid, {}).get("max_modified", ""))
                candidate = dict(candidate, created=old.get("created", candidate.get("created")),
                                 modified=later_than(obj.get("modified"), newest))
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
            counts.updated_ids.append(rid)
        else:
            counts.unchanged += 1
        by_id = {o["id"]: o for o in entry.objects} | {
            ref: pending[ref] for ref in report.get("object_refs", []) if ref in pending}
        current_entry = Entry(entry.key, [report, *entry.objects[1:]], entry.raw, entry.tags, entry.tlp)
        row = advisory_row(current_entry, by_id, source_id)
        signals = medical.signals(report)
        auto = list(dict.fromkeys(entry.tags + ([medical.TAG] if signals else [])))
        if state is None:
            tags = auto
        else:  # keep the analyst's choices; only newly arising suggestions are added
            tags = state["tags"] + [t for t in auto if t not in state["auto_tags"] and t not in state["tags"]]
        row.update(tags=tags, auto_tags=auto, medical_signals=signals, updated_at=now,
                   first_seen=state["first_seen"] if state else now, status="new", _existing=state is not None)
        adv_rows.append(row)
        cve_rows.extend((c, rid) for c in row["cves"])
        raw_rows.append((source_id, entry.key, raw_hashes[entry.key], report.get("modified"), entry.raw))
    store.write_batch(objects=obj_rows, advisories=adv_rows, advisory_cves=cve_rows, raw_entries=raw_rows)
    return counts


# Part of every raw hash: bump it when a normalizer changes, so stored entries are re-normalized.
NORMALIZER_VERSION = "2"


def _raw_hash(raw: str) -> str:
    return hashlib.sha256((NORMALIZER_VERSION + raw).encode("utf-8", "surrogatepass")).hexdigest()

