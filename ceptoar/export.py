"""Exports: STIX bundles of stored objects."""

from __future__ import annotations

import uuid

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
