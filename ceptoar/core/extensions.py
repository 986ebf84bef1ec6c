"""The hub's own data on STIX objects, as STIX 2.1 property extensions.

Four extension-definitions, authored by the hub's identity: `advisory` (on reports: the source's
facts and the analyst's decisions), `vulnerability` (public facts per CVE), `source` (on a source's
identity) and `incident` (on incident records, never published). Their JSON Schemas live in
`ceptoar/core/schemas/extensions.json`; each definition object carries its own part of that document.
The definitions and the hub identity are hub objects seeded into every store and served with the
objects that use them.

Objects written before the hub used extensions carried `x_ceptoar_<name>` properties; `props`
reads both, so an older upstream hub's objects lose nothing.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources

from ceptoar.core.model import TLP_IDS, stable_id

HUB_IDENTITY = stable_id("identity", "hub", "ceptoar")
ADVISORY = stable_id("extension-definition", "ceptoar", "advisory")
VULNERABILITY = stable_id("extension-definition", "ceptoar", "vulnerability")
SOURCE = stable_id("extension-definition", "ceptoar", "source")
INCIDENT = stable_id("extension-definition", "ceptoar", "incident")
LEGACY_PREFIX = "x_ceptoar_"

# id → (name in the schema document, title, version, date of that version)
DEFINITIONS = {
    ADVISORY: ("advisory", "CEPTOAR advisory", "1.1.0", "2026-11-22T06:00:00.000Z"),
    VULNERABILITY: ("vulnerability", "CEPTOAR vulnerability", "1.0.0", "2026-11-22T00:00:00.000Z"),
    SOURCE: ("source", "CEPTOAR source", "1.0.0", "2026-11-22T00:00:00.000Z"),
    INCIDENT: ("incident", "CEPTOAR incident", "1.0.0", "2026-11-22T00:00:00.000Z"),
}
# Which extension the hub's data takes on each object type.
FOR_TYPE = {"report": ADVISORY, "vulnerability": VULNERABILITY, "identity": SOURCE, "incident": INCIDENT}


@cache
def schema_document() -> dict:
    return json.loads(resources.files("ceptoar.core").joinpath("schemas/extensions.json").read_text("utf-8"))


def schema(name: str) -> dict:
    """The JSON Schema of one extension: its definition and the definitions it refers to."""
    doc = schema_document()
    defs, todo = {}, [name]
    while todo:
        n = todo.pop()
        if n not in defs:
            defs[n] = doc["$defs"][n]
            todo += re.findall(r'"#/\$defs/([a-z_]+)"', json.dumps(defs[n]))
    return {"$schema": doc["$schema"], "$ref": f"#/$defs/{name}", "$defs": dict(sorted(defs.items()))}


def hub_identity() -> dict:
    return {
        "type": "identity", "spec_version": "2.1", "id": HUB_IDENTITY,
        "created": "2026-11-22T00:00:00.000Z", "modified": "2026-11-22T00:00:00.000Z",
        "name": "医療セプター (Medical CEPTOAR) information sharing hub",
        "identity_class": "organization", "sectors": ["healthcare"],
        "object_marking_refs": [TLP_IDS["CLEAR"]],
    }


def definition(ext_id: str) -> dict:
    name, title, version, date = DEFINITIONS[ext_id]
    return {
        "type": "extension-definition", "spec_version": "2.1", "id": ext_id,
        "created": date, "modified": date, "created_by_ref": HUB_IDENTITY,
        "name": title,
        "description": schema_document()["$defs"][name]["description"],
        "schema": json.dumps(schema(name), ensure_ascii=False, separators=(",", ":")),
        "version": version,
        "extension_types": ["property-extension"],
        "object_marking_refs": [TLP_IDS["CLEAR"]],
    }


def hub_objects() -> list[dict]:
    """What every store holds for the extensions: the hub identity and the definitions."""
    return [hub_identity(), *(definition(i) for i in DEFINITIONS)]


def props(obj: dict, ext_id: str | None = None) -> dict:
    """The hub's properties on an object (its extension, over any legacy `x_ceptoar_*` ones).
    Only dicts come back: a producer's extension of the wrong shape reads as empty."""
    ext_id = ext_id or FOR_TYPE.get(obj.get("type"))
    out = {k[len(LEGACY_PREFIX):]: v for k, v in obj.items() if k.startswith(LEGACY_PREFIX)}
    exts = obj.get("extensions")
    ext = exts.get(ext_id) if isinstance(exts, dict) else None
    if isinstance(ext, dict):
        out.update((k, v) for k, v in ext.items() if k != "extension_type")
    return out


def prop(obj: dict, name: str, kind: type | tuple | None = None, ext_id: str | None = None):
    """One hub property; with `kind`, None unless it has that type (a bool is no number)."""
    return typed(props(obj, ext_id), name, kind)


def typed(found: dict, name: str, kind: type | tuple | None = None):
    """prop() from what props() returned (one reading of an object for several properties)."""
    v = found.get(name)
    if kind is None or v is None:
        return v
    if isinstance(v, bool) and kind is not bool:
        return None
    return v if isinstance(v, kind) else None


def with_props(obj: dict, ext_id: str | None = None, **values) -> dict:
    """A copy of `obj` whose hub extension holds `values` over what it held (empty values removed;
    legacy properties folded in and dropped)."""
    ext_id = ext_id or FOR_TYPE[obj["type"]]
    merged = props(obj, ext_id) | values
    merged = {k: v for k, v in merged.items() if v not in (None, "", [], {})}
    out = {k: v for k, v in obj.items() if not k.startswith(LEGACY_PREFIX)}
    exts = dict(out["extensions"]) if isinstance(out.get("extensions"), dict) else {}
    if merged:
        exts[ext_id] = {"extension_type": "property-extension", **dict(sorted(merged.items()))}
    else:
        exts.pop(ext_id, None)
    if exts:
        out["extensions"] = exts
    else:
        out.pop("extensions", None)
    return out


def without(obj: dict, *names: str, ext_id: str | None = None) -> dict:
    """A copy without the named hub properties (in the extension or legacy)."""
    ext_id = ext_id or FOR_TYPE[obj["type"]]
    kept = {k: v for k, v in props(obj, ext_id).items() if k not in names}
    cleared = {k: v for k, v in obj.items() if not k.startswith(LEGACY_PREFIX)}
    if isinstance(cleared.get("extensions"), dict):
        cleared["extensions"] = {k: v for k, v in cleared["extensions"].items() if k != ext_id}
    return with_props(cleared, ext_id, **kept)


def used(obj: dict) -> list[str]:
    """The extension-definition ids an object's extensions name."""
    exts = obj.get("extensions")
    return [k for k in exts if isinstance(k, str) and k.startswith("extension-definition--")] \
        if isinstance(exts, dict) else []


def converted(obj: dict) -> dict:
    """An object of the older form with its `x_ceptoar_*` properties moved into its extension."""
    if not any(k.startswith(LEGACY_PREFIX) for k in obj) or obj.get("type") not in FOR_TYPE:
        return obj
    return with_props(obj)
