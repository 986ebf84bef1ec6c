"""Exports: STIX bundles of stored objects."""

from __future__ import annotations

import json
import uuid

from ceptoar.collections import closure
from ceptoar.store import Store


def report_bundle(store: Store, report_id: str) -> dict:
    """A bundle of the report's newest version and every object it references (and their markings)."""
    report = store.latest_object(report_id)
    objects, seen = [report], {report_id}
    refs = [*report.get("object_refs", []), report.get("created_by_ref"), *report.get("object_marking_refs", [])]
    while refs:
        ref = refs.pop(0)
        if not ref or ref in seen:
            continue
        seen.add(ref)
        obj = store.latest_object(ref)
        if obj is None:
            continue
        objects.append(obj)
        refs.extend(m for m in obj.get("object_marking_refs", []) if m not in seen)
    return {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}


def published_bundle(store: Store, rows: list[dict]) -> dict:
    """A bundle of the published version of each advisory and everything it references, each
    object once (its newest version)."""
    objects: dict[str, dict] = {}
    for r in rows:
        version = next((o for o in store.object_versions(r["id"]) if o.get("modified") == r["published_version"]), None)
        if version is None:
            continue
        objects[version["id"]] = version
        for o in closure(store, version):
            objects.setdefault(o["id"], o)
    return {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": list(objects.values())}


def to_text(bundle: dict) -> str:
    return json.dumps(bundle, ensure_ascii=False, indent=2)
