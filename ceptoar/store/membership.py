"""Collections, publications and what each collection serves.

A publication pins exactly which object versions go out with a report version (`pins`, each with
the rank it was pinned at: the higher of its own marking and the report's TLP). A placement puts a
publication into a collection. `membership` is derived from both: one row per object version per
collection, visible from the lowest rank any placement serves it at, where a pin is served at the
higher of its pinned rank and its advisory's current TLP (tombstones keep their rank). `refresh`
is the one function that keeps it so; TAXII pages are index range scans over it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ceptoar.store.base import Repository, chunks, dump, marks, utcnow
from ceptoar.store.schema import NEWER_RANK

STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"  # as utcnow() writes it
# Whether a collection serves anything but STIX 2.1: two range probes of the (collection,
# spec_version) index (`!=` would scan the collection).
MIXED = ("EXISTS (SELECT 1 FROM membership x WHERE x.collection = {collection} AND x.spec_version < '2.1') "
         "OR EXISTS (SELECT 1 FROM membership x WHERE x.collection = {collection} AND x.spec_version > '2.1')")


@dataclass
class Publication:
    advisory: str
    version: str  # `modified` of the hub's report version
    source_version: str | None  # `modified` of the source's report it was made from
    tlp: str
    revoked: bool
    actor: str | None
    published_at: str
    view: dict  # the advisory as the analyst published it (the fields of `advisories list`)

    @classmethod
    def of(cls, r: dict) -> Publication:
        return cls(r["advisory"], r["version"], r["source_version"], r["tlp"], bool(r["revoked"]), r["actor"],
                   r["published_at"], json.loads(r["view"]))


@dataclass
class Pin:
    object_id: str
    modified: str
    origin: str
    type: str
    spec_version: str
    pin_rank: int
    tombstone: bool = False


class Collections(Repository):
    def upsert(self, c: dict) -> bool:
        s = self.store
        now = utcnow()
        if self.get(c["id"]) is None:
            s.execute("INSERT INTO collections (id, uuid, title, description, filter, origin, created, updated) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (c["id"], c["uuid"], c["title"], c.get("description"), c["filter"], c.get("origin"), now, now))
            return True
        s.execute("UPDATE collections SET title = ?, description = ?, filter = ?, updated = ? WHERE id = ?",
                  (c["title"], c.get("description"), c["filter"], now, c["id"]))
        return False

    def get(self, cid: str, mixed: bool = False) -> dict | None:
        """By id or UUID, without counts (the TAXII server asks on every request); `mixed`: whether
        it serves anything but STIX 2.1 too (Membership.mixed_spec_versions), in the same statement."""
        extra = f", ({MIXED.format(collection='c.id')}) AS mixed" if mixed else ""
        r = self.store.row(f"SELECT c.*{extra} FROM collections c WHERE c.id = ? OR c.uuid = ?", (cid, cid))
        if r and mixed:
            r["mixed"] = bool(r["mixed"])
        return r

    def list(self, cid: str | None = None, counts: bool = True) -> list[dict]:
        """Collections by id; with `counts`, their advisories and object versions."""
        extra = (", (SELECT COUNT(*) FROM membership m WHERE m.collection = c.id) AS objects, "
                 "(SELECT COUNT(DISTINCT advisory) FROM placements p WHERE p.collection = c.id) AS advisories"
                 if counts else "")
        where = " WHERE c.id = ? OR c.uuid = ?" if cid else ""
        return self.store.rows(f"SELECT c.*{extra} FROM collections c{where} ORDER BY c.id", (cid, cid) if cid else ())

    def remove(self, cid: str) -> bool:
        s = self.store
        s.execute("DELETE FROM membership WHERE collection = ?", (cid,))
        s.execute("DELETE FROM placements WHERE collection = ?", (cid,))
        return s.execute("DELETE FROM collections WHERE id = ?", (cid,)).rowcount == 1

    def filters(self) -> list[tuple[str, str]]:
        return list(self.store.execute("SELECT id, filter FROM collections ORDER BY id").fetchall())


PIN_COLUMNS = ("advisory", "version", "object_id", "modified", "origin", "type", "spec_version", "pin_rank",
               "tombstone")


class Publications(Repository):
    def add(self, advisory: str, version: str, source_version: str | None, tlp: str, view: dict, pins: list[Pin],
            actor: str | None, revoked: bool = False) -> None:
        s = self.store
        s.execute("INSERT INTO publications (advisory, version, source_version, tlp, revoked, actor, published_at, "
                  "view) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  (advisory, version, source_version, tlp, int(revoked), actor, utcnow(),
                   dump(view)))
        s.insert("pins", PIN_COLUMNS, [(advisory, version, p.object_id, p.modified, p.origin, p.type, p.spec_version,
                                        p.pin_rank, int(p.tombstone)) for p in pins])

    def add_many(self, items: list[tuple[str, str, str | None, str, dict, list[Pin], str | None]]) -> None:
        """Publications (advisory, version, source_version, tlp, view, pins, actor) in two inserts: one
        for the publications, one for every pin."""
        now = utcnow()
        s = self.store
        s.insert("publications", ("advisory", "version", "source_version", "tlp", "revoked", "actor", "published_at",
                                  "view"),
                 [(a, v, sv, tlp, 0, actor, now, dump(view)) for a, v, sv, tlp, view, _pins, actor in items])
        s.insert("pins", PIN_COLUMNS, [(a, v, p.object_id, p.modified, p.origin, p.type, p.spec_version,
                                        p.pin_rank, int(p.tombstone))
                                       for a, v, _sv, _tlp, _view, pins, _actor in items for p in pins])

    def of(self, advisory: str) -> list[Publication]:
        """Every publication of an advisory, oldest first."""
        return [Publication.of(r) for r in self.store.rows(
            "SELECT * FROM publications WHERE advisory = ? ORDER BY version", (advisory,))]

    def latest(self, advisories: list[str]) -> dict[str, Publication]:
        out = {}
        for chunk in chunks(advisories):
            for r in self.store.rows(
                    f"SELECT * FROM publications WHERE advisory IN ({marks(len(chunk))}) ORDER BY advisory, version",
                    chunk):
                out[r["advisory"]] = Publication.of(r)
        return out

    def get(self, advisory: str, version: str) -> Publication | None:
        r = self.store.row("SELECT * FROM publications WHERE advisory = ? AND version = ?", (advisory, version))
        return Publication.of(r) if r else None

    def get_many(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Publication]:
        """(advisory, version) → its publication, for many at once (a digest's thousands)."""
        out = {}
        for chunk in chunks(list(dict.fromkeys(keys)), 300):
            cond = " OR ".join("(advisory = ? AND version = ?)" for _ in chunk)
            for r in self.store.rows(f"SELECT * FROM publications WHERE {cond}", [v for k in chunk for v in k]):
                out[(r["advisory"], r["version"])] = Publication.of(r)
        return out

    def pins(self, advisory: str, version: str) -> list[Pin]:
        return [Pin(r["object_id"], r["modified"], r["origin"], r["type"], r["spec_version"], r["pin_rank"],
                    bool(r["tombstone"])) for r in self.store.rows(
            f"SELECT * FROM pins WHERE advisory = ? AND version = ? ORDER BY {self.store.engine.rowid}",
            (advisory, version))]

    def list_latest(self, *, collection: str | None = None, since: str | None = None,
                    revoked: bool | None = None) -> list[Publication]:
        """The latest publication of each advisory ever published (newest first), optionally only
        those placed in a collection or published since a time."""
        where, args = [], []
        if collection:
            where.append("p.advisory IN (SELECT advisory FROM placements WHERE collection = ?)")
            args.append(collection)
        if since:
            where.append("p.published_at >= ?")
            args.append(since)
        if revoked is not None:
            where.append("p.revoked = ?")
            args.append(int(revoked))
        q = ("SELECT p.* FROM publications p JOIN (SELECT advisory, MAX(version) AS version FROM publications "
             "GROUP BY advisory) last ON last.advisory = p.advisory AND last.version = p.version")
        if where:
            q += " WHERE " + " AND ".join(where)
        return [Publication.of(r) for r in self.store.rows(q + " ORDER BY p.published_at DESC, p.advisory", args)]


class Membership(Repository):
    # --- placing and deriving ----------------------------------------------------------------------
    def place(self, collection: str, advisory: str, version: str) -> int:
        """Put a publication into a collection. Returns the membership rows added or made visible
        to more readers."""
        s = self.store
        added = s.execute("INSERT INTO placements (collection, advisory, version, placed) VALUES (?, ?, ?, ?) "
                          "ON CONFLICT DO NOTHING", (collection, advisory, version, utcnow())).rowcount
        if not added:
            return 0
        # Adding pins can only lower what a row needs: min(its rank, the new pin's), no rescan of the
        # other pins of a shared object (the source identity is pinned by every advisory of a source).
        floor = s.scalar("SELECT tlp_rank FROM advisories WHERE id = ?", (advisory,))
        candidates = {(r["object_id"], r["modified"]): r | {"rank": r["pin_rank"] if r["tombstone"] or
                                                            r["pin_rank"] >= floor else floor}
                      for r in s.rows("SELECT object_id, modified, origin, type, spec_version, pin_rank, tombstone "
                                      "FROM pins WHERE advisory = ? AND version = ?", (advisory, version))}
        return self._apply(collection, candidates, lower_only=True)

    def place_many(self, collection: str, placements: list[tuple[str, str, list[Pin], int]]) -> int:
        """Put many publications (advisory, version, its pins, the advisory's TLP rank) into one
        collection at once: what place() does for each, in a fixed number of statements per chunk
        (the pins are the caller's, not read back). Returns the membership rows added."""
        s = self.store
        now = utcnow()
        added = []
        for chunk in chunks(placements, 500):
            s.executemany("INSERT INTO placements (collection, advisory, version, placed) VALUES (?, ?, ?, ?) "
                          "ON CONFLICT DO NOTHING", [(collection, a, v, now) for a, v, _p, _r in chunk])
            added += chunk
        candidates: dict[tuple[str, str], dict] = {}
        for _a, _v, pins, floor in added:
            for p in pins:
                rank = p.pin_rank if p.tombstone or p.pin_rank >= floor else floor
                key = (p.object_id, p.modified)
                have = candidates.get(key)
                if have is None or rank < have["rank"]:
                    candidates[key] = {"origin": p.origin, "type": p.type, "spec_version": p.spec_version,
                                       "rank": rank}
        return self._apply(collection, candidates, lower_only=True) if candidates else 0

    def refresh_advisory(self, advisory: str) -> int:
        """After the advisory's TLP changed: every object version it placed anywhere."""
        changed = 0
        for collection in self.holders(advisory):
            keys = [(r["object_id"], r["modified"]) for r in self.store.rows(
                "SELECT DISTINCT p.object_id, p.modified FROM placements pl JOIN pins p ON p.advisory = pl.advisory "
                "AND p.version = pl.version WHERE pl.collection = ? AND pl.advisory = ?", (collection, advisory))]
            changed += self.refresh(collection, keys)
        return changed

    def refresh(self, collection: str, keys: list[tuple[str, str]]) -> int:
        """Recompute the rows of these (object id, modified) in a collection from placements, pins
        and the advisories' current TLP. A version that becomes visible to more readers gets a new
        row (a new date_added, so readers polling with added_after receive it); one that becomes
        less visible is raised in place; one no placement serves any more is removed."""
        targets: dict[tuple[str, str], dict | None] = {}
        for chunk in chunks(list(dict.fromkeys(keys)), 200):
            found = self.derive(collection, chunk)
            targets.update({k: found.get(k) for k in chunk})
        return self._apply(collection, targets, lower_only=False)

    def derive(self, collection: str, keys: list[tuple[str, str]] | None = None) -> dict[tuple[str, str], dict]:
        """What the collection should serve for these (object id, modified), all when None: from
        placements, pins and the advisories' current TLP, each at the lowest rank any pin serves it."""
        cond, args = "", []
        if keys is not None:
            cond = " WHERE " + " OR ".join("(p.object_id = ? AND p.modified = ?)" for _ in keys)
            args = [v for k in keys for v in k]
        return {(r["object_id"], r["modified"]): r for r in self.store.rows(
            "SELECT p.object_id, p.modified, MIN(p.origin) AS origin, MIN(p.type) AS type, "
            "MIN(p.spec_version) AS spec_version, MIN(CASE WHEN p.tombstone = 1 OR p.pin_rank >= a.tlp_rank "
            "THEN p.pin_rank ELSE a.tlp_rank END) AS rank FROM pins p "
            "JOIN placements pl ON pl.advisory = p.advisory AND pl.version = p.version AND pl.collection = ? "
            f"JOIN advisories a ON a.id = p.advisory{cond} GROUP BY p.object_id, p.modified", [collection, *args])}

    def _apply(self, collection: str, targets: dict[tuple[str, str], dict | None], lower_only: bool) -> int:
        """Make the rows of these keys serve from the target rank (None: not served). With
        `lower_only`, a target only ever lowers a row's rank."""
        s = self.store
        changed = 0
        start = datetime.now(UTC)  # each row its own date_added, increasing: added_after never splits a tie
        for chunk in chunks(list(targets), 200):
            # By object id (an index range each), the versions sorted out here: an OR of (id, version)
            # pairs made SQLite scan the whole collection (36 ms a placement at 60,000 rows).
            wanted = set(chunk)
            ids = sorted({k[0] for k in chunk})
            existing = {(r["object_id"], r["modified"]): r for r in s.rows(
                f"SELECT seq, object_id, modified, tlp_rank FROM membership WHERE collection = ? "
                f"AND object_id IN ({marks(len(ids))})", [collection, *ids])
                if (r["object_id"], r["modified"]) in wanted}
            inserts, raises, removals = [], [], []
            for key in chunk:
                t, e = targets[key], existing.get(key)
                if t is None:
                    if e is not None:
                        removals.append((e["seq"],))
                elif e is None or t["rank"] < e["tlp_rank"]:
                    if e is not None:
                        removals.append((e["seq"],))
                    stamp = (start + timedelta(microseconds=changed + len(inserts))).strftime(STAMP)
                    inserts.append((collection, key[0], key[1], t["origin"], t["type"], t["spec_version"], t["rank"],
                                    stamp))
                elif t["rank"] > e["tlp_rank"] and not lower_only:
                    raises.append((t["rank"], e["seq"]))
            s.executemany("DELETE FROM membership WHERE seq = ?", removals)
            s.executemany("UPDATE membership SET tlp_rank = ? WHERE seq = ?", raises)
            s.insert("membership", ("collection", "object_id", "modified", "origin", "type", "spec_version",
                                    "tlp_rank", "date_added"), inserts)
            if inserts or raises or removals:
                s.execute(f"UPDATE membership SET newer_rank = {NEWER_RANK} WHERE collection = ? "
                          f"AND object_id IN ({marks(len(ids))})", [collection, *ids])
            changed += len(inserts)
        return changed

    def withdraw(self, taken: list[tuple[str, str]]) -> None:
        """Versions of ids whose authorship went to the hub: out of every pin and collection."""
        s = self.store
        for oid, origin in taken:
            keys = s.rows("SELECT DISTINCT pl.collection, p.modified FROM pins p JOIN placements pl ON "
                          "pl.advisory = p.advisory AND pl.version = p.version WHERE p.object_id = ? AND p.origin = ?",
                          (oid, origin))
            s.execute("DELETE FROM pins WHERE object_id = ? AND origin = ?", (oid, origin))
            for k in keys:
                self.refresh(k["collection"], [(oid, k["modified"])])

    # --- reading ---------------------------------------------------------------------------------
    def holders(self, advisory: str) -> list[str]:
        """Collections any version of the advisory was placed in."""
        return [c for (c,) in self.store.execute(
            "SELECT DISTINCT collection FROM placements WHERE advisory = ? ORDER BY collection", (advisory,))]

    def collections_of(self, advisories: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for chunk in chunks(advisories):
            for aid, cid in self.store.execute(
                    f"SELECT DISTINCT advisory, collection FROM placements WHERE advisory IN ({marks(len(chunk))}) "
                    "ORDER BY collection", chunk):
                out.setdefault(aid, []).append(cid)
        return out

    def page(self, collection: str, max_rank: int, *, object_id: str | None = None,
             added_after: str | None = None, cursor: tuple[str, int] | None = None,
             ids: list[str] = (), types: list[str] = (), spec_versions: list[str] = (),
             versions: list[str] = ("last",), timestamps: list[str] = (), limit: int = 100,
             with_json: bool = True, mixed: bool | None = None) -> list[dict]:
        """One page of a collection as a reader with clearance `max_rank` may see it, in
        (date_added, seq) order after `cursor`. Versions ('first', 'last') are taken among the
        versions this reader may see. `mixed`: whether the collection serves STIX 2.0 too, when
        the caller knows (Collections.get(…, mixed=True)); otherwise it is looked up."""
        where, args = ["m.collection = ?", "m.tlp_rank <= ?"], [collection, max_rank]
        if object_id:
            where.append("m.object_id = ?")
            args.append(object_id)
        if added_after:
            where.append("m.date_added > ?")
            args.append(added_after)
        if cursor:
            where.append("(m.date_added, m.seq) > (?, ?)")
            args.extend(cursor)
        for col, values in (("m.object_id", ids), ("m.type", types)):
            if values:
                where.append(f"{col} IN ({marks(len(values))})")
                args.extend(values)
        # Without match[spec_version], only each object's latest spec version (TAXII 2.1 §3.4.2);
        # first/last are then taken among the versions of the spec versions chosen.
        if spec_versions:
            spec, spec_args = f"IN ({marks(len(spec_versions))})", list(spec_versions)
        elif self.mixed_spec_versions(collection) if mixed is None else mixed:
            spec, spec_args = ("= (SELECT MAX(y.spec_version) FROM membership y WHERE y.collection = m.collection "
                               "AND y.object_id = m.object_id AND y.tlp_rank <= ?)"), [max_rank]
        else:
            spec, spec_args = None, []  # every object is STIX 2.1
        if spec:
            where.append(f"m.spec_version {spec}")
            args.extend(spec_args)
        if "all" not in versions:
            alternatives = []
            for word, agg in (("last", "MAX"), ("first", "MIN")):
                if word == "last" and "last" in versions and not spec:
                    # The latest version this reader may see: no newer one at or below its rank.
                    alternatives.append("(m.newer_rank IS NULL OR m.newer_rank > ?)")
                    args.append(max_rank)
                    continue
                if word in versions:
                    alternatives.append(
                        f"m.modified = (SELECT {agg}(x.modified) FROM membership x WHERE x.collection = "
                        "m.collection AND x.object_id = m.object_id AND x.tlp_rank <= ?"
                        + (f" AND x.spec_version {spec})" if spec else ")"))
                    args.extend([max_rank, *spec_args])
            if timestamps:
                forms = [f for t in timestamps for f in timestamp_forms(t)]
                alternatives.append(f"m.modified IN ({marks(len(forms))})")
                args.extend(forms)
            where.append("(" + " OR ".join(alternatives) + ")")
        cols = "m.seq, m.date_added, m.object_id, m.modified, m.spec_version"
        q = (f"SELECT {cols}, m.origin FROM membership m WHERE {' AND '.join(where)} "
             "ORDER BY m.date_added, m.seq LIMIT ?")
        if with_json:
            # The page first (an index walk of membership_page), then its objects: joined in one query,
            # PostgreSQL's planner misjudged the join's size and sorted the whole collection (10 ms at
            # 4,400 rows, growing with it).
            q = (f"SELECT p.seq, p.date_added, p.object_id, p.modified, p.spec_version, o.json FROM ({q}) p "
                 "JOIN objects o ON o.id = p.object_id AND o.modified = p.modified AND o.origin = p.origin "
                 "ORDER BY p.date_added, p.seq")
        return self.store.rows(q, [*args, limit])

    def mixed_spec_versions(self, collection: str) -> bool:
        """Whether the collection serves anything but STIX 2.1 (objects from STIX 2.0 producers)."""
        return bool(self.store.scalar(f"SELECT {MIXED.format(collection='?')}", (collection, collection)))

    def reports(self, collections: list[str], max_rank: int, since: str | None, until: str,
                ids: list[str] | None = None) -> list[dict]:
        """Published report versions that entered any of the collections in (since, until] and that a
        reader at `max_rank` may see: {advisory, version, rank, date_added}, one per advisory (its
        newest visible version), revoked advisories and tombstones left out."""
        if not collections:
            return []
        where = [f"m.collection IN ({marks(len(collections))})", "m.type = 'report'", "m.tlp_rank <= ?",
                 "m.date_added <= ?", "p.revoked = 0", "a.status != 'revoked'"]
        args = [*collections, max_rank, until]
        if ids is not None:
            where.append(f"m.object_id IN ({marks(len(ids))})")
            args.extend(ids)
        rows = self.store.rows(
            "SELECT m.object_id AS advisory, m.modified AS version, m.tlp_rank AS rank, m.date_added "
            "FROM membership m JOIN publications p ON p.advisory = m.object_id AND p.version = m.modified "
            f"JOIN advisories a ON a.id = m.object_id WHERE {' AND '.join(where)}", args)
        newest: dict[str, dict] = {}
        entered: set[str] = set()
        for r in rows:
            if since is None or r["date_added"] > since:
                entered.add(r["advisory"])
            best = newest.get(r["advisory"])
            if best is None or (r["version"], -r["rank"]) > (best["version"], -best["rank"]):
                newest[r["advisory"]] = r
        return [r for a, r in newest.items() if a in entered]


def timestamp_forms(ts: str) -> list[str]:
    """The spellings one instant may have in stored STIX: microseconds, milliseconds, seconds."""
    base, _, frac = ts.rstrip("Z").partition(".")
    frac = (frac + "000000")[:6]
    forms = [f"{base}.{frac}Z", f"{base}.{frac[:3]}Z"]
    if frac == "000000":
        forms.append(f"{base}Z")
    return forms
