"""From normalized entries to stored versions: source facts only, under the source's origin.

An entry's report and the objects its source supplied are stored as versions of origin
`source:<id>`; the hub's own objects (the vulnerability per CVE, the source identity) as versions of
origin `hub`. Nothing here writes an analyst decision: ingest writes the advisory's facts (the
source's TLP included) and the store derives the effective TLP and tags from facts and decisions.
An id another origin holds is kept apart, never merged; the shared vulnerability object only gathers
facts from public CLEAR sources. One source's batch is written atomically by the caller.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

from ceptoar.core import extensions
from ceptoar.core.model import (
    CVE_RE,
    HUB,
    IDENTIFIER_RE,
    OTHER_VULN_RE,
    TLP_ORDER,
    Source,
    content_hash,
    headline_cvss,
    identity_id,
    later_than,
    listed,
    now_stix,
    serialize,
    source_origin,
    stable_id,
    tlp_name,
    vulnerability_id,
)
from ceptoar.ingest import medical
from ceptoar.normalize import Entry, Known, budget, merge_vulnerability, source_identity, stixcheck, vulnerability
from ceptoar.store import Store, utcnow
from ceptoar.store.objects import ObjectVersion, version_key


@dataclass
class Counts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    new_ids: list[str] = field(default_factory=list)
    updated_ids: list[str] = field(default_factory=list)
    revoked_ids: list[str] = field(default_factory=list)  # advisories their source has revoked
    kept_apart: list[str] = field(default_factory=list)  # ids held by another origin, stored apart
    warnings: list[str] = field(default_factory=list)

def advisory_row(entry: Entry, source_id: str) -> dict:
    """The facts of one advisory, from its source report (with why it looks medical)."""
    r = entry.report
    refs = [x for x in listed(r.get("external_references")) if isinstance(x, dict)]
    identifiers = list(dict.fromkeys(
        x["external_id"] for x in refs
        if isinstance(x.get("external_id"), str) and IDENTIFIER_RE.fullmatch(x["external_id"])))
    url = next((x["url"] for x in refs if isinstance(x.get("url"), str)), None)
    hub = extensions.props(r, extensions.ADVISORY)
    cvss = [{k: c.get(k) for k in ("version", "score", "severity", "vector")}
            | ({"cve": c["cve"]} if c.get("cve") else {})
            for c in listed(hub.get("cvss")) or entry.cvss if isinstance(c, dict)]
    headline = headline_cvss(cvss)
    dates = hub.get("dates") if isinstance(hub.get("dates"), dict) else {}
    title = r.get("name") if isinstance(r.get("name"), str) else None
    description = r.get("description") if isinstance(r.get("description"), str) else None
    return {
        "source": source_id,
        "entry_key": entry.key,
        "source_report": r["id"],
        "title": title,
        "description": description,
        "published": dates.get("published") or r.get("published"),
        "published_utc": r.get("published") or r.get("created"),
        "modified": dates.get("modified") or r.get("modified"),
        "stix_modified": r.get("modified"),
        "url": url,
        "identifiers": identifiers,
        "cves": list(entry.cves),
        "cvss": cvss,
        "cpes": [c for c in listed(hub.get("cpes")) if isinstance(c, str)],
        "max_cvss": headline["score"] if headline else None,  # of the newest CVSS version it has
        "source_tlp": entry.tlp,
        "lang": r.get("lang") if isinstance(r.get("lang"), str) else None,
        "medical_signals": medical.signals(r),
    }


@dataclass
class Prepared:
    """What storing an entry derives from the entry alone, computed ahead of storing (in a second
    process for a large document: ceptoar.ingest.offload) and used only where the entry is stored as it
    came; wherever the store's state changes the outcome, `store_entries` derives it again."""

    raw_hash: str
    report: tuple[str, str]  # serialize(entry.report)
    row: dict  # advisory_row(entry)
    vulnerabilities: dict[str, tuple[dict, tuple[str, str]]]  # CVE → the hub's first version, serialized


def prepare(entry: Entry | Known, source: Source, hashed: str | None = None) -> Entry | Known:
    """The entry with its `Prepared` values (a held item, `Known`, has none to compute); `hashed`:
    its raw hash, when the caller has it already."""
    if isinstance(entry, Known) or entry.prepared is not None:
        return entry
    report = entry.report
    created = report.get("published") or report.get("created")
    vulnerabilities = {}
    if isinstance(created, str):
        for cve in entry.cves:
            v = vulnerability(cve, created, _shared_facts(entry, source, cve))
            vulnerabilities[cve] = (v, serialize(v))
    entry.prepared = Prepared(hashed or raw_hash(entry.raw), serialize(report), advisory_row(entry, source.id),
                              vulnerabilities)
    return entry


def _shared_facts(entry: Entry, source: Source, cve: str) -> dict:
    """What an entry tells the hub's shared vulnerability object: public CLEAR facts only."""
    return entry.cve_facts.get(cve, {}) if source.public and entry.tlp == "CLEAR" else {}


def newest_per_key(entries: list[Entry], counts: Counts) -> list[Entry]:
    """The same entry twice in one batch: the newest report `modified` stands (a later copy at the
    same `modified` too, for feeds that repeat an item); equal timestamps with different content are
    reported."""
    chosen: dict[str, Entry] = {}
    for e in entries:
        prev = chosen.get(e.key)
        if prev is None:
            chosen[e.key] = e
            continue
        a, b = version_key(prev.report), version_key(e.report)
        if b > a:
            chosen[e.key] = e
        elif b == a:
            if content_hash(prev.report) != content_hash(e.report):
                counts.warnings.append(f"{e.key}: given twice at {b} with different content; the later copy stands")
            chosen[e.key] = e
    return list(chosen.values())


class _Versions:
    """The newest version of each id per origin, as loaded or written during one batch. What is put
    is kept as its version key and hash only (`keep`: the object too, for the reports and the hub's
    objects a batch reads again), so a bundle's hundred thousand objects are let go once serialized."""

    FLUSH = 2000  # rows written at a time while a batch runs: a bundle's objects are not all held serialized

    def __init__(self, store: Store, origin: str, ids: list[str]):
        self.store, self.origin = store, origin
        self.latest: dict[str, ObjectVersion] = store.objects.latest(ids, origin)
        self.objs: dict[str, dict] = {}
        self.put_meta: dict[str, tuple[str, str]] = {}  # id → (version key, hash) of what this batch put
        self.rows: list[tuple] = []

    def obj(self, oid: str) -> dict | None:
        if oid not in self.objs and oid in self.latest:
            self.objs[oid] = self.latest[oid].obj
        return self.objs.get(oid)

    def modified(self, oid: str) -> str | None:
        if oid in self.put_meta:
            return self.put_meta[oid][0]
        v = self.obj(oid)
        return version_key(v) if v is not None else None

    def hash(self, oid: str) -> str | None:
        if oid in self.put_meta:
            return self.put_meta[oid][1]
        if oid in self.latest and oid not in self.objs:
            return self.latest[oid].hash
        v = self.obj(oid)
        return content_hash(v) if v is not None else None

    def put(self, obj: dict, own_rank: int | None = None, kept_apart: bool = False,
            serialized: tuple[str, str] | None = None, keep: bool = True) -> None:
        text, h = serialized or serialize(obj)
        key = version_key(obj)
        if keep:
            self.objs[obj["id"]] = obj
        else:
            self.objs.pop(obj["id"], None)
        self.put_meta[obj["id"]] = (key, h)
        self.latest.pop(obj["id"], None)
        self.rows.append((obj["id"], key, obj["type"], h, text, own_rank, kept_apart))
        if len(self.rows) >= self.FLUSH and self.origin != HUB:  # the hub's rows wait for their reclaim
            self.flush()

    def flush(self) -> None:
        """Write the rows put so far (the caller's transaction: nothing is final before it commits)."""
        if self.rows:
            self.store.objects.put(self.rows, self.origin)
            self.rows = []


def _put_supplied(versions: _Versions, obj: dict, own_rank: int | None, kept_apart: bool, counts: Counts) -> bool:
    """A producer's object keeps the producer's versions: only a later `modified` is a new version.
    Returns True when a new version was stored."""
    prev_mod = versions.modified(obj["id"])
    mod = version_key(obj)
    if prev_mod is None or mod > prev_mod:
        versions.put(obj, own_rank, kept_apart=kept_apart, keep=obj.get("type") == "report")
        return True
    if mod == prev_mod and versions.hash(obj["id"]) != content_hash(obj):
        counts.warnings.append(f"{obj['id']}: changed content at the same modified {mod}; the first copy stands")
    return False


def store_entries(store: Store, source: Source, entries: list[Entry], actor: str | None = None,
                  recheck: bool = False) -> Counts:
    """Write a source's entries as new versions where they changed. The caller owns the
    transaction, so a failure later in the same fetch leaves nothing behind. `recheck`: compare
    what the normalizer makes now even when the raw entry is the same (re-normalization)."""
    counts = Counts()
    batch = _Batch(store, source, counts)
    entries = batch.unseen(newest_per_key(entries, counts), recheck)
    if not entries:
        return counts
    batch.reclaim_derived(entries)
    batch.load_versions(entries)
    batch.check_identity()
    for entry in entries:
        batch.add(entry)
    batch.write()
    batch.audit_tlp_changes(actor or f"ingest:{source.id}")
    return counts


class _Batch:
    """One call of `store_entries`: what is known of its entries' advisories, the versions it
    writes under the source's origin (`own`) and the hub's (`hub`), and the rows that go with them."""

    def __init__(self, store: Store, source: Source, counts: Counts):
        self.store, self.source, self.counts = store, source, counts
        self.origin = source_origin(source.id)
        self.now = utcnow()
        self.facts_rows: list[dict] = []
        self.cve_rows: list[tuple] = []
        self.raw_rows: list[tuple] = []
        self.tlp_changes: list[tuple] = []

    def unseen(self, entries: list[Entry], recheck: bool) -> list[Entry]:
        """The entries worth comparing, prepared: same bytes through the same normalizer give the
        same objects, so an entry whose raw hash is stored is unchanged (unless `recheck`)."""
        store, source = self.store, self.source
        keys = [e.key for e in entries]
        known = store.advisories.ids_for_entries(source.id, keys)
        self.adv_id = {e.key: known.get(e.key) or stable_id("report", source.id, e.key) for e in entries}
        self.states = store.advisories.states(list(self.adv_id.values()))
        raw_known = store.sources.raw_versions(source.id, keys)
        self.raw_hashes = {e.key: e.prepared.raw_hash if e.prepared else raw_hash(e.raw) for e in entries}
        same = set() if recheck else {e.key for e in entries if self.adv_id[e.key] in self.states
                                      and raw_known.get(e.key, (None,))[0] == self.raw_hashes[e.key]}
        self.counts.unchanged += len(same)
        return [prepare(e, source, self.raw_hashes[e.key]) for e in entries if e.key not in same]

    def reclaim_derived(self, entries: list[Entry]) -> None:
        """Ids the hub derives are taken back whoever used them first: a report a normalizer
        synthesized is this source's; the id under which the hub publishes a producer's report is
        the hub's."""
        derived = [e.report["id"] for e in entries if e.report["id"] == self.adv_id[e.key]]
        published_as = [self.adv_id[e.key] for e in entries if e.report["id"] != self.adv_id[e.key]]
        objects = self.store.objects
        for oid, before in objects.reclaim(derived, self.origin) + objects.reclaim(published_as, HUB):
            self.counts.warnings.append(f"{oid}: id taken back from {before}")

    def load_versions(self, entries: list[Entry]) -> None:
        own_ids = [e.report["id"] for e in entries] + [o["id"] for e in entries for o in e.objects]
        self.owners = self.store.objects.owners(own_ids)
        self.own = _Versions(self.store, self.origin, own_ids)
        cves = list(dict.fromkeys(c for e in entries for c in e.cves))
        self.hub = _Versions(self.store, HUB, [vulnerability_id(c) for c in cves] + [identity_id(self.source.id)])

    def check_identity(self) -> None:
        """The source's identity object, a new version when the catalogue's description changed."""
        identity, hub = source_identity(self.source), self.hub
        if hub.hash(identity["id"]) != content_hash(identity):
            prev = hub.modified(identity["id"])
            hub.put(dict(identity, modified=later_than(now_stix(), prev)) if prev else identity, 0)

    def add(self, entry: Entry) -> None:
        aid = self.adv_id[entry.key]
        state = self.states.get(aid)
        # A producer's report revoked upstream: the advisory is withdrawn here too (by the caller),
        # its facts kept as they were; one never seen live is never offered.
        revoked = entry.report.get("revoked") is True and entry.report["id"] != aid
        if revoked and state is None:
            self.counts.warnings.append(f"{entry.report['id']}: revoked by the source, never received live: "
                                        "not stored")
            return
        raw_row = (self.source.id, entry.key, self.raw_hashes[entry.key], version_key(entry.report), entry.raw)
        if len(entry.raw) > RAW_FIRST:
            # A raw entry of tens of megabytes (a bundle's) is written first and let go, before its
            # objects are serialized: the two never take memory at once.
            self.store.sources.write_raw([raw_row])
            entry.raw = raw_row = None
        changed = self.put_supplied(entry)
        report, changed = self.put_report(entry, aid, changed)
        if revoked:
            self.counts.revoked_ids.append(aid)
            if raw_row:
                self.raw_rows.append(raw_row)
            return
        as_came = report is entry.report
        self.put_vulnerabilities(entry, report, as_came)
        counts = self.counts
        if state is None:
            counts.new += 1
            counts.new_ids.append(aid)
        elif changed:
            counts.updated += 1
            counts.updated_ids.append(aid)
        else:
            counts.unchanged += 1
        row = dict(entry.prepared.row) if as_came else advisory_row(dataclasses.replace(entry, report=report),
                                                                    self.source.id)
        auto = list(dict.fromkeys(entry.tags + ([medical.TAG] if row["medical_signals"] else [])))
        row.update(id=aid, auto_tags=auto, updated_at=self.now,
                   first_seen=state["first_seen"] if state else self.now, _new=state is None)
        self.facts_rows.append(row)
        self.cve_rows.extend((c, aid) for c in row["cves"])
        if raw_row:
            self.raw_rows.append(raw_row)
        if state and state["source_tlp"] != entry.tlp and not state["analyst_tlp"]:
            self.tlp_changes.append((aid, state["tlp"], entry.tlp, state["status"]))
        entry.objects = []  # serialized into rows: the dicts (a bundle's thousands) can go

    def put_supplied(self, entry: Entry) -> bool:
        """What the source supplied with the report: its own versions, or kept apart. True when a
        new version was stored."""
        changed = False
        own, owners, origin, counts = self.own, self.owners, self.origin, self.counts
        for i, obj in enumerate(entry.objects, 1):
            if i % 500 == 0:
                budget.check(lambda i=i: f"at object {i:,} of {len(entry.objects):,} of {entry.key}")
            holder = owners.get(obj["id"])
            apart = (holder is not None and holder != origin) or _hub_reserved(obj)
            if apart:
                counts.kept_apart.append(obj["id"])
            else:
                owners[obj["id"]] = origin
                invalid = stixcheck.problems(obj)
                if invalid and own.modified(obj["id"]) != version_key(obj):
                    apart = True
                    counts.warnings.append(f"{obj['id']}: not sent on ({invalid[0]}); stored as received")
            changed |= _put_supplied(own, obj, _rank(entry.object_tlps.get(obj["id"])), apart, counts)
            entry.objects[i - 1] = None  # serialized: a bundle's objects go one by one as they are stored
        return changed

    def put_report(self, entry: Entry, aid: str, changed: bool) -> tuple[dict, bool]:
        """The report itself: (the version that stands, whether anything of the entry changed)."""
        own, report, ready = self.own, entry.report, entry.prepared
        rid = report["id"]
        if rid == aid:  # synthesized by a normalizer: the hub moves its versions forward
            prev = own.modified(rid)
            if prev is None or own.hash(rid) != content_hash(report) or changed:
                if prev is not None:
                    report = dict(report, modified=later_than(report.get("modified"), prev))
                own.put(report, _rank(entry.tlp), serialized=ready.report if report is entry.report else None)
                changed = True
            return report, changed
        # A producer's report.
        holder = self.owners.get(rid)
        apart = holder is not None and holder != self.origin
        if apart:
            self.counts.kept_apart.append(rid)
        else:
            self.owners[rid] = self.origin
        prev = own.modified(rid)
        if prev is None or version_key(report) > prev:
            own.put(report, _rank(entry.tlp), kept_apart=apart, serialized=ready.report)
            return report, True
        if version_key(report) == prev and own.hash(rid) != content_hash(report):
            self.counts.warnings.append(f"{rid}: changed content at the same modified {prev}; the first copy stands")
        return own.obj(rid), changed

    def put_vulnerabilities(self, entry: Entry, report: dict, as_came: bool) -> None:
        """The hub's vulnerability per CVE: public CLEAR facts only."""
        hub = self.hub
        for cve in entry.cves:
            vid = vulnerability_id(cve)
            facts = _shared_facts(entry, self.source, cve)
            current = hub.obj(vid)
            if current is None:
                made = entry.prepared.vulnerabilities.get(cve) if as_came else None
                if made:
                    hub.put(made[0], 0, serialized=made[1])
                else:
                    hub.put(vulnerability(cve, report.get("published") or report.get("created") or now_stix(),
                                          facts), 0)
            else:
                candidate = merge_vulnerability(current, facts)
                if content_hash(candidate) != content_hash(current):
                    hub.put(dict(candidate, modified=later_than(now_stix(), version_key(current))), 0)

    def write(self) -> None:
        store, origin = self.store, self.origin
        store.objects.claim([i for i, o in self.owners.items() if o == origin], origin)
        self.own.flush()
        if self.hub.rows:
            store.objects.reclaim([r[0] for r in self.hub.rows], HUB)
            store.objects.put(self.hub.rows, HUB)
        store.advisories.write_facts(self.facts_rows)
        store.advisories.write_cves(self.cve_rows, [r["id"] for r in self.facts_rows if not r["_new"]])
        store.sources.write_raw(self.raw_rows)

    def audit_tlp_changes(self, actor: str) -> None:
        """The source changed its TLP and the analyst set none: the effective TLP follows, from now
        on for every reader of what was published."""
        for aid, before, after, status in self.tlp_changes:
            self.store.audit.add(actor, "tlp", aid, {"from": before, "to": after, "by": "source"})
            if status in ("published", "revoked"):
                self.store.membership.refresh_advisory(aid)


def _hub_reserved(obj: dict) -> bool:
    """A vulnerability under the hub's own id for a CVE it names: only the hub writes that object,
    even before it has made it."""
    if obj.get("type") != "vulnerability":
        return False
    named = [obj.get("name")] + [x.get("external_id") for x in obj.get("external_references") or []
                                 if isinstance(x, dict)]
    return any(isinstance(c, str) and (CVE_RE.fullmatch(c) or OTHER_VULN_RE.fullmatch(c))
               and obj["id"] == vulnerability_id(c.upper()) for c in named)


def _rank(tlp: str | None) -> int | None:
    return TLP_ORDER.index(tlp_name(tlp)) if tlp else None


RAW_FIRST = 4 << 20  # characters of a raw entry written as soon as its entry is stored (_Batch.add)

# Part of every raw hash: bump it when a normalizer changes, so stored entries are re-normalized.
NORMALIZER_VERSION = "6"


def raw_hash(raw: str) -> str:
    h = hashlib.sha256(NORMALIZER_VERSION.encode())
    for i in range(0, len(raw), 1 << 20):  # a slice at a time: a bundle's raw text is not copied whole
        h.update(raw[i:i + (1 << 20)].encode("utf-8", "surrogatepass"))
    return h.hexdigest()
