"""The append-only audit log: analyst actions, automatic decisions and every TAXII request."""

from __future__ import annotations

import json

from ceptoar.store import Repository, utcnow


class Audit(Repository):
    def add(self, actor: str | None, action: str, target: str | None = None, details: dict | None = None,
            **request) -> None:
        cols = ["time", "actor", "action", "target", "details", *request]
        values = [utcnow(), actor, action, target,
                  json.dumps(details, ensure_ascii=False) if details else None, *request.values()]
        with self.store.transaction():
            self.store.execute(f"INSERT INTO audit ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", values)

    def list(self, *, since: str | None = None, actor: str | None = None, action: str | None = None,
             member: str | None = None, target: str | None = None, limit: int | None = None) -> list[dict]:
        where, args = [], []
        for col, val in (("actor", actor), ("action", action), ("member", member), ("target", target)):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        if since:
            where.append("time >= ?")
            args.append(since)
        q = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq"
        if limit:
            q = f"SELECT * FROM ({q} DESC LIMIT {int(limit)}) newest ORDER BY seq"
        rows = self.store.rows(q, args)
        for r in rows:
            r["details"] = json.loads(r["details"]) if r["details"] else None
        return rows
