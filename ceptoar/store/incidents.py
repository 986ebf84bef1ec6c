"""Incidents at member facilities (TLP:RED): kept apart from advisories, never published."""

from __future__ import annotations

import json

from ceptoar.store.advisories import ids_by_prefix
from ceptoar.store.base import Repository, utcnow


class Incidents(Repository):
    def save(self, inc: dict) -> None:
        self.store.execute(
            "INSERT INTO incidents (id, status, prefecture, member, created, updated, json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET status = excluded.status, prefecture = excluded.prefecture, "
            "updated = excluded.updated, json = excluded.json",
            (inc["id"], inc["status"], inc["prefecture"], inc["member"], inc["created"], utcnow(),
             json.dumps(inc, ensure_ascii=False)))

    def find(self, ref: str) -> dict | None:
        if len(ref.split("--", 1)[-1]) < 6:
            return None
        ids = ids_by_prefix(self.store, "incidents", "incident", ref)
        if len(ids) != 1:
            return None
        return json.loads(self.store.scalar("SELECT json FROM incidents WHERE id = ?", ids))

    def list(self, status: str | None = None, prefecture: str | None = None) -> list[dict]:
        where, args = [], []
        for col, val in (("status", status), ("prefecture", prefecture)):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        q = "SELECT json FROM incidents" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created DESC"
        return [json.loads(js) for (js,) in self.store.execute(q, args)]
