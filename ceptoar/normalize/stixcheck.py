"""What the hub checks before it sends a producer's object on: the STIX 2.1 rules that consumers'
parsers and stix2-validator's default mode enforce and that real producers break (property names
such as MyJVN's `VULDEF-Document`, unparsable patterns, missing required properties, timestamps).

An object that fails is still stored, as received, but never served (`problems` gives the reasons
for the ingest warning). The report the hub publishes is its own version and is repaired instead
(`repaired_report`).
"""

from __future__ import annotations

import gc
import itertools
import re
from datetime import datetime

from ceptoar.core.model import listed

TYPE_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,248})[a-z0-9]$")
PROPERTY_RE = re.compile(r"^[a-z0-9_]{3,250}$")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,248}[a-z0-9]--[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
TIMESTAMP_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
                          r"T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?Z$")
LANG_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
SHORT_NAMES = {"id"}  # the one predefined property shorter than custom names may be

# Required properties of the STIX 2.1 domain and relationship objects (beyond type, id, spec_version).
REQUIRED = {
    "attack-pattern": ("name",), "campaign": ("name",), "course-of-action": ("name",),
    "grouping": ("context", "object_refs"), "identity": ("name",), "incident": ("name",),
    "indicator": ("pattern", "pattern_type", "valid_from"), "infrastructure": ("name",),
    "intrusion-set": ("name",), "malware": ("is_family",), "malware-analysis": ("product",),
    "note": ("content", "object_refs"), "observed-data": ("first_observed", "last_observed", "number_observed"),
    "opinion": ("opinion", "object_refs"), "report": ("name", "published", "object_refs"),
    "threat-actor": ("name",), "tool": ("name",), "vulnerability": ("name",),
    "relationship": ("relationship_type", "source_ref", "target_ref"), "sighting": ("sighting_of_ref",),
    "extension-definition": ("name", "schema", "version", "extension_types", "created_by_ref"),
    "language-content": ("object_ref", "object_modified", "contents"), "location": (),
}
TIMESTAMPS = ("created", "modified", "published", "valid_from", "valid_until", "first_seen", "last_seen",
              "first_observed", "last_observed", "object_modified")


def timestamp_ok(value) -> bool:
    if not isinstance(value, str) or not TIMESTAMP_RE.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00").replace(":60", ":59"))
    except ValueError:
        return False
    return True


def problems(obj: dict) -> list[str]:
    """Why a STIX 2.1 object would be rejected by a consumer; empty when it would not."""
    out = []
    kind = obj.get("type")
    if not isinstance(kind, str) or not TYPE_RE.fullmatch(kind):
        return [f"type {str(kind)[:40]!r} is not a STIX type name"]
    if not isinstance(obj.get("id"), str) or not ID_RE.fullmatch(obj["id"]) or not obj["id"].startswith(kind + "--"):
        out.append("id is not a STIX identifier of its type")
    bad = [k for k in obj if k not in SHORT_NAMES and not PROPERTY_RE.fullmatch(k)]
    if bad:
        out.append(f"property name {bad[0][:40]!r} is not a STIX property name")
    if "created" in obj or kind in REQUIRED:
        # STIX 2.0 objects (no spec_version) have other required properties: only the common ones
        required = REQUIRED.get(kind, ()) if "spec_version" in obj else ()
        missing = [p for p in ("created", "modified", *required) if p not in obj]
        if kind == "marking-definition":
            missing = [p for p in missing if p != "modified"]
        if missing:
            out.append(f"required property {missing[0]!r} missing")
    for k in TIMESTAMPS:
        if k in obj and not timestamp_ok(obj[k]):
            out.append(f"{k} {str(obj[k])[:40]!r} is not a STIX timestamp")
    if timestamp_ok(obj.get("created")) and timestamp_ok(obj.get("modified")) and obj["modified"] < obj["created"]:
        out.append("modified is earlier than created")
    for k, v in obj.items():
        if k.endswith("_ref") and not (isinstance(v, str) and ID_RE.fullmatch(v)):
            out.append(f"{k} is not an identifier")
        elif k.endswith("_refs") and not (isinstance(v, list) and all(isinstance(i, str) and ID_RE.fullmatch(i)
                                                                         for i in v)):
            out.append(f"{k} is not a list of identifiers")
    if "lang" in obj and not (isinstance(obj["lang"], str) and LANG_RE.fullmatch(obj["lang"])):
        out.append("lang is not a language tag")
    if "labels" in obj and not (isinstance(obj["labels"], list) and all(isinstance(x, str) for x in obj["labels"])):
        out.append("labels is not a list of strings")
    refs = obj.get("external_references")
    if refs is not None and not (isinstance(refs, list) and all(
            isinstance(r, dict) and isinstance(r.get("source_name"), str) for r in refs)):
        out.append("an external reference has no source_name")
    if kind == "indicator" and obj.get("pattern_type") == "stix" and isinstance(obj.get("pattern"), str):
        out.extend(pattern_problems(obj["pattern"], str(obj.get("spec_version") or "2.1")))
    return out


_validated = itertools.count(1)


def pattern_problems(pattern: str, spec_version: str) -> list[str]:
    # Imported when first needed (the antlr parser is the heaviest import of a normalizing process).
    from stix2patterns.validator import run_validator

    try:
        errors = run_validator(pattern, stix_version="2.0" if spec_version == "2.0" else "2.1")
    except Exception as e:  # the parser's own failure on odd input: the pattern is unusable
        errors = [str(e)]
    # Each parse leaves a parse tree of reference cycles (antlr's parent links), which only the
    # cyclic collector frees, and a bulk ingest runs with it paused: collect the young generation
    # now and then (it holds just what was allocated since: cheap), or a bundle of 100,000
    # indicators keeps 1 GiB of dead parse trees.
    if next(_validated) % 256 == 0:
        gc.collect(0)
    return [f"pattern does not parse: {str(errors[0])[:120]}"] if errors else []


def repaired_report(report: dict) -> dict:
    """The hub's own version of a report keeps only what consumers accept: property names and
    values of the wrong form are dropped (the source's report stays stored as received)."""
    out = {k: v for k, v in report.items() if k in SHORT_NAMES or PROPERTY_RE.fullmatch(k)}
    for k in TIMESTAMPS:
        if k in out and not timestamp_ok(out[k]):
            del out[k]
    if "lang" in out and not (isinstance(out["lang"], str) and LANG_RE.fullmatch(out["lang"])):
        del out["lang"]
    if "external_references" in out:
        refs = [r for r in listed(out["external_references"]) if isinstance(r, dict)
                and isinstance(r.get("source_name"), str)]
        if refs:
            out["external_references"] = refs
        else:
            del out["external_references"]
    for k in [k for k in out if k.endswith(("_ref", "_refs"))]:
        v = out[k]
        if k.endswith("_ref") and not (isinstance(v, str) and ID_RE.fullmatch(v)):
            del out[k]
        elif k.endswith("_refs"):
            out[k] = [i for i in listed(v) if isinstance(i, str) and ID_RE.fullmatch(i)]
    if "labels" in out:
        out["labels"] = [x for x in listed(out["labels"]) if isinstance(x, str)]
    return out
