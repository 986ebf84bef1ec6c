"""STIX object versions with their origin, and who may author each id.

Every version is stored under its origin (`hub`, `source:<id>`, `incident`): versions of different
origins never overwrite or merge into each other. `object_owners` names the one origin whose versions
of an id may be served; a version from another origin is kept (`kept_apart`) but never published.
Ids the hub derives itself (the vulnerability per CVE, source identities, the TLP markings, feed
report ids) are reclaimed by it if someone else used them first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ceptoar.core.model import HUB, marking_rank, serialize
from ceptoar.store.base import Repository, chunks, like_escaped, marks, utcnow

COLUMNS = "id, origin, modified, type, hash, own_rank, kept_apart, json"


@dataclass
class ObjectVersion:
    id: str
    origin: str
    modified: str
    type: str
    hash: str
    own_rank: int | None  # the highest TLP it is marked with, None when unmarked
    kept_apart: bool  # its id is held by another origin: stored, never published
    json: str

    @classmethod
    def of(cls, row: tuple) -> ObjectVersion:
        oid, origin, modified, typ, h, own, apart, text = row
        return cls(oid, origin, modified, typ, h, own, bool(apart), text)

    @property
    def obj(self) -> dict:
        return json.loads(self.json)


def version_key(obj: dict) -> str:
    """The version timestamp of an object (`modified`, else `created` for immutable ones)."""
    return obj.get("modified") or obj.get("created") or ""


class Objects(Repository):
    def latest(self, ids: list[str], origin: str) -> dict[str, ObjectVersion]:
        """id → the newest version of that origin."""
        out: dict[str, ObjectVersion] = {}
        for chunk in chunks(list(dict.fromkeys(ids))):
            for row in self.store.execute(
                    f"SELECT {COLUMNS} FROM objects WHERE origin = ? AND id IN ({marks(len(chunk))}) "
                    "ORDER BY id, modified", [origin, *chunk]):
                out[row[0]] = ObjectVersion.of(row)
        return out

    def mentioning(self, ids: list[str], origin: str, text: str) -> set[str]:
        """The ids any of whose versions of that origin holds `text` in its JSON (a cheap first look
        that sends no bodies back: the caller parses the few it names)."""
        out: set[str] = set()
        for chunk in chunks(list(dict.fromkeys(ids))):
            out.update(i for (i,) in self.store.execute(
                f"SELECT DISTINCT id FROM objects WHERE origin = ? AND id IN ({marks(len(chunk))}) "
                "AND json LIKE ? ESCAPE '\\'", [origin, *chunk, f"%{like_escaped(text)}%"]))
        return out

    def max_modified(self, ids: list[str]) -> dict[str, str]:
        """id → the latest `modified` over every origin (a new hub version must come after it)."""
        out = {}
        for chunk in chunks(list(dict.fromkeys(ids))):
            out.update(self.store.execute(
                f"SELECT id, MAX(modified) FROM objects WHERE id IN ({marks(len(chunk))}) GROUP BY id",
                chunk).fetchall())
        return out

    def get(self, oid: str, modified: str, origin: str) -> ObjectVersion | None:
        r = self.store.execute(f"SELECT {COLUMNS} FROM objects WHERE id = ? AND origin = ? AND modified = ?",
                               (oid, origin, modified)).fetchone()
        return ObjectVersion.of(r) if r else None

    def get_many(self, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], ObjectVersion]:
        """(id, modified, origin) → version."""
        out = {}
        for chunk in chunks(list(dict.fromkeys(keys)), 300):
            cond = " OR ".join("(id = ? AND modified = ? AND origin = ?)" for _ in chunk)
            for row in self.store.execute(f"SELECT {COLUMNS} FROM objects WHERE {cond}",
                                          [v for k in chunk for v in k]):
                v = ObjectVersion.of(row)
                out[(v.id, v.modified, v.origin)] = v
        return out

    def versions(self, oid: str, origin: str | None = None) -> list[ObjectVersion]:
        where, args = "id = ?", [oid]
        if origin:
            where += " AND origin = ?"
            args.append(origin)
        return [ObjectVersion.of(r) for r in self.store.execute(
            f"SELECT {COLUMNS} FROM objects WHERE {where} ORDER BY modified, origin", args)]

    def put(self, rows: list[tuple], origin: str) -> None:
        """(id, modified, type, hash, json, own_rank, kept_apart) rows of one origin; an existing
        (id, origin, modified) is left as it is."""
        now = utcnow()
        self.store.insert(
            "objects", ("id", "origin", "modified", "type", "hash", "added", "own_rank", "kept_apart", "json"),
            [(oid, origin, mod, typ, h, now, own, int(apart), text) for oid, mod, typ, h, text, own, apart in rows],
            "ON CONFLICT (id, origin, modified) DO NOTHING")

    def put_hub(self, objects: list[dict], *, replace: bool = False) -> None:
        """Hub-authored objects, claimed for the hub; `replace` rewrites a version in place (only for
        the fixed OASIS definitions, which have no `modified` to move forward)."""
        rows = []
        for obj in objects:
            text, h = serialize(obj)
            rows.append((obj["id"], version_key(obj), obj["type"], h, text, marking_rank(obj), False))
        self.reclaim([o["id"] for o in objects], HUB)
        if replace:
            self.store.executemany("UPDATE objects SET json = ?, hash = ? WHERE id = ? AND origin = ? AND modified = ?",
                                   [(r[4], r[3], r[0], HUB, r[1]) for r in rows])
        self.put(rows, HUB)

    # --- who may author an id ---------------------------------------------------------------------
    def owners(self, ids: list[str]) -> dict[str, str]:
        out = {}
        for chunk in chunks(list(dict.fromkeys(ids))):
            out.update(self.store.execute(
                f"SELECT id, origin FROM object_owners WHERE id IN ({marks(len(chunk))})", chunk).fetchall())
        return out

    def claim(self, ids: list[str], origin: str) -> None:
        """First come: ids nobody holds yet become `origin`'s."""
        now = utcnow()
        self.store.insert("object_owners", ("id", "origin", "claimed"), [(i, origin, now) for i in dict.fromkeys(ids)],
                          "ON CONFLICT (id) DO NOTHING")

    def reclaim(self, ids: list[str], origin: str) -> list[tuple[str, str]]:
        """Ids the hub derives itself go to `origin` whoever used them first; the earlier holder's
        versions are kept apart and withdrawn from publications. Returns (id, previous owner)."""
        taken = [(i, o) for i, o in self.owners(ids).items() if o != origin]
        self.claim(ids, origin)
        if taken:
            s = self.store
            now = utcnow()
            s.executemany("UPDATE object_owners SET origin = ?, claimed = ? WHERE id = ?",
                          [(origin, now, i) for i, _ in taken])
            s.executemany("UPDATE objects SET kept_apart = 1 WHERE id = ? AND origin = ?", taken)
            s.membership.withdraw(taken)
        return taken
