"""Publishing: the report as the hub publishes it, the snapshot pinned with it, revocation tombstones.

A publication is a new hub version of the advisory's report (the source's report with the analyst's
decisions laid over it) and exactly the object versions that go out with it: what it references
from its own source's origin (objects that source holds) and the hub's own objects (vulnerabilities,
identities, marking definitions), never another origin's, never an incident. Each pinned version is
served at the higher of its own marking and the report's TLP. Collections, digests and exports read
these pins and nothing else.
"""

from __future__ import annotations

from ceptoar.core import extensions
from ceptoar.core.model import (
    HUB,
    SEVERITY_LABEL,
    TLP_IDS,
    TLP_ORDER,
    content_hash,
    identity_id,
    later_than,
    listed,
    marking_rank,
    now_stix,
    serialize,
    source_origin,
    spec_version_of,
    stable_id,
    vulnerability_id,
)
from ceptoar.normalize import stixcheck
from ceptoar.store import Store
from ceptoar.store.membership import Pin
from ceptoar.store.objects import ObjectVersion

REVOKED_NAME = "取り消された情報 / Revoked advisory"
REVOKED_LABEL = "revoked"  # importers that ignore `revoked` (misp-stix) keep labels as tags
DECISION_PROPERTIES = ("labels", "revoked")  # and the extension's severity, medical and clinic text
DECISION_EXTENSION = ("severity", "medical", "clinic")
# What the published view of an advisory carries (the fields of `advisories list`, as published).
VIEW_FIELDS = ("id", "title", "source", "published", "modified", "url", "identifiers", "cves", "cvss", "cpes",
               "max_cvss", "tlp", "severity", "medical", "tags", "lang", "clinic")
DECISION_FIELDS = ("tlp", "severity", "medical", "tags", "clinic")


def view_of(row: dict) -> dict:
    return {k: row.get(k) for k in VIEW_FIELDS}


def overlay(source_report: dict, row: dict, jvn: dict | None = None) -> dict:
    """The report as the hub publishes it: the source's report under the advisory's id, with the
    analyst's labels, TLP marking, severity, medical decision and text for clinics (with JVN's
    Japanese entry for its CVEs, `jvn`)."""
    pub = {k: v for k, v in stixcheck.repaired_report(source_report).items() if k not in DECISION_PROPERTIES}
    pub["id"] = row["id"]
    pub["spec_version"] = "2.1"
    refs = [r for r in listed(pub.get("object_refs")) if isinstance(r, str) and r != row["id"]]
    refs += [vulnerability_id(c) for c in row.get("cves") or []]
    refs.append(identity_id(row["source"]))
    pub["object_refs"] = list(dict.fromkeys(refs))
    if not isinstance(pub.get("created_by_ref"), str):
        pub["created_by_ref"] = identity_id(row["source"])
    if not isinstance(pub.get("name"), str) or not pub["name"].strip():
        pub["name"] = row.get("title") or row["id"]
    if not isinstance(pub.get("published"), str):
        pub["published"] = pub.get("created") or now_stix()
    labels = sorted(row.get("tags") or []) + ([SEVERITY_LABEL.format(row["severity"])] if row.get("severity") else [])
    if labels:
        pub["labels"] = labels
    pub["object_marking_refs"] = [TLP_IDS[row["tlp"]]]
    medical = None if row.get("medical") is None else bool(row["medical"])
    clinic = dict(row.get("clinic") or {}) | ({"jvn": jvn} if jvn else {})
    decided = dict.fromkeys(DECISION_EXTENSION) | {"severity": row.get("severity"), "medical": medical,
                                                   "clinic": clinic or None}
    return extensions.with_props(pub, extensions.ADVISORY, **decided)  # None: the source's value removed


def unreviewed_view(store: Store, row: dict, jvn: dict | None = None) -> dict | None:
    """An advisory no analyst has decided on yet, as the urgent path shows it to an alerted
    facility: its facts and the source's newest report, overlaid as publishing would (CLEAR only;
    None for anything above CLEAR or without its report)."""
    if row.get("tlp") != "CLEAR":
        return None
    version = store.objects.latest([row["source_report"]], source_origin(row["source"])).get(row["source_report"])
    if version is None:
        return None
    return view_of(row) | {"tlp": "CLEAR", "version": None, "report": overlay(version.obj, row, jvn),
                           "pre_review": True}


def closure(store: Store, report: dict, origin: str, previous: dict[str, Pin] | None = None) -> list[ObjectVersion]:
    """The object versions that go out with a report: what it references (and their markings and
    creators), from the report's own origin where that origin holds the id, else the hub's own
    non-report objects. `previous` pins win for the own origin (a republish after a decision keeps
    the source's objects as they were published)."""
    found: dict[str, ObjectVersion] = {}
    wanted = [*report.get("object_refs", []), report.get("created_by_ref"), *report.get("object_marking_refs", []),
              *extensions.used(report)]
    while wanted:
        ids = [i for i in dict.fromkeys(w for w in wanted if isinstance(w, str))
               if i not in found and i != report["id"]]
        if not ids:
            break
        owners = store.objects.owners(ids)
        mine = [i for i in ids if owners.get(i) == origin]
        kept = {i: p for i, p in (previous or {}).items() if i in mine and p.origin == origin}
        pinned = store.objects.get_many([(i, p.modified, origin) for i, p in kept.items()])
        latest = store.objects.latest([i for i in mine if i not in kept], origin)
        hub = store.objects.latest([i for i in ids if owners.get(i) == HUB], HUB)
        wanted = []
        for i in ids:
            v = pinned.get((i, kept[i].modified, origin)) if i in kept else latest.get(i) or hub.get(i)
            if v is None or v.kept_apart or (v.origin == HUB and v.type == "report"):
                continue
            found[i] = v
            obj = v.obj
            wanted.extend(m for m in listed(obj.get("object_marking_refs")) if isinstance(m, str))
            wanted.append(obj.get("created_by_ref"))
            wanted.extend(extensions.used(obj))
    return list(found.values())


class _Objects:
    """What a batch of closures reads, each id and version read (and parsed) once for the batch:
    the source identity and the TLP markings that every report of a source references are one
    lookup, not one per report."""

    def __init__(self, store: Store):
        self.store = store
        self.owner: dict[str, str | None] = {}
        self.newest: dict[tuple[str, str], ObjectVersion | None] = {}
        self.parsed: dict[tuple[str, str, str], dict] = {}

    def load(self, ids: list[str], origin: str) -> None:
        unknown = [i for i in ids if i not in self.owner]
        if unknown:
            found = self.store.objects.owners(unknown)
            self.owner.update({i: found.get(i) for i in unknown})
        for where in (origin, HUB):
            need = [i for i in ids if self.owner.get(i) == where and (i, where) not in self.newest]
            if need:
                got = self.store.objects.latest(need, where)
                self.newest.update({(i, where): got.get(i) for i in need})

    def version(self, oid: str, origin: str) -> ObjectVersion | None:
        owner = self.owner.get(oid)
        if owner == origin:
            return self.newest.get((oid, origin))
        return self.newest.get((oid, HUB)) if owner == HUB else None

    def obj(self, v: ObjectVersion) -> dict:
        key = (v.id, v.modified, v.origin)
        if key not in self.parsed:
            self.parsed[key] = v.obj
        return self.parsed[key]


def closures(store: Store, reports: list[tuple[dict, str]]) -> tuple[list[list[ObjectVersion]], dict]:
    """closure() of many reports (report, its origin) at once, level by level: one set of lookups
    per level for the whole batch, whatever its size. Also returns each version's object, parsed
    once ((id, modified, origin) → object)."""
    cache = _Objects(store)
    found: list[dict[str, ObjectVersion]] = [{} for _ in reports]
    wanted = [[*r.get("object_refs", []), r.get("created_by_ref"), *r.get("object_marking_refs", []),
               *extensions.used(r)] for r, _o in reports]
    while True:
        level = []
        for k, (report, _origin) in enumerate(reports):
            ids = [i for i in dict.fromkeys(w for w in wanted[k] if isinstance(w, str))
                   if i not in found[k] and i != report["id"]]
            level.append(ids)
        if not any(level):
            break
        by_origin: dict[str, list[str]] = {}
        for (_report, origin), ids in zip(reports, level, strict=True):
            by_origin.setdefault(origin, []).extend(ids)
        for origin, ids in by_origin.items():
            cache.load(list(dict.fromkeys(ids)), origin)
        for k, ((_report, origin), ids) in enumerate(zip(reports, level, strict=True)):
            wanted[k] = []
            for i in ids:
                v = cache.version(i, origin)
                if v is None or v.kept_apart or (v.origin == HUB and v.type == "report"):
                    continue
                found[k][i] = v
                obj = cache.obj(v)
                wanted[k].extend(m for m in listed(obj.get("object_marking_refs")) if isinstance(m, str))
                wanted[k].append(obj.get("created_by_ref"))
                wanted[k].extend(extensions.used(obj))
    return [list(f.values()) for f in found], cache.parsed


def note_id(advisory: str) -> str:
    """The id of the hub's note on a published advisory (its aggregate exposure)."""
    return stable_id("note", "exposure", advisory)


def hub_notes(store: Store, advisory: str) -> list[ObjectVersion]:
    """What the hub has written about a published advisory (its aggregate exposure), newest versions."""
    return list(store.objects.latest([note_id(advisory)], HUB).values())


def _store_report(store: Store, report: dict) -> str:
    """A new hub version of the report, later than every stored version of its id."""
    newest = store.objects.max_modified([report["id"]]).get(report["id"])
    version = later_than(now_stix(), newest) if newest else now_stix()
    first = store.objects.versions(report["id"], HUB)
    created = first[0].obj.get("created") if first else report.get("created") or version
    report.update(created=min(created, version), modified=version)
    text, h = serialize(report)
    store.objects.put([(report["id"], version, "report", h, text, marking_rank(report), False)], HUB)
    return version


def publish_version(store: Store, row: dict, source_report: dict, source_version: str | None, actor: str,
                    previous: dict[str, Pin] | None = None, jvn: dict | None = None) -> str:
    """Pin a publication of the advisory as `row` (its view: facts and decisions) says. Returns
    the version published: the current one if nothing would change."""
    report = overlay(source_report, row, jvn)
    current = store.objects.latest([row["id"]], HUB).get(row["id"])
    notes = hub_notes(store, row["id"])
    if current is not None and current.hash == content_hash(report) and \
            store.publications.get(row["id"], current.modified) is not None and \
            {(n.id, n.modified) for n in notes} <= {(p.object_id, p.modified)
                                                   for p in store.publications.pins(row["id"], current.modified)}:
        return current.modified
    version = _store_report(store, report)
    rank = TLP_ORDER.index(row["tlp"])
    pins = [Pin(row["id"], version, HUB, "report", "2.1", rank)]
    found = closure(store, report, source_origin(row["source"]), previous)
    for n in notes:  # the hub's notes on the advisory, with what they reference but the report
        have = {f.id for f in found}
        found += [n] + [v for v in closure(store, n.obj, HUB) if v.id not in have]
    for v in found:
        obj = v.obj
        own = v.own_rank if v.own_rank is not None else rank
        pins.append(Pin(v.id, v.modified, v.origin, v.type, spec_version_of(obj), max(own, rank)))
    store.publications.add(row["id"], version, source_version, row["tlp"], view_of(row), pins, actor)
    return version


def publish_versions(store: Store, items: list[tuple[dict, dict, str | None, dict | None]],
                     actor: str) -> dict[str, tuple[str, list[Pin], dict]]:
    """publish_version() for many advisories at once, each from the newest version of its source's
    report: items are (row, source report, its version, JVN's entry). Returns advisory → (version
    published, its pins, the report as published). The reads and writes are a fixed number of
    statements per batch (the reports' hub versions, notes and closures looked up together; every
    report, publication and pin written by one executemany each)."""
    reports = {row["id"]: (row, overlay(src, row, jvn), src_version) for row, src, src_version, jvn in items}
    ids = list(reports)
    current = store.objects.latest(ids, HUB)
    notes = store.objects.latest([note_id(a) for a in ids], HUB)
    out: dict[str, tuple[str, list[Pin], dict]] = {}
    fresh = []
    for aid, (_row, report, _version) in reports.items():
        cur, note = current.get(aid), notes.get(note_id(aid))
        if cur is not None and cur.hash == content_hash(report):  # nothing would change: rare, read one by one
            pub = store.publications.get(aid, cur.modified)
            pins = store.publications.pins(aid, cur.modified) if pub else []
            if pub is not None and (note is None or (note.id, note.modified) in {(p.object_id, p.modified)
                                                                                  for p in pins}):
                out[aid] = (cur.modified, pins, report)
                continue
        fresh.append(aid)
    newest = store.objects.max_modified(fresh)
    now = now_stix()
    rows = []
    for aid in fresh:
        row, report, _v = reports[aid]
        version = later_than(now, newest[aid]) if newest.get(aid) else now
        cur = current.get(aid)
        created = (cur.obj.get("created") if cur else None) or report.get("created") or version
        report.update(created=min(created, version), modified=version)
        text, h = serialize(report)
        rows.append((aid, version, "report", h, text, marking_rank(report), False))
    store.objects.put(rows, HUB)
    found, parsed = closures(store, [(reports[a][1], source_origin(reports[a][0]["source"])) for a in fresh])
    publications = []
    for aid, closure_of in zip(fresh, found, strict=True):
        row, report, src_version = reports[aid]
        note = notes.get(note_id(aid))
        if note is not None:  # the hub's note on the advisory, with what it references but the report
            have = {f.id for f in closure_of}
            closure_of = closure_of + [note] + [v for v in closure(store, note.obj, HUB) if v.id not in have]
        rank = TLP_ORDER.index(row["tlp"])
        pins = [Pin(aid, report["modified"], HUB, "report", "2.1", rank)]
        for v in closure_of:
            own = v.own_rank if v.own_rank is not None else rank
            obj = parsed.get((v.id, v.modified, v.origin)) or v.obj
            pins.append(Pin(v.id, v.modified, v.origin, v.type, spec_version_of(obj), max(own, rank)))
        publications.append((aid, report["modified"], src_version, row["tlp"], view_of(row), pins, actor))
        out[aid] = (report["modified"], pins, report)
    store.publications.add_many(publications)
    return out


def tombstone(store: Store, row: dict, actor: str) -> str:
    """A revocation that carries no content: served, at the lowest rank any version of the advisory
    was published at, wherever any version went, so every reader who received one learns of it."""
    pubs = store.publications.of(row["id"])
    ranks = [p.pin_rank for pub in pubs for p in store.publications.pins(row["id"], pub.version)
             if p.object_id == row["id"]]
    rank = min(ranks) if ranks else TLP_ORDER.index(row["tlp"])
    first = store.objects.get(row["id"], pubs[0].version, HUB).obj if pubs else {}
    ident = identity_id(row["source"])
    report = {"type": "report", "spec_version": "2.1", "id": row["id"], "created": first.get("created", now_stix()),
              "name": REVOKED_NAME, "published": first.get("published", now_stix()), "report_types": ["threat-report"],
              "created_by_ref": ident, "object_refs": [ident], "object_marking_refs": [TLP_IDS[TLP_ORDER[rank]]],
              "labels": [REVOKED_LABEL], "revoked": True}
    version = _store_report(store, report)
    hub = store.objects.latest([ident, TLP_IDS[TLP_ORDER[rank]]], HUB)
    pins = [Pin(row["id"], version, HUB, "report", "2.1", rank, tombstone=True)]
    pins += [Pin(v.id, v.modified, HUB, v.type, "2.1", rank, tombstone=True) for v in hub.values()]
    empty = {k: [] for k in ("identifiers", "cves", "cvss", "cpes", "tags")}
    view = {k: None for k in VIEW_FIELDS} | empty | {"id": row["id"], "title": REVOKED_NAME, "source": row["source"],
                                                      "tlp": TLP_ORDER[rank], "revoked": True}
    store.publications.add(row["id"], version, None, TLP_ORDER[rank], view, pins, actor, revoked=True)
    return version
