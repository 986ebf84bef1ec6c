"""Facilities, their registers (台帳) and the matches of advisories against them.

A register is TLP:RED: it says what a clinic runs. It is kept as versions (each import a new one),
its current rows indexed by product keys for matching, and never read by TAXII, digests of other
facilities or exports. Matches are (facility, advisory, register row) with a confidence and reasons.
"""

from __future__ import annotations

import json

from ceptoar.store import Repository, chunks, dump, marks, utcnow

ROW_COLUMNS = ("n", "category", "vendor", "product", "version", "cpe", "purl", "aliases", "internet_exposed",
               "remote_maintenance", "maintenance_vendor", "note", "device")


class Facilities(Repository):
    def upsert(self, f: dict) -> bool:
        """Add or update a facility; True when it was new."""
        now = utcnow()
        new = self.get(f["id"]) is None
        self.store.execute(
            "INSERT INTO facilities (id, name, facility_type, prefecture, member, phone, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
            "facility_type = excluded.facility_type, prefecture = excluded.prefecture, member = excluded.member, "
            "phone = excluded.phone, updated = excluded.updated",
            (f["id"], f["name"], f["facility_type"], f["prefecture"], f["member"], f.get("phone"), now, now))
        return new

    def get(self, fid: str) -> dict | None:
        return self.store.row("SELECT * FROM facilities WHERE id = ?", (fid,))

    def list(self, member: str | None = None) -> list[dict]:
        if member:
            return self.store.rows("SELECT * FROM facilities WHERE member = ? ORDER BY id", (member,))
        return self.store.rows("SELECT * FROM facilities ORDER BY id")

    # --- registers ------------------------------------------------------------------------------
    def replace_register(self, fid: str, rows: list[dict], keys: list[tuple[str, int]], actor: str,
                         origin: str) -> int:
        """A new version of the facility's register (the previous ones kept); its rows and keys
        become the current ones. Returns the version."""
        version = (self.store.scalar("SELECT MAX(version) FROM registers WHERE facility = ?", (fid,)) or 0) + 1
        self.store.execute("INSERT INTO registers (facility, version, imported, actor, origin, rows) "
                           "VALUES (?, ?, ?, ?, ?, ?)", (fid, version, utcnow(), actor, origin, dump(rows)))
        self.store.execute("DELETE FROM register_rows WHERE facility = ?", (fid,))
        self.store.execute("DELETE FROM register_keys WHERE facility = ?", (fid,))
        self.store.executemany(
            f"INSERT INTO register_rows (facility, {', '.join(ROW_COLUMNS)}) VALUES (?, {marks(len(ROW_COLUMNS))})",
            [(fid, *(int(r[c]) if isinstance(r.get(c), bool) else r.get(c) for c in ROW_COLUMNS)) for r in rows])
        self.store.executemany("INSERT INTO register_keys (product_key, facility, n) VALUES (?, ?, ?) "
                               "ON CONFLICT DO NOTHING", [(k, fid, n) for k, n in keys])
        return version

    def register(self, fid: str) -> list[dict]:
        rows = self.store.rows(f"SELECT {', '.join(ROW_COLUMNS)} FROM register_rows WHERE facility = ? ORDER BY n",
                               (fid,))
        for r in rows:
            r["internet_exposed"], r["remote_maintenance"] = bool(r["internet_exposed"]), bool(r["remote_maintenance"])
        return rows

    def register_versions(self, fid: str) -> list[dict]:
        return self.store.rows("SELECT version, imported, actor, origin FROM registers WHERE facility = ? "
                               "ORDER BY version", (fid,))

    def rows_for_keys(self, keys: list[str]) -> dict[str, list[dict]]:
        """facility → its current register rows having any of these product keys."""
        out: dict[str, list[dict]] = {}
        seen: set[tuple[str, int]] = set()
        cols = ", ".join(f"r.{c}" for c in ROW_COLUMNS)
        for chunk in chunks(sorted(set(keys))):
            for r in self.store.rows(
                    f"SELECT r.facility, {cols} FROM register_keys k JOIN register_rows r ON r.facility = k.facility "
                    f"AND r.n = k.n WHERE k.product_key IN ({marks(len(chunk))})", chunk):
                if (r["facility"], r["n"]) not in seen:
                    seen.add((r["facility"], r["n"]))
                    out.setdefault(r.pop("facility"), []).append(r)
        return out

    # --- advisories' products and matches -------------------------------------------------------
    def set_advisory_products(self, advisory: str, keys: list[str], affected: list[dict]) -> None:
        """The products an advisory (as published) names: their keys for lookups, and the whole
        list for matching without reading the report again."""
        self.store.execute("DELETE FROM advisory_products WHERE advisory = ?", (advisory,))
        self.store.execute("DELETE FROM advisory_affected WHERE advisory = ?", (advisory,))
        self.store.executemany("INSERT INTO advisory_products (advisory, product_key) VALUES (?, ?) "
                               "ON CONFLICT DO NOTHING", [(advisory, k) for k in sorted(set(keys))])
        if affected:
            self.store.execute("INSERT INTO advisory_affected (advisory, affected) VALUES (?, ?)",
                               (advisory, dump(affected)))

    def affected(self, advisories: list[str]) -> dict[str, list[dict]]:
        out = {}
        for chunk in chunks(advisories):
            for a, text in self.store.execute(
                    f"SELECT advisory, affected FROM advisory_affected WHERE advisory IN ({marks(len(chunk))})",
                    chunk):
                out[a] = json.loads(text)
        return out

    def advisories_for_keys(self, keys: list[str]) -> list[str]:
        out: dict[str, None] = {}
        for chunk in chunks(sorted(set(keys))):
            for (a,) in self.store.execute(
                    f"SELECT DISTINCT advisory FROM advisory_products WHERE product_key IN ({marks(len(chunk))})",
                    chunk):
                out[a] = None
        return list(out)

    def replace_matches(self, *, advisory: str | None = None, facility: str | None = None,
                        found: list[tuple[str, str, int, str, list[str]]]) -> tuple[int, int]:
        """Replace the matches of one advisory or one facility; (added, removed) counts of
        (facility, advisory) pairs. `found`: (facility, advisory, row, confidence, reasons)."""
        col, value = ("advisory", advisory) if advisory is not None else ("facility", facility)
        before = {(f, a) for f, a in self.store.execute(
            f"SELECT DISTINCT facility, advisory FROM matches WHERE {col} = ?", (value,))}
        self.store.execute(f"DELETE FROM matches WHERE {col} = ?", (value,))
        now = utcnow()
        texts: dict[tuple, str] = {}  # the same reasons repeat across facilities
        self.store.executemany(
            "INSERT INTO matches (facility, advisory, n, confidence, reasons, matched) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [(f, a, n, c, texts.get(tuple(r)) or texts.setdefault(tuple(r), json.dumps(r, ensure_ascii=False)), now)
             for f, a, n, c, r in found])
        after = {(f, a) for f, a, *_ in found}
        return len(after - before), len(before - after)

    def matches(self, *, facility: str | None = None, advisory: str | None = None, member: str | None = None,
                advisories: list[str] | None = None) -> list[dict]:
        where, args = [], []
        if facility:
            where.append("m.facility = ?")
            args.append(facility)
        if advisory:
            where.append("m.advisory = ?")
            args.append(advisory)
        if member:
            where.append("f.member = ?")
            args.append(member)
        if advisories is not None:
            if not advisories:
                return []
            where.append(f"m.advisory IN ({marks(len(advisories))})")
            args.extend(advisories)
        rows = self.store.rows(
            "SELECT m.facility, m.advisory, m.n, m.confidence, m.reasons, m.matched, f.member, f.name AS facility_name "
            "FROM matches m JOIN facilities f ON f.id = m.facility"
            + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY m.facility, m.advisory, m.n", args)
        for r in rows:
            r["reasons"] = json.loads(r["reasons"])
        return rows

    # --- answers and targeted alerts ------------------------------------------------------------
    def add_response(self, r: dict) -> None:
        self.store.execute("INSERT INTO responses (facility, advisory, status, fixed_on, note, time, actor, via) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (r["facility"], r["advisory"], r["status"], r["fixed_on"], r["note"], r["time"],
                            r["actor"], r["via"]))

    def responses(self, facility: str, advisory: str) -> list[dict]:
        return self.store.rows("SELECT status, fixed_on, note, time, actor, via FROM responses WHERE facility = ? "
                               "AND advisory = ? ORDER BY seq", (facility, advisory))

    def latest_responses(self, facility: str | None = None) -> dict:
        """(facility, advisory) → the latest answer (with `facility`: advisory → it)."""
        q = ("SELECT r.facility, r.advisory, r.status, r.fixed_on, r.note, r.time FROM responses r "
             "WHERE r.seq = (SELECT MAX(x.seq) FROM responses x WHERE x.facility = r.facility "
             "AND x.advisory = r.advisory)" + (" AND r.facility = ?" if facility else ""))
        rows = self.store.rows(q, (facility,) if facility else ())
        if facility:
            return {r["advisory"]: r for r in rows}
        return {(r["facility"], r["advisory"]): r for r in rows}

    def queue_targeted(self, pairs: list[tuple[str, str]]) -> None:
        """Queue a targeted alert per (facility, advisory) not alerted before."""
        now = utcnow()
        self.store.executemany("INSERT INTO targeted_alerts (facility, advisory, queued) VALUES (?, ?, ?) "
                               "ON CONFLICT DO NOTHING", [(f, a, now) for f, a in pairs])

    def pending_targeted(self) -> list[dict]:
        return self.store.rows("SELECT * FROM targeted_alerts WHERE run IS NULL ORDER BY queued, facility")

    def mark_targeted(self, facility: str, advisory: str, run: str) -> None:
        self.store.execute("UPDATE targeted_alerts SET run = ? WHERE facility = ? AND advisory = ?",
                           (run, facility, advisory))
