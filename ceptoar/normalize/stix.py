"""STIX 2.1 bundles (files, upstream TAXII), imported tolerantly.

Real bundles carry custom objects and properties, extra top-level keys, and TLP:CLEAR under
three encodings (the OASIS TLP 2.0 id, OpenCTI's reuse of the TLP 1.0 WHITE id, labels), so
objects are kept as dicts, never round-tripped through stix2's strict classes. Each `report`
becomes an advisory; objects no report references are wrapped in one report per bundle so
nothing is dropped.
"""

from __future__ import annotations

import hashlib
import json

from ceptoar.model import TLP_BY_ID, Source, find_cves, find_identifiers, parse_date, tlp_max, tlp_name
from ceptoar.normalize import Entry, FeedError, advisory, to_json
from ceptoar.normalize.kev import load_json


def objects_of(doc) -> list[dict]:
    if isinstance(doc, list):
        objs = doc
    elif isinstance(doc, dict) and isinstance(doc.get("objects"), list):
        objs = doc["objects"]
    elif isinstance(doc, dict) and "type" in doc and "id" in doc:
        objs = [doc]
    else:
        raise FeedError("not a STIX bundle (no 'objects' list)")
    valid = [o for o in objs if isinstance(o, dict) and isinstance(o.get("id"), str) and "--" in o["id"]
             and isinstance(o.get("type"), str)]
    if objs and not valid:
        raise FeedError("STIX bundle holds no object with a type and id")
    return valid


def marking_tlps(objects: list[dict]) -> dict[str, str]:
    """marking-definition id → TLP name, from the well-known ids and the bundle's own definitions."""
    known = dict(TLP_BY_ID)
    for o in objects:
        if o["type"] != "marking-definition" or o["id"] in TLP_BY_ID:
            continue  # the OASIS TLP definitions mean what OASIS says, whatever a bundle redefines
        candidates = [((o.get("definition") or {}).get("tlp") if isinstance(o.get("definition"), dict) else None),
                      o.get("name")]
        candidates += [ext.get("tlp_2_0") for ext in (o.get("extensions") or {}).values() if isinstance(ext, dict)]
        for c in candidates:
            if isinstance(c, str):
                try:
                    known[o["id"]] = tlp_name(c)
                    break
                except ValueError:
                    continue
    return known


def object_tlp(o: dict, markings: dict[str, str]) -> str | None:
    found = [markings[m] for m in o.get("object_marking_refs") or [] if m in markings]
    for label in o.get("labels") or []:
        if isinstance(label, str) and label.lower().startswith("tlp:"):
            try:
                found.append(tlp_name(label))
            except ValueError:
                pass
    return tlp_max(*found)


def parse(raw: bytes, source: Source, charset: str | None = None) -> list[Entry]:
    doc = load_json(raw, "the STIX bundle")
    bundle_id = doc.get("id") if isinstance(doc, dict) else None
    return entries_from_objects(objects_of(doc), source, bundle_id)


def _cves_of(report: dict, refs: list[dict]) -> list[str]:
    """CVE ids the report names: its `cve` references and the CVEs of the vulnerabilities it refers to."""
    found = []
    for obj in [report, *(o for o in refs if o["type"] == "vulnerability")]:
        for x in obj.get("external_references") or []:
            if isinstance(x, dict) and str(x.get("source_name", "")).lower() == "cve":
                found.extend(find_cves(str(x.get("external_id") or "")))
    return list(dict.fromkeys(c.upper() for c in found))


def entries_from_objects(objects: list[dict], source: Source, bundle_id: str | None = None) -> list[Entry]:
    """One entry per report (its referenced objects travel with it), and one wrapper entry for the
    objects no report references. The producer's ids and versions are kept; each object's own TLP
    (from its markings, the bundle's own TLP definitions included) is recorded."""
    markings = marking_tlps(objects)
    by_id = {o["id"]: o for o in objects}
    marking_objs = [o for o in objects if o["type"] == "marking-definition"]
    own = {o["id"]: t for o in objects if (t := object_tlp(o, markings))}
    entries, referenced = [], set()
    for r in (o for o in objects if o["type"] == "report"):
        refs = [by_id[i] for i in r.get("object_refs") or [] if isinstance(i, str) and i in by_id and i != r["id"]]
        referenced.update(o["id"] for o in refs)
        referenced.add(r["id"])
        tlp = tlp_max(source.tlp, *(object_tlp(o, markings) for o in [r, *refs])) or "CLEAR"
        supplied = [*refs, *(m for m in marking_objs if m["id"] not in {o["id"] for o in refs})]
        entries.append(Entry(
            key=r["id"],
            report=r,
            raw=to_json(r),
            objects=supplied,
            tags=[t for t in r.get("labels") or [] if isinstance(t, str)],
            tlp=tlp,
            cves=_cves_of(r, refs),
            object_tlps={o["id"]: own[o["id"]] for o in [r, *supplied] if o["id"] in own},
        ))
    rest = [o for o in objects if o["id"] not in referenced and o["type"] != "marking-definition"]
    if rest:
        text = json.dumps(rest, ensure_ascii=False)
        names = [o.get("name") for o in rest if isinstance(o.get("name"), str)][:3]
        key = f"bundle:{bundle_id}" if bundle_id else "objects:" + hashlib.sha256(
            "".join(sorted(o["id"] for o in rest)).encode()).hexdigest()[:32]
        dates = sorted(o.get("created") for o in rest if isinstance(o.get("created"), str))
        tlp = tlp_max(source.tlp, *(object_tlp(o, markings) for o in rest)) or "CLEAR"
        entry = advisory(
            source,
            key,
            title=f"{source.name or source.id}: " + (", ".join(names) if names else f"{len(rest)} STIX objects"),
            description=f"{len(rest)} STIX objects received outside any report"
            + (f" in bundle {bundle_id}" if bundle_id else ""),
            published=parse_date(dates[0]) if dates else None,
            modified=parse_date(dates[-1]) if dates else None,
            identifiers=[(i, None) for i in find_identifiers(text) if not i.startswith("CVE-")][:50],
            cves=find_cves(text),
            tlp=tlp,
            object_refs=[o["id"] for o in rest],
            included=[*rest, *marking_objs],
            raw=text,
        )
        entry.object_tlps = {o["id"]: own[o["id"]] for o in entry.objects if o["id"] in own}
        entries.append(entry)
    return entries
