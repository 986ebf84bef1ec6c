"""Exports: STIX bundles and CSV of what was published, read from the pinned publications.

Both exports read the same thing: the latest publication of each advisory (a revocation tombstone
for a revoked one) and, for the bundle, exactly the object versions pinned with it. With a
clearance, only what a reader at that TLP may receive, each object at the rank it is served at.
"""

from __future__ import annotations

import csv
import io
import uuid

from ceptoar.core.errors import CeptoarError
from ceptoar.core.model import SYSTEM, TLP_ORDER, source_origin, tlp_name
from ceptoar.core.output import csv_cell, to_json
from ceptoar.publishing import publication
from ceptoar.store import Store
from ceptoar.store.membership import Pin, Publication

CSV_FIELDS = ["id", "title", "source", "published", "modified", "url", "identifiers", "cves", "cvss", "cpes",
              "max_cvss", "tlp", "severity", "medical", "tags", "lang", "version", "revoked", "collections"]


def report_bundle(store: Store, advisory_id: str) -> dict:
    """The analyst's view of an advisory as its source gave it: the newest source version of the
    report and what it references (its own origin and the hub's objects)."""
    row = store.advisories.get(advisory_id)
    origin = source_origin(row["source"])
    v = store.objects.latest([row["source_report"]], origin)[row["source_report"]]
    report = v.obj
    return _bundle([report, *(x.obj for x in publication.closure(store, report, origin))])


def served_rank(pin: Pin, advisory_rank: int) -> int:
    """A pin is served at the higher of its pinned rank and its advisory's current TLP; a tombstone
    at its own rank."""
    return pin.pin_rank if pin.tombstone else max(pin.pin_rank, advisory_rank)


def selection(store: Store, *, collection: str | None = None, since: str | None = None, status: str = "published",
              max_rank: int | None = None) -> list[tuple[Publication, int]]:
    """(latest publication, rank its report is served at) of each advisory ever published."""
    revoked = {"published": False, "revoked": True, "all": None}[status]
    out = []
    pubs = store.publications.list_latest(collection=collection, since=since, revoked=revoked)
    ranks = {a["id"]: a["tlp_rank"] for a in store.advisories.list(ids=[p.advisory for p in pubs], status="all")}
    for pub in pubs:
        report_pin = next(p for p in store.publications.pins(pub.advisory, pub.version) if p.object_id == pub.advisory)
        rank = served_rank(report_pin, ranks[pub.advisory])
        if max_rank is None or rank <= max_rank:
            out.append((pub, rank))
    return out


def published_bundle(store: Store, chosen: list[tuple[Publication, int]], max_rank: int | None = None) -> dict:
    """The pinned versions of each chosen publication, each object once (its newest pinned version)."""
    keys: dict[str, tuple[str, str]] = {}
    order: list[str] = []
    for pub, _rank in chosen:
        advisory_rank = store.advisories.get(pub.advisory)["tlp_rank"]
        for p in store.publications.pins(pub.advisory, pub.version):
            if max_rank is not None and served_rank(p, advisory_rank) > max_rank:
                continue
            if p.object_id not in keys:
                order.append(p.object_id)
            if p.object_id not in keys or p.modified > keys[p.object_id][0]:
                keys[p.object_id] = (p.modified, p.origin)
    found = store.objects.get_many([(i, m, o) for i, (m, o) in keys.items()])
    return _bundle([found[(i, *keys[i])].obj for i in order if (i, *keys[i]) in found])


def csv_rows(store: Store, chosen: list[tuple[Publication, int]]) -> list[dict]:
    holders = store.membership.collections_of([p.advisory for p, _ in chosen])
    return [{**{k: pub.view.get(k) for k in CSV_FIELDS}, "tlp": TLP_ORDER[rank], "version": pub.version,
             "revoked": pub.revoked, "collections": holders.get(pub.advisory, [])} for pub, rank in chosen]


def _bundle(objects: list[dict]) -> dict:
    return {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}


def to_text(bundle: dict) -> str:
    return to_json(bundle)


def choose(store: Store, *, collection: str | None, since: str | None, status: str,
           clearance: str | None) -> tuple[list[tuple[Publication, int]], int | None]:
    """The selection of an export by a collection id or UUID, a time, a status and a clearance."""
    cid = None
    if collection:
        found = store.collections.get(collection)
        if found is None:
            raise CeptoarError(f"no collection {collection!r}")
        cid = found["id"]
    rank = TLP_ORDER.index(tlp_name(clearance)) if clearance else None
    return selection(store, collection=cid, since=since, status=status, max_rank=rank), rank


def bundle_export(store: Store, actor: str = SYSTEM, *, collection: str | None = None, since: str | None = None,
                  status: str = "all", clearance: str | None = None, target: str = "-") -> tuple[str, int]:
    """The STIX bundle text of an export and how many advisories it holds; audited."""
    chosen, rank = choose(store, collection=collection, since=since, status=status, clearance=clearance)
    text = to_text(published_bundle(store, chosen, rank))
    store.audit.add(actor, "export-bundle", target,
                    {"collection": collection, "advisories": len(chosen), "clearance": clearance})
    return text, len(chosen)


def csv_export(store: Store, actor: str = SYSTEM, *, collection: str | None = None, since: str | None = None,
               status: str = "published", clearance: str | None = None, bom: bool = False,
               target: str = "-") -> tuple[str, int]:
    """The CSV text of an export (cells a spreadsheet would run as formulas made inert) and how many
    advisories it holds; audited."""
    chosen, _rank = choose(store, collection=collection, since=since, status=status, clearance=clearance)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in csv_rows(store, chosen):
        writer.writerow([csv_cell(r.get(c)) for c in CSV_FIELDS])
    store.audit.add(actor, "export-csv", target,
                    {"collection": collection, "advisories": len(chosen), "clearance": clearance})
    return ("\ufeff" if bom else "") + buf.getvalue(), len(chosen)
