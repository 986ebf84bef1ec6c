"""The two engines under the store: SQLite (one file, WAL; the embedded default) and PostgreSQL
(psycopg 3 and its pool; for a hub that outgrows one machine).

Repositories write one SQL dialect, the common ground of both, with `?` placeholders; an engine runs it
and says where the two differ (`rowid`, search, schema extras). Both take writers one at a time:
SQLite by its write lock (`BEGIN IMMEDIATE`), PostgreSQL by a transaction-scoped advisory lock taken
at `BEGIN`, so every read-modify-write in the repositories sees the same guarantees on both.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import threading
import weakref
from functools import lru_cache

from ceptoar.core.dburl import redacted
from ceptoar.core.errors import Busy, Conflict, StoreError
from ceptoar.store.base import marks

WRITER_LOCK = 0x6365_7074  # 'cept': the advisory lock every PostgreSQL write transaction holds
BUSY_SECONDS = 10


class SQLite:
    name = "sqlite"
    rowid = "rowid"  # insertion order of a table with a text key
    errors = (sqlite3.OperationalError, sqlite3.IntegrityError)

    def __init__(self, conn: sqlite3.Connection, where: str):
        self.conn = conn
        self.where = where

    def execute(self, sql: str, args=()):
        return self.conn.execute(sql, args)

    def executemany(self, sql: str, rows):
        return self.conn.executemany(sql, rows)

    def insert(self, table: str, columns: tuple[str, ...], rows: list, conflict: str = "") -> None:
        self.conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks(len(columns))}) "
                              f"{conflict}", rows)

    def analyze(self, tables: tuple[str, ...]) -> None:
        """SQLite's planner reads no statistics the store keeps up to date: nothing to refresh."""

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def begin(self, wait: float, on_busy=None) -> None:
        """Take the write lock: at once if free, else (saying so) waiting up to `wait` seconds."""
        self.conn.execute("PRAGMA busy_timeout = 200")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_SECONDS * 1000}")
        if wait <= 0.2:
            raise sqlite3.OperationalError("database is locked")
        if on_busy:
            on_busy(f"waiting up to {wait:g} s for the database: another command is writing…")
        self.conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_SECONDS * 1000}")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        # SQLite has already rolled back on some errors (a full disk): only roll back what is open.
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def explain(self, e: Exception) -> Exception:
        if isinstance(e, sqlite3.IntegrityError):
            return Conflict(f"conflicts with what is stored: {e}")
        text = str(e)
        if "disk is full" in text or "disk I/O error" in text:
            return StoreError(f"disk full: cannot write {self.where} (nothing was saved; free space there and rerun)")
        if "database is locked" in text or "database is busy" in text:
            return Busy(f"the database {self.where} is busy (another command is writing); try again later")
        if "readonly" in text or "read-only" in text:
            return StoreError(f"the database {self.where} is read-only for this user")
        return e

    def table_names(self) -> list[str]:
        import sqlite_utils

        return sqlite_utils.Database(self.conn).table_names()

    def stream(self, sql: str, size: int, args=()):
        cur = self.conn.execute(sql, args)
        while rows := cur.fetchmany(size):
            yield rows

    def after_copy(self) -> None:
        """Rows came in without the full-text index: rebuild it."""
        self.conn.execute("INSERT INTO advisories_fts (advisories_fts) VALUES ('rebuild')")

    def close(self) -> None:
        self.conn.close()


# --- PostgreSQL ---------------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def to_pyformat(sql: str, with_args: bool) -> str:
    """`?` placeholders as psycopg's `%s` (and a literal `%` doubled), outside quoted strings."""
    if not with_args:
        return sql
    out, quote = [], None
    for ch in sql:
        if quote:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


def _configure(conn) -> None:
    """The store's columns are SQLite's types: flags are integers, so Python's bools go as 0 and 1."""
    from psycopg.types.numeric import Int8Dumper

    class BoolAsInteger(Int8Dumper):
        def dump(self, obj):
            return super().dump(int(obj))

    conn.adapters.register_dumper(bool, BoolAsInteger)
    conn.execute(f"SET lock_timeout = '{BUSY_SECONDS}s'")


_pools: dict[tuple[str, int], object] = {}
_pools_lock = threading.Lock()


def pool_for(url: str):
    """One connection pool per database URL and process: a pool (its connections and its filler
    thread) never crosses a fork, so each gunicorn worker opens its own."""
    from psycopg_pool import ConnectionPool

    key = (url, os.getpid())
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            size = int(os.environ.get("CEPTOAR_PG_POOL_SIZE", "8"))
            pool = ConnectionPool(url, min_size=1, max_size=size, open=True, timeout=BUSY_SECONDS,
                                  kwargs={"autocommit": True}, configure=_configure, name="ceptoar")
            _pools[key] = pool
        return pool


def close_pools() -> None:
    """Close this process's PostgreSQL pools (the hub never needs to: its pools live as long as its
    process; a test or benchmark does, before a database it wrote becomes a template, which nobody
    may be connected to)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def _give_back(pool, conn) -> None:
    try:
        pool.putconn(conn)  # the pool rolls back what was left open
    except Exception:  # the pool is closed (interpreter exit)
        pass


class PostgreSQL:
    name = "postgresql"
    rowid = "seq"  # PostgreSQL has no rowid: the tables that order by insertion get a sequence

    def __init__(self, url: str):
        import psycopg
        from psycopg_pool import PoolTimeout

        self.psycopg = psycopg
        self.errors = (psycopg.OperationalError, psycopg.IntegrityError)
        self.url = url
        self.where = redacted(url)
        try:
            self.pool = pool_for(url)
            try:
                self.conn = self.pool.getconn(timeout=1)
            except PoolTimeout:
                # Stores dropped but not yet collected (a store and its rooms form a cycle) still
                # hold connections: collect them, then wait the full time.
                gc.collect()
                self.conn = self.pool.getconn()
            # Back to the pool when the store is dropped without close() (a thread's store, a test's).
            self._finalizer = weakref.finalize(self, _give_back, self.pool, self.conn)
        except Exception as e:  # the pool's timeout, a refused connection, bad credentials
            raise StoreError(f"cannot connect to {self.where}: {' '.join(str(e).split())[:300]}") from None

    def execute(self, sql: str, args=()):
        return self.conn.execute(to_pyformat(sql, bool(args)), args or None)

    def executemany(self, sql: str, rows):
        rows = list(rows)
        cur = self.conn.cursor()
        if rows:
            cur.executemany(to_pyformat(sql, True), rows)
        return cur

    def insert(self, table: str, columns: tuple[str, ...], rows: list, conflict: str = "") -> None:
        """New rows by COPY: one stream, not a statement per row (42,000 pins of a bulk publish in
        a fraction of executemany's time). With a `conflict` clause (ON CONFLICT … DO NOTHING), by
        COPY into a temporary table of the same columns, then one INSERT … SELECT from it (half
        executemany's time for 500 rows)."""
        if not rows:
            return
        cols = ", ".join(columns)
        into = table
        if conflict:
            into = f"staging_{table}"
            self.conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {into} AS SELECT * FROM {table} WITH NO DATA")
        with self.conn.cursor() as cur, cur.copy(f"COPY {into} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        if conflict:
            # A temporary table is never scanned in parallel: its rows go in in the order copied.
            self.conn.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {into} {conflict}")
            self.conn.execute(f"TRUNCATE {into}")  # not DELETE: autovacuum never visits temporary tables

    def analyze(self, tables: tuple[str, ...]) -> None:
        """The planner's statistics of tables a bulk write is growing, between its transactions: with
        the numbers of the small tables they started as, it reads them through the wrong index."""
        self.conn.execute(f"ANALYZE {', '.join(tables)}")

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != self.psycopg.pq.TransactionStatus.IDLE

    def begin(self, wait: float, on_busy=None) -> None:
        """BEGIN and the writers' advisory lock: at once if free, else (saying so) waiting up to `wait`."""
        self.conn.execute("BEGIN")
        if self.conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (WRITER_LOCK,)).fetchone()[0]:
            return
        if wait <= 0.2:
            raise self.psycopg.errors.LockNotAvailable("the writers' lock is held")
        if on_busy:
            on_busy(f"waiting up to {wait:g} s for the database: another command is writing…")
        self.conn.execute(f"SET LOCAL lock_timeout = '{int(wait * 1000)}ms'")
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self.conn.execute("ROLLBACK")

    def explain(self, e: Exception) -> Exception:
        errors = self.psycopg.errors
        if isinstance(e, self.psycopg.IntegrityError):
            return Conflict(f"conflicts with what is stored: {' '.join(str(e).split())[:300]}")
        if isinstance(e, errors.DiskFull):
            return StoreError(f"disk full: the PostgreSQL server of {self.where} cannot write (nothing was saved)")
        if isinstance(e, (errors.LockNotAvailable, errors.QueryCanceled)):
            return Busy(f"the database {self.where} is busy (another command is writing); try again later")
        if isinstance(e, self.psycopg.OperationalError):
            return StoreError(f"the database {self.where} failed: {' '.join(str(e).split())[:300]}")
        return e

    def table_names(self) -> list[str]:
        return [n for (n,) in self.conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")]

    def stream(self, sql: str, size: int, args=()):
        """Rows in batches through a server-side cursor (a big table never sits in memory whole)."""
        with self.conn.transaction(), self.conn.cursor(name="ceptoar_stream") as cur:
            cur.itersize = size
            cur.execute(to_pyformat(sql, bool(args)), args or None)
            while rows := cur.fetchmany(size):
                yield rows

    def after_copy(self) -> None:
        """Rows came in with their own `seq`: move each identity past the largest; then statistics."""
        for table, column in self.conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND is_identity = 'YES'").fetchall():
            self.conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                              f"coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)")
        self.conn.execute("ANALYZE")  # the planner's statistics for tables just filled

    def close(self) -> None:
        if self.conn is not None:
            self._finalizer()
            self.conn = None
