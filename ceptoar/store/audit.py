"""The append-only audit log: analyst actions, automatic decisions and every TAXII request."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from ceptoar.core.errors import Busy
from ceptoar.store.base import Repository, dump, utcnow

COLUMNS = ["time", "actor", "action", "target", "details", "member", "address", "method", "path", "collection",
           "http_status", "objects"]


class Audit(Repository):
    """Entries are appended inside the caller's transaction. Alone (a TAXII request), an entry never
    waits behind a long write: PostgreSQL appends it without the writers' lock; SQLite, when another
    process holds the write lock, keeps it in a spool file beside the database (durable at once),
    moved into the log by the next entry or reading."""

    def add(self, actor: str | None, action: str, target: str | None = None, details: dict | None = None,
            **request) -> None:
        row = dict.fromkeys(COLUMNS) | {"time": utcnow(), "actor": actor, "action": action, "target": target,
                                         "details": json.dumps(details, ensure_ascii=False) if details else None}
        row.update(request)
        values = [row[c] for c in COLUMNS]
        insert = f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        s = self.store
        if s.engine.in_transaction or s.dialect == "postgresql" or s.path is None:
            s.execute(insert, values)  # in the caller's transaction, or one atomic statement
            return
        try:
            with s.transaction(wait=0.5):
                self._unspool()
                s.execute(insert, values)
        except Busy:
            self._spool(values)

    def add_many(self, actor: str | None, action: str, entries: list[tuple[str | None, dict | None]]) -> None:
        """Entries (target, details) of one actor and action, in the caller's transaction."""
        now = utcnow()
        rows = []
        for target, details in entries:
            row = dict.fromkeys(COLUMNS) | {"time": now, "actor": actor, "action": action, "target": target,
                                             "details": dump(details) if details else None}
            rows.append([row[c] for c in COLUMNS])
        self.store.insert("audit", COLUMNS, rows)

    # --- the spool (SQLite) -------------------------------------------------------------------------
    def _spool_path(self) -> Path:
        return Path(f"{self.store.path}-audit-spool")

    def _spool(self, values: list) -> None:
        path = self._spool_path()
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            conn.execute(f"CREATE TABLE IF NOT EXISTS audit (n INTEGER PRIMARY KEY, {', '.join(COLUMNS)})")
            conn.execute(f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                         values)
        finally:
            conn.close()

    def _unspool(self) -> None:
        """Move spooled entries into the log (inside the caller's write transaction)."""
        path = self._spool_path()
        if not path.exists():
            return
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(f"SELECT n, {', '.join(COLUMNS)} FROM audit ORDER BY n").fetchall()
            if rows:
                self.store.executemany(f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES "
                                       f"({', '.join('?' * len(COLUMNS))})", [r[1:] for r in rows])
                conn.execute("DELETE FROM audit WHERE n <= ?", (rows[-1][0],))
            conn.execute("COMMIT")
        except sqlite3.OperationalError:
            pass  # another process is moving them: they arrive with its entry
        finally:
            conn.close()

    def flush(self) -> None:
        """Spooled entries into the log now (before reading it)."""
        s = self.store
        if s.dialect == "sqlite" and s.path is not None and self._spool_path().exists() \
                and not s.engine.in_transaction:
            try:
                with s.transaction(wait=2):
                    self._unspool()
            except Busy:
                pass

    def list(self, *, since: str | None = None, actor: str | None = None, action: str | None = None,
             member: str | None = None, target: str | None = None, limit: int | None = None) -> list[dict]:
        self.flush()
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

    def prune(self, before: str, archive) -> int:
        """Remove the entries older than `before`, each first written to `archive` (a text file
        opened by the caller) as one JSON line; the only deletion the log allows. Returns how many."""
        s = self.store
        self.flush()
        n = 0
        cols = ["seq", "time", "actor", "action", "target", "details", "member", "address", "method", "path",
                "collection", "http_status", "objects"]
        with s.transaction():
            for batch in s.stream(f"SELECT {', '.join(cols)} FROM audit WHERE time < ? ORDER BY seq", 1000, (before,)):
                for row in batch:
                    archive.write(json.dumps(dict(zip(cols, row, strict=True)), ensure_ascii=False) + "\n")
                n += len(batch)
            archive.flush()
            os.fsync(archive.fileno())
            s.execute("INSERT INTO meta (key, value) VALUES ('audit_pruning', '1')")
            s.execute("DELETE FROM audit WHERE time < ?", (before,))
            s.execute("DELETE FROM meta WHERE key = 'audit_pruning'")
        return n
