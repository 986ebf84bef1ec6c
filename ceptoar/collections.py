"""Collections: saved filters over published advisories, and their materialized membership.

A report enters a collection with everything it references (vulnerabilities, identities,
marking definitions), each version with the collection's own `date_added`.
"""

from __future__ import annotations

import json
from functools import lru_cache
import tomllib
import uuid
from pathlib import Path

from ceptoar.filters import compile_filter
from ceptoar.model import NAMESPACE, SLUG_RE, TLP_BY_ID, TLP_ORDER
from ceptoar.store import Store

SUGGESTED = "medical-suggested"


class CollectionError(ValueError):
    pass


def collection_uuid(cid: str) -> str:
    """Stable across databases and restarts: derived from the collection's name."""
    return str(uuid.uuid5(NAMESPACE, f"collection|{cid}"))


def check(cid: str, title: str, filter_text: str, description: str | None = None) -> dict:
    if not SLUG_RE.match(cid or ""):
        raise CollectionError(f"collection id {cid!r} must be lowercase letters, digits, '.', '_' or '-'")
    if not (title or "").strip():
        raise CollectionError(f"collection {cid}: a title is required")
    compile_filter(filter_text)  # FilterError names the position
    return {"id": cid, "uuid": collection_uuid(cid), "title": title.strip(), "description": description,
            "filter": filter_text.strip()}


def load_defaults(path: Path) -> list[dict]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CollectionError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise CollectionError(f"{path}: {e}") from None
    out = []
    for i, c in enumerate(data.get("collection", []), 1):
        try:
            out.append(check(str(c.get("id", "")), str(c.get("title", "")), str(c.get("filter", "")),
                             c.get("description")))
        except ValueError as e:
            raise CollectionError(f"{path} [[collection]] #{i}: {e}") from None
    return out


def filter_view(rows: list[dict], kev_cves: set[str]) -> list[dict]:
    """Rows as the filter language sees them: `medical` is the analyst's decision or, while
    there is none, the suggestion; `kev` is true when any CVE is KEV-listed."""
    out = []
    for r in rows:
        medical = r["medical"] if r.get("medical") is not None else SUGGESTED in r.get("tags", [])
        kev = "kev" in r.get("tags", []) or any(c in kev_cves for c in r.get("cves", []))
        out.append(r | {"medical": medical, "kev": kev})
    return out


def matching(store: Store, row: dict, kev_cves: set[str] | None = None) -> list[str]:
    view = filter_view([row], store.kev_cves() if kev_cves is None else kev_cves)[0]
    return [cid for cid, text in store.collection_filters() if _compiled(text)(view)]


@lru_cache(maxsize=256)
def _compiled(text: str):
    return compile_filter(text)


def closure(store: Store, report: dict) -> list[dict]:
    """The newest version of everything the report references, and their markings."""
    wanted = [*report.get("object_refs", []), report.get("created_by_ref"), *report.get("object_marking_refs", [])]
    found: dict[str, dict] = {}
    while wanted:
        ids = [i for i in dict.fromkeys(w for w in wanted if w) if i not in found and i != report["id"]]
        if not ids:
            break
        latest = store.latest_objects(ids, origin=None)
        wanted = []
        for oid, v in latest.items():
            obj = json.loads(v["json"])
            found[oid] = obj
            wanted.extend(obj.get("object_marking_refs", []))
    return list(found.values())


def object_tlp_rank(obj: dict, report_rank: int) -> int:
    """What clearance an object needs: its own TLP marking, else that of the report it travels
    with (an unmarked upstream indicator in an AMBER report is AMBER). Marking definitions are
    public."""
    if obj["type"] == "marking-definition":
        return 0
    own = [TLP_ORDER.index(TLP_BY_ID[m]) for m in obj.get("object_marking_refs", []) if m in TLP_BY_ID]
    return max(own) if own else report_rank


def place(store: Store, report: dict, collections: list[str]) -> int:
    """Put a report version and its closure into the given collections. Returns rows added."""
    if not collections:
        return 0
    report_rank = object_tlp_rank(report, TLP_ORDER.index("RED"))  # an unmarked report is RED
    objs = [report, *closure(store, report)]
    rows = [(c, o["id"], o.get("modified") or o.get("created") or "", report["id"], o["type"],
             o.get("spec_version", "2.1"), object_tlp_rank(o, report_rank)) for c in collections for o in objs]
    return store.add_members(rows)


def backfill(store: Store, cid: str) -> int:
    """Fill a new collection with the current published version of every matching advisory."""
    coll = store.get_collection(cid)
    pred = compile_filter(coll["filter"])
    rows = filter_view(store.list_advisories(status="published"), store.kev_cves())
    placed = 0
    for r in rows:
        if pred(r) and r.get("published_version"):
            version = next((o for o in store.object_versions(r["id"]) if o.get("modified") == r["published_version"]),
                           None)
            if version:
                placed += bool(place(store, version, [cid]))
    return placed
