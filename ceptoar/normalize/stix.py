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
import re
import uuid

from ceptoar.core import extensions
from ceptoar.core.model import (
    TLP_BY_ID,
    Source,
    find_cves,
    find_identifiers,
    listed,
    other_vulnerability_ids,
    parse_date,
    tlp_max,
    tlp_name,
)
from ceptoar.normalize import Entries, Entry, FeedError, advisory, budget, each_item, load_json_text, scores

STIX_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,249}--[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def objects_of(doc, warnings: list[str] | None = None) -> list[dict]:
    """The bundle's objects that have a STIX type and an id of that type; others are skipped."""
    if isinstance(doc, list):
        objs = doc
    elif isinstance(doc, dict) and isinstance(doc.get("objects"), list):
        objs = doc["objects"]
    elif isinstance(doc, dict) and "type" in doc and "id" in doc:
        objs = [doc]
    else:
        raise FeedError("not a STIX bundle (no 'objects' list)")
    valid = [o for o in objs if isinstance(o, dict) and isinstance(o.get("type"), str) and isinstance(o.get("id"), str)
             and STIX_ID_RE.fullmatch(o["id"]) and o["id"].startswith(o["type"] + "--")]
    if objs and not valid:
        raise FeedError("STIX bundle holds no object with a type and a valid id")
    if warnings is not None and len(valid) != len(objs):
        warnings.append(f"skipped {len(objs) - len(valid)} object(s) without a STIX type and a valid id of that type")
    return valid


def marking_tlps(objects: list[dict]) -> dict[str, str]:
    """marking-definition id → TLP name, from the well-known ids and the bundle's own definitions."""
    known = dict(TLP_BY_ID)
    for o in objects:
        if o["type"] != "marking-definition" or o["id"] in TLP_BY_ID:
            continue  # the OASIS TLP definitions mean what OASIS says, whatever a bundle redefines
        candidates = [((o.get("definition") or {}).get("tlp") if isinstance(o.get("definition"), dict) else None),
                      o.get("name")]
        extensions = o.get("extensions") if isinstance(o.get("extensions"), dict) else {}
        candidates += [ext.get("tlp_2_0") for ext in extensions.values() if isinstance(ext, dict)]
        for c in candidates:
            if isinstance(c, str):
                try:
                    known[o["id"]] = tlp_name(c)
                    break
                except ValueError:
                    continue
    return known


def object_tlp(o: dict, markings: dict[str, str]) -> str | None:
    found = [markings[m] for m in listed(o.get("object_marking_refs")) if isinstance(m, str) and m in markings]
    for label in listed(o.get("labels")):
        if isinstance(label, str) and label.lower().startswith("tlp:"):
            try:
                found.append(tlp_name(label))
            except ValueError:
                pass
    return tlp_max(*found)


def parse(raw: bytes, source: Source, charset: str | None = None) -> Entries:
    doc, text = load_json_text(raw, "the STIX bundle")
    bundle_id = doc.get("id") if isinstance(doc, dict) and isinstance(doc.get("id"), str) else None
    warnings: list[str] = []
    objects = objects_of(doc, warnings)
    # A bundle every object of which is read: an entry that holds all of them has the bundle as
    # received for its raw entry (a large one is not written out again beside its parsed objects).
    whole = text if (isinstance(doc, dict) and doc.get("type") == "bundle" and isinstance(doc.get("objects"), list)
                     and len(objects) == len(doc["objects"])) else None
    del doc, text
    out = entries_from_objects(objects, source, bundle_id, whole)
    out.warnings[:0] = warnings
    return out


def _cves_of(report: dict, refs: list[dict]) -> list[str]:
    """Vulnerability ids the report names: its `cve` references and the CVEs of the vulnerabilities
    it refers to; for a vulnerability (or report) with no CVE, its EUVD or GCVE id."""
    found = []
    for obj in [report, *(o for o in refs if o["type"] == "vulnerability")]:
        own = [x for x in listed(obj.get("external_references")) if isinstance(x, dict)]
        cves = [c for x in own if str(x.get("source_name", "")).lower() == "cve"
                for c in find_cves(str(x.get("external_id") or ""))]
        if not cves:
            named = [str(x.get("external_id") or "") for x in own if str(x.get("source_name", "")).lower() in
                     ("euvd", "gcve", "enisa")]
            if obj["type"] == "vulnerability" and isinstance(obj.get("name"), str):
                named.append(obj["name"])
            cves = other_vulnerability_ids(*named)[:1]
        found.extend(cves)
    return list(dict.fromkeys(c.upper() for c in found))


# The common properties importers read a vulnerability's CVSS from (OpenCTI's), by version.
OPENCTI_CVSS = (("x_opencti_cvss_v4_", "4.0"), ("x_opencti_cvss_", "3.1"), ("x_opencti_cvss_v2_", "2.0"))


def _scores_of(objs: list[dict], warnings: list[str]) -> tuple[list[dict], dict[str, dict]]:
    """The CVSS scores of the vulnerabilities a report refers to, from the common properties
    (`x_opencti_cvss_*`, v2 to v4) and the hub's own extension (another hub's objects), checked
    against their vectors: (all of them, CVE → {"cvss": its own})."""
    found, per_cve = [], {}
    for o in objs:
        if o["type"] != "vulnerability":
            continue
        cves = _cves_of(o, [])
        cve = cves[0] if len(cves) == 1 else None
        these = []
        for prefix, version in OPENCTI_CVSS:
            stated, vector = o.get(prefix + "base_score"), o.get(prefix + "vector_string")
            if stated is None and vector is None:
                continue
            c = scores.checked(version, stated, vector if isinstance(vector, str) else None, o["id"], warnings,
                               severity=o.get(prefix + "base_severity") if isinstance(
                                   o.get(prefix + "base_severity"), str) else None, type="Base")
            if c:
                these.append(c)
        for c in listed(extensions.props(o, extensions.VULNERABILITY).get("cvss")):
            if isinstance(c, dict):
                made = scores.checked(c.get("version"), c.get("score"), c.get("vector"), o["id"], warnings,
                                      severity=c.get("severity") if isinstance(c.get("severity"), str) else None,
                                      type="Base")
                if made:
                    these.append(made)
        these = list({(c["version"], c["score"], c["vector"]): c for c in these}.values())
        found += [c | ({"cve": cve} if cve else {}) for c in these]
        if cve and these:
            per_cve[cve] = {"cvss": [c | {"cve": cve} for c in these]}
    return found, per_cve


def newest(objects: list[dict], warnings: list[str]) -> list[dict]:
    """Each id once, at its newest `modified` (a bundle may carry several versions); two versions at
    the same `modified` with different content are reported and the first kept."""
    chosen: dict[str, dict] = {}
    for o in objects:
        prev = chosen.get(o["id"])
        if prev is None:
            chosen[o["id"]] = o
            continue
        a, b = str(prev.get("modified") or prev.get("created") or ""), str(o.get("modified") or o.get("created") or "")
        if b > a:
            chosen[o["id"]] = o
        elif b == a and prev != o:
            warnings.append(f"{o['id']}: two different versions at {b or 'no modified'}; the first stands")
    return list(chosen.values())


def travelling(report: dict, by_id: dict[str, dict]) -> list[dict]:
    """What goes with a report: the objects it refers to, and the creators and extension-definitions
    of it and of them (markings travel separately)."""
    found: dict[str, dict] = {}
    wanted = [*listed(report.get("object_refs")), report.get("created_by_ref"), *extensions.used(report)]
    while wanted:
        i = wanted.pop(0)
        if not isinstance(i, str) or i in found or i == report["id"] or i not in by_id:
            continue
        found[i] = obj = by_id[i]
        wanted += [obj.get("created_by_ref"), *extensions.used(obj)]
    return [o for o in found.values() if o["type"] != "marking-definition"]


# The common properties' JSON types (STIX 2.1 §3.2): a producer's object with another type is kept
# as received and named in a warning (what the hub derives from it reads it as absent).
COMMON_TYPES = {"name": str, "description": str, "created": str, "modified": str, "published": str,
                "created_by_ref": str, "lang": str, "labels": list, "external_references": list, "object_refs": list,
                "object_marking_refs": list, "granular_markings": list, "revoked": bool, "confidence": int}
_JSON_TYPE = {str: "a string", list: "a list", bool: "true or false", int: "an integer", dict: "an object",
              float: "a number", type(None): "null"}


def type_warnings(o: dict) -> list[str]:
    """One line per common property of the wrong JSON type."""
    out = []
    for prop, want in COMMON_TYPES.items():
        if prop in o and prop != "object_refs" and not (isinstance(o[prop], want) and
                                                        (want is not int or not isinstance(o[prop], bool))):
            got = _JSON_TYPE.get(type(o[prop]), type(o[prop]).__name__)
            out.append(f"{o['id']}: {prop} is {got}, not {_JSON_TYPE[want]}: kept as received, read as absent")
    return out


def _bundle_text(bundle_id: str, objects: list[dict], sort_keys: bool = False) -> str:
    """json.dumps of the bundle, the same text, made one object at a time: the encoder's pieces of a
    whole bundle of a hundred thousand objects would take three times the text itself."""
    # A thousand objects at a time: their texts are joined into one piece and let go.
    body = ", ".join(", ".join(json.dumps(o, ensure_ascii=False, sort_keys=sort_keys) for o in objects[i:i + 1000])
                     for i in range(0, len(objects), 1000))
    if sort_keys:
        return '{"id": ' + json.dumps(bundle_id, ensure_ascii=False) + ', "objects": [' + body + '], "type": "bundle"}'
    return '{"type": "bundle", "id": ' + json.dumps(bundle_id, ensure_ascii=False) + ', "objects": [' + body + "]}"


def _wrapper_key(rest: list[dict], bundle_id: str | None) -> str:
    return f"bundle:{bundle_id}" if bundle_id else "objects:" + hashlib.sha256(
        "".join(sorted(o["id"] for o in rest)).encode()).hexdigest()[:32]


def entries_from_objects(objects: list[dict], source: Source, bundle_id: str | None = None,
                         whole: str | None = None) -> Entries:
    """One entry per report (its referenced objects travel with it), and one wrapper entry for the
    objects no report references. The producer's ids are kept, each at its newest version; each
    object's own TLP (from its markings, the bundle's own TLP definitions included) is recorded."""
    out = Entries()
    given = len(objects)
    objects = newest(objects, out.warnings)
    whole = whole if len(objects) == given else None  # `whole`: the bundle's text, when every object was read
    for i, o in enumerate(objects, 1):
        out.warnings += type_warnings(o)
        if i % 1000 == 0:
            budget.check(lambda i=i: f"reading object {i:,} of {len(objects):,}")
    markings = marking_tlps(objects)
    by_id = {o["id"]: o for o in objects}
    marking_objs = [o for o in objects if o["type"] == "marking-definition"]
    own = {o["id"]: t for o in objects if (t := object_tlp(o, markings))}
    referenced = set()

    def entry(r: dict) -> Entry:
        if not isinstance(r.get("object_refs"), list):
            out.warnings.append(f"{r['id']}: object_refs is not a list: read as empty")
        refs = travelling(r, by_id)
        referenced.update(o["id"] for o in refs)
        referenced.add(r["id"])
        tlp = tlp_max(source.tlp, *(object_tlp(o, markings) for o in [r, *refs])) or "CLEAR"
        supplied = [*refs, *(m for m in marking_objs if m["id"] not in {o["id"] for o in refs})]
        # The report with what it came with (it parses alone): the bundle itself when that is all of it.
        raw = whole if whole is not None and 1 + len(supplied) == len(objects) else _bundle_text(
            bundle_id or f"bundle--{uuid.uuid5(uuid.NAMESPACE_URL, r['id'])}", [r, *supplied], True)
        cvss, per_cve = _scores_of(refs, out.warnings)
        return Entry(key=r["id"], report=r, raw=raw, objects=supplied, cvss=cvss, cve_facts=per_cve,
                     tags=[t for t in listed(r.get("labels")) if isinstance(t, str)], tlp=tlp, cves=_cves_of(r, refs),
                     object_tlps={o["id"]: own[o["id"]] for o in [r, *supplied] if o["id"] in own})

    each_item([o for o in objects if o["type"] == "report"], lambda i, r: f"report {r['id']}", entry, out)
    entries = out
    rest = [o for o in objects if o["id"] not in referenced and o["type"] != "marking-definition"]
    if rest:
        # The wrapper's raw entry is the bundle of these objects: identifiers are found in it (one
        # text of a large bundle, not two).
        key = _wrapper_key(rest, bundle_id)
        text = whole if whole is not None and len(rest) + len(marking_objs) == len(objects) else _bundle_text(
            bundle_id or "bundle--" + str(uuid.uuid5(uuid.NAMESPACE_URL, key)), [*rest, *marking_objs])
        names = [o.get("name") for o in rest if isinstance(o.get("name"), str)][:3]
        dates = sorted(o.get("created") for o in rest if isinstance(o.get("created"), str))
        tlp = tlp_max(source.tlp, *(object_tlp(o, markings) for o in rest)) or "CLEAR"
        wrapper = advisory(
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
        del text
        wrapper.object_tlps = {o["id"]: own[o["id"]] for o in wrapper.objects if o["id"] in own}
        entries.append(wrapper)
    return entries
