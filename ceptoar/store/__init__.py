"""The store: the hub's one database behind a facade, with a repository per room.

The only package that speaks SQL. `Store` owns the connection and `transaction()`; each room is a
repository reached as an attribute (`store.sources`, `store.objects`, `store.advisories`,
`store.collections`, `store.publications`, `store.membership`, `store.members`,
`store.subscribers`, `store.deliveries`, `store.incidents`, `store.audit`, `store.leases`). SQLite (WAL, one file)
is the embedded engine.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from ceptoar.errors import NotFound, StoreError

__all__ = ["Store", "StoreError", "NotFound", "utcnow", "chunks", "dump"]


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chunks(items: list, n: int = 500):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def dump(v) -> str:
    """JSON text of a stored value (lists of strings and dicts, Japanese kept readable)."""
    return "[]" if v == [] else json.dumps(v, ensure_ascii=False)


def marks(n: int) -> str:
    return ",".join("?" * n)


class Store:
    def __init__(self, path: str | Path | None = None):
        self.path = None if path is None or str(path) == ":memory:" else Path(path)
        self.degraded: str | None = None  # why this connection can only read, when it can only read
        try:
            if self.path is None:
                self.db = sqlite_utils.Database(memory=True)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not self.path.exists():
                    # Created private: SQLite gives the WAL and SHM files the database file's mode.
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                self.db = sqlite_utils.Database(str(self.path))
                self.db.enable_wal()
            self.conn: sqlite3.Connection = self.db.conn
            # Autocommit outside `transaction()`: no implicit transaction may swallow later commits.
            self.conn.isolation_level = None
            self.conn.execute("PRAGMA busy_timeout = 10000")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: bulk ingests touch many index pages
        except sqlite3.DatabaseError as e:
            if self.path is None or not self.path.exists() or "disk I/O error" not in str(e):
                raise StoreError(f"cannot open database {path}: {e}") from None
            if getattr(self, "db", None) is not None:
                self.db.conn.close()  # its shared lock would keep the exclusive one out
            self._open_without_shm()
        self._repositories()

    def _open_without_shm(self) -> None:
        """A full disk leaves no room for the WAL index file: read with the index in memory
        (exclusive locking mode), so read-only commands still work; writes fail with 'disk full'."""
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None)
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open database {self.path}: {e}") from None
        self.db = sqlite_utils.Database(conn)
        self.conn = conn
        self.degraded = f"the disk of {self.path} is full: reading only"

    def _repositories(self) -> None:
        from ceptoar.store.access import Members
        from ceptoar.store.advisories import Advisories
        from ceptoar.store.audit import Audit
        from ceptoar.store.incidents import Incidents
        from ceptoar.store.leases import Leases
        from ceptoar.store.mail import Deliveries, Subscribers
        from ceptoar.store.membership import Collections, Membership, Publications
        from ceptoar.store.objects import Objects
        from ceptoar.store.sources import Sources

        self.sources = Sources(self)
        self.objects = Objects(self)
        self.advisories = Advisories(self)
        self.collections = Collections(self)
        self.publications = Publications(self)
        self.membership = Membership(self)
        self.members = Members(self)
        self.subscribers = Subscribers(self)
        self.deliveries = Deliveries(self)
        self.incidents = Incidents(self)
        self.audit = Audit(self)
        self.leases = Leases(self)

    # --- SQL ------------------------------------------------------------------------------------
    def execute(self, sql: str, args=()) -> sqlite3.Cursor:
        return self.conn.execute(sql, args)

    def executemany(self, sql: str, rows) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)

    def rows(self, sql: str, args=()) -> list[dict]:
        cur = self.conn.execute(sql, args)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def row(self, sql: str, args=()) -> dict | None:
        found = self.rows(sql, args)
        return found[0] if found else None

    def scalar(self, sql: str, args=()):
        r = self.conn.execute(sql, args).fetchone()
        return r[0] if r else None

    def changes(self) -> int:
        return self.conn.total_changes

    def table_names(self) -> list[str]:
        return self.db.table_names()

    @contextmanager
    def transaction(self):
        """One atomic unit: everything inside commits together or not at all (nested: joins)."""
        if self.conn.in_transaction:
            yield
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise self._explain(e) from None
        try:
            yield
        except sqlite3.OperationalError as e:
            self._rollback()
            raise self._explain(e) from None
        except BaseException:
            self._rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            self._rollback()
            raise self._explain(e) from None

    def _rollback(self) -> None:
        # SQLite has already rolled back on some errors (a full disk): only roll back what is open.
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def _explain(self, e: sqlite3.OperationalError) -> Exception:
        """The store's errors a user can act on, in one line; anything else unchanged."""
        text = str(e)
        where = str(self.path) if self.path else "the in-memory database"
        if "disk is full" in text or "disk I/O error" in text:
            return StoreError(f"disk full: cannot write {where} (nothing was saved; free space there and rerun)")
        if "database is locked" in text or "database is busy" in text:
            return StoreError(f"the database {where} is busy (another command holds it); try again")
        if "readonly" in text or "read-only" in text:
            return StoreError(f"the database {where} is read-only for this user")
        return e

    # --- schema and settings -----------------------------------------------------------------------
    def migrate(self) -> int:
        """Create or upgrade the schema; safe to run any number of times."""
        from ceptoar.files import make_private
        from ceptoar.store import schema
        version, _previous, _backup = schema.migrate(self, backup=self.backup_before_migration)
        if self.path is not None:  # a database made by an earlier version may be world-readable
            make_private(self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
        return version

    def backup_before_migration(self) -> str | None:
        """A copy of the database beside it, taken before an upgrade changes anything."""
        if self.path is None:
            return None
        from ceptoar.store import schema
        target = self.path.with_name(f"{self.path.name}.before-schema-{schema.version_of(self)}")
        target.unlink(missing_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        dest = sqlite3.connect(target)
        try:
            self.conn.backup(dest)
        finally:
            dest.close()
        return str(target)

    def is_initialized(self) -> bool:
        return "meta" in self.table_names()

    def require_initialized(self) -> None:
        from ceptoar.store import schema
        if not self.is_initialized():
            raise StoreError("database not initialized: run `ceptoar init` first")
        current = schema.version_of(self)
        if current > schema.SCHEMA_VERSION:
            raise StoreError(f"the database has schema {current}, newer than this hub's {schema.SCHEMA_VERSION}: "
                             "upgrade the hub instead")
        if current < schema.SCHEMA_VERSION:
            raise StoreError(f"the database has schema {current}; run `ceptoar init` to upgrade it to "
                             f"{schema.SCHEMA_VERSION}")

    def meta(self, key: str) -> str | None:
        return self.scalar("SELECT value FROM meta WHERE key = ?", (key,))

    def count(self, table: str) -> int:
        return self.scalar(f"SELECT COUNT(*) FROM {table}")  # table names are the code's own


class Repository:
    """One room of the store; reaches SQL only through the facade."""

    def __init__(self, store: Store):
        self.store = store
