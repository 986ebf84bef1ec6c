"""The store: the hub's one database behind a facade, with a repository per room.

The only package that speaks SQL. `Store` owns the connection and `transaction()`; each room is a
repository reached as an attribute (`store.sources`, `store.objects`, `store.advisories`,
`store.collections`, `store.publications`, `store.membership`, `store.members`,
`store.subscribers`, `store.deliveries`, `store.incidents`, `store.audit`, `store.leases`). SQLite (WAL, one file)
is the embedded engine.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from ceptoar.core import settings
from ceptoar.core.dburl import sqlite_path
from ceptoar.core.errors import NotFound, StoreError
from ceptoar.core.files import make_private
from ceptoar.store import engines, schema
from ceptoar.store.access import Members
from ceptoar.store.advisories import Advisories
from ceptoar.store.audit import Audit
from ceptoar.store.base import Repository, chunks, dump, marks, utcnow
from ceptoar.store.epss import Epss
from ceptoar.store.incidents import Incidents
from ceptoar.store.leases import Leases
from ceptoar.store.mail import Deliveries, Subscribers
from ceptoar.store.membership import Collections, Membership, Publications
from ceptoar.store.objects import Objects
from ceptoar.store.registers import Facilities
from ceptoar.store.sources import Sources
from ceptoar.store.vendors import Vendors

__all__ = ["Store", "open_store", "StoreError", "NotFound", "Repository", "utcnow", "chunks", "dump", "marks"]


PAGE_SIZE = 16384  # SQLite's page size for new databases


class Store:
    """The hub's database: `target` is a file path or `sqlite:///path` (SQLite, the embedded default),
    `postgresql://…` (PostgreSQL), or None / ':memory:' (SQLite in memory, for tests)."""

    def __init__(self, target: str | Path | None = None):
        target = ":memory:" if target is None else str(target)
        self.degraded: str | None = None  # why this connection can only read, when it can only read
        self.on_busy = None  # called with a message when a write waits for another writer
        self.upgraded_from: int | None = None  # set by migrate(): the schema an upgrade started from
        self.last_backup: str | None = None
        if target.startswith(("postgresql://", "postgres://")):
            self.path = None
            self.engine = engines.PostgreSQL(target)
            self.where = self.engine.where
        else:
            self.path = sqlite_path(target)
            self.where = str(self.path) if self.path else "the in-memory database"
            self.engine = engines.SQLite(self._open_sqlite(), self.where)
        self.dialect = self.engine.name
        self._repositories()

    @property
    def conn(self):
        """The SQLite connection (SQLite only: backups, tests of the file format)."""
        return self.engine.conn

    def _open_sqlite(self) -> sqlite3.Connection:
        try:
            if self.path is None:
                conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not self.path.exists():
                    # Created private: SQLite gives the WAL and SHM files the database file's mode.
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
                try:
                    # A new database's pages (a database that exists keeps its own size): most rows
                    # are objects of 1–4 KB, which 4 KB pages held one to a page.
                    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                    sqlite_utils.Database(conn).enable_wal()
                except sqlite3.DatabaseError:
                    conn.close()
                    raise
            # Autocommit outside `transaction()`: no implicit transaction may swallow later commits.
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: bulk ingests touch many index pages
            return conn
        except sqlite3.DatabaseError as e:
            if self.path is None or not self.path.exists() or "disk I/O error" not in str(e):
                raise StoreError(f"cannot open database {self.where}: {e}") from None
            return self._open_without_shm()

    def _open_without_shm(self) -> sqlite3.Connection:
        """A full disk leaves no room for the WAL index file: read with the index in memory
        (exclusive locking mode), so read-only commands still work; writes fail with 'disk full'."""
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None)
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open database {self.path}: {e}") from None
        self.degraded = f"the disk of {self.path} is full: reading only"
        return conn

    def close(self) -> None:
        self.engine.close()

    def _repositories(self) -> None:
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
        self.facilities = Facilities(self)
        self.epss = Epss(self)
        self.vendors = Vendors(self)

    # --- SQL ------------------------------------------------------------------------------------
    def execute(self, sql: str, args=()):
        try:
            return self.engine.execute(sql, args)
        except self.engine.errors as e:
            raise self._explain(e) from None

    def executemany(self, sql: str, rows):
        try:
            return self.engine.executemany(sql, rows)
        except self.engine.errors as e:
            raise self._explain(e) from None

    def insert(self, table: str, columns: tuple[str, ...], rows, conflict: str = "") -> None:
        """New rows: executemany on SQLite, COPY on PostgreSQL. `conflict`: an ON CONFLICT … DO
        NOTHING clause for rows that may be there already (not DO UPDATE: one statement cannot
        update a row twice, as a batch with a key twice would ask)."""
        assert not conflict or conflict.rstrip().endswith("DO NOTHING"), conflict
        try:
            self.engine.insert(table, columns, list(rows), conflict)
        except self.engine.errors as e:
            raise self._explain(e) from None

    def analyze(self, *tables: str) -> None:
        """Between the batches of a bulk write: PostgreSQL refreshes these tables' statistics."""
        try:
            self.engine.analyze(tables)
        except self.engine.errors as e:
            raise self._explain(e) from None

    def rows(self, sql: str, args=()) -> list[dict]:
        cur = self.execute(sql, args)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def row(self, sql: str, args=()) -> dict | None:
        found = self.rows(sql, args)
        return found[0] if found else None

    def scalar(self, sql: str, args=()):
        r = self.execute(sql, args).fetchone()
        return r[0] if r else None

    def table_names(self) -> list[str]:
        return self.engine.table_names()

    def stream(self, sql: str, size: int = 1000, args=()):
        """The rows of a query in lists of `size`, without holding them all."""
        return self.engine.stream(sql, size, args)

    def after_copy(self) -> None:
        self.engine.after_copy()

    def checkpoint(self) -> None:
        """After a large ingest. SQLite: move the WAL into the database and truncate it (so it does
        not sit beside the database at the size of everything written). PostgreSQL: what autovacuum
        would do a minute later, done now: VACUUM (ANALYZE), so tables that grew by thousands of rows
        are read through their indexes (a TAXII page took 14 ms instead of 6) and the trigram index's
        pending entries are merged (until then the planner prices the index above a scan: a search
        for a rare word took 5 ms instead of 0.1)."""
        if self.engine.in_transaction:  # inside a larger unit: its end comes later
            return
        if self.dialect == "sqlite" and self.path is not None:
            self.engine.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        elif self.dialect == "postgresql":
            self.execute("VACUUM (ANALYZE)")

    @contextmanager
    def transaction(self, wait: float | None = None):
        """One atomic unit: everything inside commits together or not at all (nested: joins).
        Waits for another writer up to `wait` seconds (default: the busy_seconds setting), telling
        `self.on_busy` (a command prints it), then fails with Busy in one line."""
        engine = self.engine
        if engine.in_transaction:
            yield
            return
        if wait is None:
            wait = settings.current().busy_seconds
        try:
            engine.begin(wait, self.on_busy)
        except engine.errors as e:
            self._rollback()
            raise self._explain(e) from None
        try:
            yield
        except engine.errors as e:
            self._rollback()
            raise self._explain(e) from None
        except BaseException:
            self._rollback()
            raise
        try:
            engine.commit()
        except engine.errors as e:
            self._rollback()
            raise self._explain(e) from None

    def _rollback(self) -> None:
        try:
            self.engine.rollback()
        except self.engine.errors:
            pass

    def _explain(self, e: Exception) -> Exception:
        """The store's errors a user can act on, in one line; anything else unchanged."""
        return self.engine.explain(e)

    # --- schema and settings -----------------------------------------------------------------------
    def migrate(self, actor: str = "ceptoar", backfills: Mapping[int, Callable[[Store], None]] | None = None) -> int:
        """Create or upgrade the schema; safe to run any number of times. An upgrade is audited
        (with the copy taken before it, `self.last_backup`); `backfills` as in `schema.migrate`."""
        version, previous, backup = schema.migrate(self, backup=self.backup_before_migration, backfills=backfills)
        self.upgraded_from, self.last_backup = (previous, backup) if previous not in (None, version) else (None, None)
        if self.upgraded_from is not None:
            self.audit.add(actor, "schema-upgrade", self.where, {"from": previous, "to": version, "copy": backup})
        if self.path is not None:  # a database made by an earlier version may be world-readable
            make_private(self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
        return version

    def backup_before_migration(self) -> str | None:
        """A copy of the database beside it, taken before an upgrade changes anything."""
        if self.path is None:
            return None
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


def open_store(target: str | Path | None = None, migrate: bool = False) -> Store:
    """The store at `target` (a path, `sqlite:///path` or `postgresql://…`), its schema created or
    upgraded when `migrate`, else required current."""
    store = Store(target)
    if migrate:
        store.migrate()
    else:
        store.require_initialized()
    return store

