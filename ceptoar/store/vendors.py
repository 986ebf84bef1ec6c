"""Maintenance vendors (保守業者): the companies that maintain facilities' systems, as parties."""

from __future__ import annotations

import json

from ceptoar.store.base import Repository, utcnow

COLUMNS = ("id", "name", "email", "phone", "aliases", "clearance", "created", "updated")


class Vendors(Repository):
    def upsert(self, v: dict) -> bool:
        """Add or redefine a vendor; True when it was new (its clearance is kept on a redefinition)."""
        now, new = utcnow(), self.get(v["id"]) is None
        self.store.execute(
            "INSERT INTO vendors (id, name, email, phone, aliases, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email, phone = excluded.phone, "
            "aliases = excluded.aliases, updated = excluded.updated",
            (v["id"], v["name"], v["email"], v.get("phone"), json.dumps(v.get("aliases") or [], ensure_ascii=False),
             now, now))
        return new

    @staticmethod
    def _row(r: dict) -> dict:
        r["aliases"] = json.loads(r.get("aliases") or "[]")
        return r

    def get(self, vid: str) -> dict | None:
        r = self.store.row(f"SELECT {', '.join(COLUMNS)} FROM vendors WHERE id = ?", (vid,))
        return self._row(r) if r else None

    def list(self) -> list[dict]:
        return [self._row(r) for r in self.store.rows(f"SELECT {', '.join(COLUMNS)} FROM vendors ORDER BY id")]

    def remove(self, vid: str) -> bool:
        return self.store.execute("DELETE FROM vendors WHERE id = ?", (vid,)).rowcount == 1

    def maintained_names(self) -> list[tuple[str, int, int]]:
        """(maintenance_vendor as written, rows, facilities) over every current register."""
        return [tuple(r) for r in self.store.execute(
            "SELECT maintenance_vendor, COUNT(*), COUNT(DISTINCT facility) FROM register_rows "
            "WHERE maintenance_vendor IS NOT NULL AND maintenance_vendor <> '' GROUP BY maintenance_vendor "
            "ORDER BY COUNT(*) DESC, maintenance_vendor")]
