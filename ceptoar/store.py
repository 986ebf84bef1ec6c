"""The store: one SQLite file (WAL) through sqlite-utils. The only module that speaks SQL.

Tables: sources (catalogue and fetch state), raw_entries (provenance), objects (every version
of every STIX object), advisories (the analyst's view of each report) and advisory_cves.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

SCHEMA_VERSION = 6

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS sources (
    id TEXT PRIMARY KEY, name TEXT, kind TEXT NOT NULL, url TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1, tlp TEXT NOT NULL DEFAULT 'CLEAR', lang TEXT,
    interval INTEGER, options TEXT NOT NULL DEFAULT '{}', origin TEXT,
    etag TEXT, last_modified TEXT, last_fetched TEXT, last_status TEXT, last_error TEXT
);
CREATE TABLE IF NOT EXISTS raw_entries (
    source TEXT NOT NULL, key TEXT NOT NULL, hash TEXT NOT NULL, received TEXT NOT NULL,
    version TEXT, raw TEXT NOT NULL, PRIMARY KEY (source, key)
);
CREATE TABLE IF NOT EXISTS objects (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, modified TEXT NOT NULL, type TEXT NOT NULL,
    hash TEXT NOT NULL, added TEXT NOT NULL, json TEXT NOT NULL, UNIQUE (id, modified)
);
CREATE TABLE IF NOT EXISTS advisories (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, entry_key TEXT NOT NULL, title TEXT, description TEXT,
    published TEXT, published_utc TEXT, modified TEXT, stix_modified TEXT, url TEXT,
    identifiers TEXT NOT NULL DEFAULT '[]', cves TEXT NOT NULL DEFAULT '[]', cvss TEXT NOT NULL DEFAULT '[]',
    cpes TEXT NOT NULL DEFAULT '[]', max_cvss REAL, tlp TEXT NOT NULL, lang TEXT,
    tags TEXT NOT NULL DEFAULT '[]', auto_tags TEXT NOT NULL DEFAULT '[]',
    medical_signals TEXT NOT NULL DEFAULT '[]', status TEXT NOT NULL DEFAULT 'new', severity TEXT,
    medical INTEGER, notes TEXT NOT NULL DEFAULT '[]', first_seen TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS advisories_source ON advisories (source, published_utc);
CREATE INDEX IF NOT EXISTS advisories_published ON advisories (published_utc);
CREATE INDEX IF NOT EXISTS advisories_status ON advisories (status, published_utc);
CREATE TABLE IF NOT EXISTS advisory_order (
    r INTEGER PRIMARY KEY, published_utc TEXT, status TEXT
);
CREATE TRIGGER IF NOT EXISTS advisory_order_insert AFTER INSERT ON advisories BEGIN
    INSERT OR REPLACE INTO advisory_order VALUES (new.rowid, new.published_utc, new.status);
END;
CREATE TRIGGER IF NOT EXISTS advisory_order_update AFTER UPDATE OF published_utc, status ON advisories BEGIN
    UPDATE advisory_order SET published_utc = new.published_utc, status = new.status WHERE r = new.rowid;
END;
CREATE TRIGGER IF NOT EXISTS advisory_order_delete AFTER DELETE ON advisories BEGIN
    DELETE FROM advisory_order WHERE r = old.rowid;
END;
CREATE TABLE IF NOT EXISTS followed (
    source TEXT NOT NULL, id TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (source, id)
);
CREATE TABLE IF NOT EXISTS advisory_cves (
    cve TEXT NOT NULL, advisory TEXT NOT NULL, PRIMARY KEY (cve, advisory)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS advisory_cves_advisory ON advisory_cves (advisory);
CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, title TEXT NOT NULL, description TEXT,
    filter TEXT NOT NULL, origin TEXT, created TEXT NOT NULL, updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS membership (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, collection TEXT NOT NULL, object_id TEXT NOT NULL,
    modified TEXT NOT NULL, date_added TEXT NOT NULL, advisory TEXT,
    UNIQUE (collection, object_id, modified)
);
CREATE INDEX IF NOT EXISTS membership_page ON membership (collection, date_added, seq);
CREATE INDEX IF NOT EXISTS membership_advisory ON membership (advisory, collection);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, actor TEXT, action TEXT NOT NULL,
    target TEXT, details TEXT, member TEXT, address TEXT, method TEXT, path TEXT, collection TEXT,
    http_status INTEGER, objects INTEGER
);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE INDEX IF NOT EXISTS audit_failures ON audit (address, http_status, time);
CREATE TABLE IF NOT EXISTS members (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, clearance TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1,
    key_id TEXT UNIQUE, secret_hash TEXT, secret_set TEXT, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS grants (
    member TEXT NOT NULL, collection TEXT NOT NULL, can_read INTEGER NOT NULL, can_write INTEGER NOT NULL,
    PRIMARY KEY (member, collection)
);
CREATE TABLE IF NOT EXISTS subscribers (
    email TEXT PRIMARY KEY, name TEXT, member TEXT NOT NULL, frequency TEXT NOT NULL, clearance TEXT NOT NULL,
    lang TEXT NOT NULL, token TEXT NOT NULL UNIQUE, created TEXT NOT NULL, updated TEXT NOT NULL,
    unsubscribed TEXT, last_daily TEXT, last_weekly TEXT
);
CREATE INDEX IF NOT EXISTS subscribers_segment ON subscribers (frequency, member, clearance, lang, email);
CREATE TABLE IF NOT EXISTS digest_runs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, frequency TEXT, until TEXT NOT NULL, created TEXT NOT NULL,
    advisory TEXT, finished TEXT
);
CREATE TABLE IF NOT EXISTS deliveries (
    run TEXT NOT NULL, email TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    message_id TEXT, last_error TEXT, updated TEXT NOT NULL, PRIMARY KEY (run, email)
);
CREATE TABLE IF NOT EXISTS alert_periods (
    name TEXT PRIMARY KEY, start TEXT NOT NULL, end TEXT NOT NULL, note TEXT, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flash_queue (
    advisory TEXT PRIMARY KEY, period TEXT NOT NULL, queued TEXT NOT NULL, run TEXT
);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, prefecture TEXT NOT NULL, member TEXT NOT NULL,
    created TEXT NOT NULL, updated TEXT NOT NULL, json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS taxii_status (
    id TEXT PRIMARY KEY, member TEXT NOT NULL, collection TEXT, created TEXT NOT NULL, json TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE VIRTUAL TABLE IF NOT EXISTS advisories_fts USING fts5 (
    title, description, identifiers, content='advisories', content_rowid='rowid', tokenize='trigram'
);
CREATE TRIGGER IF NOT EXISTS advisories_fts_delete AFTER DELETE ON advisories BEGIN
    INSERT INTO advisories_fts (advisories_fts, rowid, title, description, identifiers)
    VALUES ('delete', old.rowid, old.title, old.description, old.identifiers);
END;
CREATE TRIGGER IF NOT EXISTS advisories_fts_update AFTER UPDATE OF title, description, identifiers ON advisories
BEGIN
    INSERT INTO advisories_fts (advisories_fts, rowid, title, description, identifiers)
    VALUES ('delete', old.rowid, old.title, old.description, old.identifiers);
    INSERT INTO advisories_fts (rowid, title, description, identifiers)
    VALUES (new.rowid, new.title, new.description, new.identifiers);
END;
"""

# Columns added after schema 1: (table, column, declaration).
ADDED_COLUMNS = [
    ("objects", "origin", "TEXT NOT NULL DEFAULT 'source'"),
    ("advisories", "published_source", "TEXT"),
    ("advisories", "published_version", "TEXT"),
    ("membership", "type", "TEXT"),
    ("membership", "spec_version", "TEXT NOT NULL DEFAULT '2.1'"),
    ("membership", "tlp_rank", "INTEGER NOT NULL DEFAULT 4"),  # unknown: treated as RED until computed
]

SOURCE_FIELDS = ("id", "name", "kind", "url", "enabled", "tlp", "lang", "interval", "options", "origin")
ADVISORY_JSON = ("identifiers", "cves", "cvss", "cpes", "tags", "auto_tags", "medical_signals", "notes")


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class StoreError(Exception):
    """A store problem to report to the user in one line."""


class Store:
    def __init__(self, path: str | Path | None = None):
        try:
            if path is None or str(path) == ":memory:":
                self.db = sqlite_utils.Database(memory=True)
            else:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite_utils.Database(str(path))
                self.db.enable_wal()
            self.conn: sqlite3.Connection = self.db.conn
            self.conn.execute("PRAGMA busy_timeout = 10000")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: bulk ingests touch many index pages
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open database {path}: {e}") from None

    # --- schema ---------------------------------------------------------------------------
    def migrate(self) -> int:
        """Create or upgrade the schema; safe to run any number of times."""
        with self.transaction():
            had_fts = "advisories_fts" in self.db.table_names()
            for stmt in _statements(SCHEMA):
                self.conn.execute(stmt)
            for table, column, decl in ADDED_COLUMNS:
                if column not in self.db[table].columns_dict:
                    self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            self.conn.execute("CREATE INDEX IF NOT EXISTS membership_object ON membership "
                              "(collection, object_id, tlp_rank, modified)")
            if self.conn.execute("SELECT value FROM meta WHERE key = 'next_key'").fetchone() is None:
                self.conn.execute("INSERT INTO meta VALUES ('next_key', ?)", (secrets.token_hex(32),))
            if not had_fts:
                self.conn.execute("INSERT INTO advisories_fts (advisories_fts) VALUES ('rebuild')")
            self.conn.execute(
                "INSERT OR IGNORE INTO advisory_order SELECT rowid, published_utc, status FROM advisories")
            # Inserts are indexed in bulk by write_batch (a per-row trigger costs 4x as much).
            self.conn.execute("DROP TRIGGER IF EXISTS advisories_fts_insert")
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        return SCHEMA_VERSION

    def is_initialized(self) -> bool:
        return "meta" in self.db.table_names()

    def require_initialized(self) -> None:
        if not self.is_initialized():
            raise StoreError("database not initialized: run `ceptoar init` first")

    @contextmanager
    def transaction(self):
        """One atomic unit: everything inside commits together or not at all."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # --- sources --------------------------------------------------------------------------
    def upsert_source(self, src: dict, *, keep_enabled: bool = True) -> bool:
        """Insert or update a source definition; fetch state, and the enabled flag the operator
        set, survive a reload of the catalogue. Returns True when the source is new."""
        row = {k: src.get(k) for k in SOURCE_FIELDS if k in src}
        row["options"] = json.dumps(src.get("options") or {}, ensure_ascii=False, sort_keys=True)
        existing = self.get_source(row["id"])
        with self.transaction():
            if existing is None:
                cols = ", ".join(row)
                self.conn.execute(f"INSERT INTO sources ({cols}) VALUES ({', '.join('?' * len(row))})",
                                  list(row.values()))
                return True
            if keep_enabled:
                row.pop("enabled", None)
            sets = ", ".join(f"{k} = ?" for k in row if k != "id")
            self.conn.execute(f"UPDATE sources SET {sets} WHERE id = ?",
                              [v for k, v in row.items() if k != "id"] + [row["id"]])
            return False

    def _source_row(self, row) -> dict:
        d = dict(row)
        d["options"] = json.loads(d.get("options") or "{}")
        d["enabled"] = bool(d["enabled"])
        return d

    def get_source(self, source_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM sources WHERE id = ?", (source_id,))
        return self._source_row(rows[0]) if rows else None

    def list_sources(self) -> list[dict]:
        return [self._source_row(r) for r in self._rows("SELECT * FROM sources ORDER BY id")]

    def set_source_enabled(self, source_id: str, enabled: bool) -> bool:
        with self.transaction():
            cur = self.conn.execute("UPDATE sources SET enabled = ? WHERE id = ?", (int(enabled), source_id))
        return cur.rowcount == 1

    def record_fetch(self, source_id: str, status: str, error: str | None = None,
                     etag: str | None = None, last_modified: str | None = None) -> None:
        """Fetch outcome; ETag/Last-Modified only move forward on success."""
        with self.transaction():
            if status == "not-modified":
                self.conn.execute("UPDATE sources SET last_fetched = ?, last_status = ?, last_error = NULL "
                                  "WHERE id = ?", (utcnow(), status, source_id))
            elif status == "ok":
                self.conn.execute(
                    "UPDATE sources SET last_fetched = ?, last_status = ?, last_error = NULL, etag = ?, "
                    "last_modified = ? WHERE id = ?", (utcnow(), status, etag, last_modified, source_id))
            else:
                self.conn.execute(
                    "UPDATE sources SET last_fetched = ?, last_status = ?, last_error = ? WHERE id = ?",
                    (utcnow(), status, error, source_id))

    # --- raw entries and objects ------------------------------------------------------------
    def raw_versions(self, source_id: str, keys: list[str]) -> dict[str, tuple[str, str | None]]:
        """key → (hash, version) of the raw entries already held for a source."""
        out = {}
        for chunk in _chunks(keys, 500):
            q = f"SELECT key, hash, version FROM raw_entries WHERE source = ? AND key IN ({','.join('?' * len(chunk))})"
            for k, h, v in self.conn.execute(q, [source_id, *chunk]):
                out[k] = (h, v)
        return out

    def followed(self, source_id: str) -> dict[str, str]:
        """id → `updated` of the index entries (ROLIE) already followed for a source."""
        return dict(self.conn.execute("SELECT id, updated FROM followed WHERE source = ?", (source_id,)))

    def mark_followed(self, source_id: str, items: list[tuple[str, str]]) -> None:
        self.conn.executemany("INSERT OR REPLACE INTO followed (source, id, updated) VALUES (?, ?, ?)",
                              [(source_id, i, u) for i, u in items])

    def latest_objects(self, ids: list[str], origin: str | None = "source") -> dict[str, dict]:
        """id → {json, hash, modified} of the newest version of that origin ('source': as
        ingested; None: any), plus `max_modified` over all versions (a new one must be later)."""
        out: dict[str, dict] = {}
        for chunk in _chunks(list(dict.fromkeys(ids)), 500):
            marks = ",".join("?" * len(chunk))
            q = (f"SELECT id, modified, hash, json, origin FROM objects WHERE id IN ({marks}) "
                 "ORDER BY id, modified")
            for oid, modified, h, js, orig in self.conn.execute(q, chunk):
                entry = out.setdefault(oid, {"max_modified": modified})
                entry["max_modified"] = modified
                if origin is None or orig == origin:
                    entry.update(modified=modified, hash=h, json=js)
        return {k: v for k, v in out.items() if "json" in v}

    def put_objects(self, objects: list[tuple], origin: str = "source") -> None:
        """(id, modified, type, hash, json) rows; an existing (id, modified) is left as it is."""
        now = utcnow()
        self.conn.executemany(
            "INSERT OR IGNORE INTO objects (id, modified, type, hash, added, json, origin) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(oid, mod, typ, h, now, js, origin) for oid, mod, typ, h, js in objects])

    def write_batch(self, *, objects: list[tuple], advisories: list[dict], advisory_cves: list[tuple],
                    raw_entries: list[tuple]) -> None:
        """Write one source's changes; the caller holds the transaction. The search index is
        written first, while the page cache is not yet full of the batch's other pages."""
        now = utcnow()
        if advisories:
            cols = [c for c in advisories[0] if not c.startswith("_")]
            updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in ("id", "first_seen", "status"))
            self.conn.executemany(
                f"INSERT INTO advisories ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                f"ON CONFLICT (id) DO UPDATE SET {updates}",
                [[_dump(a[c]) if c in ADVISORY_JSON else a[c] for c in cols] for a in advisories])
            # One FTS insert for the whole batch, in rowid order: FTS5 builds its segments fastest
            # from ascending rowids (UUID order made it four times slower).
            self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS fresh_ids (id TEXT PRIMARY KEY)")
            self.conn.execute("DELETE FROM temp.fresh_ids")
            self.conn.executemany("INSERT OR IGNORE INTO temp.fresh_ids VALUES (?)",
                                  [(a["id"],) for a in advisories if not a.get("_existing")])
            self.conn.execute(
                "INSERT INTO advisories_fts (rowid, title, description, identifiers) SELECT rowid, title, "
                "description, identifiers FROM advisories WHERE id IN (SELECT id FROM temp.fresh_ids) ORDER BY rowid")
            ids = [a["id"] for a in advisories if a.get("_existing")]
            for chunk in _chunks(ids, 500):
                self.conn.execute(f"DELETE FROM advisory_cves WHERE advisory IN ({','.join('?' * len(chunk))})", chunk)
            self.conn.executemany("INSERT OR IGNORE INTO advisory_cves (cve, advisory) VALUES (?, ?)", advisory_cves)
        self.put_objects(objects)
        self.conn.executemany(
            "INSERT INTO raw_entries (source, key, hash, received, version, raw) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (source, key) DO UPDATE SET hash = excluded.hash, received = excluded.received, "
            "version = excluded.version, raw = excluded.raw",
            [(s, k, h, now, v, raw) for s, k, h, v, raw in raw_entries])

    def advisory_states(self, ids: list[str]) -> dict[str, dict]:
        out = {}
        for chunk in _chunks(ids, 500):
            q = f"SELECT id, tags, auto_tags, first_seen FROM advisories WHERE id IN ({','.join('?' * len(chunk))})"
            for aid, tags, auto, first in self.conn.execute(q, chunk):
                out[aid] = {"tags": json.loads(tags), "auto_tags": json.loads(auto), "first_seen": first}
        return out

    # --- reading advisories ----------------------------------------------------------------
    def list_advisories(self, *, source: str | None = None, cve: str | None = None, since: str | None = None,
                        tag: str | None = None, status: str | None = None, search: str | None = None,
                        medical: bool | None = None, ids: list[str] | None = None, collection: str | None = None,
                        limit: int | None = None) -> list[dict]:
        """Advisories newest first. `medical` is the analyst's decision, or the suggestion while
        there is none; `search` matches substrings of title, description and identifiers."""
        where, args = [], []
        fts_match = None
        if ids is not None:
            if not ids:
                return []
            where.append(f"a.id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        if source:
            where.append("a.source = ?")
            args.append(source)
        if collection:
            where.append("a.id IN (SELECT advisory FROM membership WHERE collection = ?)")
            args.append(collection)
        if cve:
            where.append("a.id IN (SELECT advisory FROM advisory_cves WHERE cve = ?)")
            args.append(cve.upper())
        if since:
            where.append("a.published_utc >= ?")
            args.append(since)
        if tag:
            where.append("EXISTS (SELECT 1 FROM json_each(a.tags) WHERE value = ?)")
            args.append(tag)
        if status and status != "all":
            where.append("a.status = ?")
            args.append(status)
        if medical is not None:
            effective = ("(a.medical = 1 OR (a.medical IS NULL AND EXISTS "
                         "(SELECT 1 FROM json_each(a.tags) WHERE value = 'medical-suggested')))")
            where.append(effective if medical else f"NOT {effective}")
        if search:
            if len(search) >= 3:  # the trigram index needs three characters
                fts_match = '"' + search.replace('"', '""') + '"'
                where.append("a.rowid IN (SELECT rowid FROM advisories_fts WHERE advisories_fts MATCH ?)")
                args.append(fts_match)
            else:
                like = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                where.append("(a.title LIKE ? ESCAPE '\\' OR a.description LIKE ? ESCAPE '\\' "
                             "OR a.identifiers LIKE ? ESCAPE '\\')")
                args.extend([like, like, like])
        hits = self._hits(fts_match, 25000) if fts_match is not None else None
        if hits is not None and hits <= 25000 and len(where) == 1 + (status is not None and status != "all"):
            # Search with at most a status filter: order the hits in the compact advisory_order table
            # and read only the rows shown (23 ms for a phrase with 20,000 hits among 200,000). Past
            # 25,000 hits, walking the date index (below) finds the newest sooner.
            inner = ("SELECT o.r FROM (SELECT rowid AS h FROM advisories_fts WHERE advisories_fts MATCH ?) f "
                     "JOIN advisory_order o ON o.r = f.h")
            inner_args: list = [fts_match]
            if status and status != "all":
                inner += " WHERE o.status = ?"
                inner_args.append(status)
            inner += " ORDER BY o.published_utc DESC, o.r DESC" + (" LIMIT ?" if limit else "")
            inner_args += [limit] if limit else []
            return self._advisory_rows(self.conn.execute(
                f"SELECT a.* FROM ({inner}) top JOIN advisories a ON a.rowid = top.r "
                "ORDER BY a.published_utc DESC, a.rowid DESC", inner_args))
        q = "SELECT a.* FROM advisories a"
        if search and (fts_match is None or hits > 2000):
            # Many hits: walk the date index newest first and probe them (bounded by the table size:
            # ≤ 35 ms at 200,000), rather than fetch and sort every hit (130 ms for a common word).
            q += " INDEXED BY advisories_status" if status and status != "all" else " INDEXED BY advisories_published"
        if where:
            q += " WHERE " + " AND ".join(where)
        q += " ORDER BY a.published_utc DESC, a.rowid DESC"
        if limit:
            q += " LIMIT ?"
            args.append(limit)
        return self._advisory_rows(self.conn.execute(q, args))

    def _hits(self, match: str, cap: int) -> int:
        """How many advisories the search matches, counted up to cap + 1 (cheap for common words)."""
        return self.conn.execute(
            "SELECT COUNT(*) FROM (SELECT rowid FROM advisories_fts WHERE advisories_fts MATCH ? LIMIT ?)",
            (match, cap + 1)).fetchone()[0]

    def collection_filters(self) -> list[tuple[str, str]]:
        return list(self.conn.execute("SELECT id, filter FROM collections ORDER BY id"))

    def update_advisory(self, advisory_id: str, **fields) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        values = [_dump(v) if k in ADVISORY_JSON else (int(v) if isinstance(v, bool) else v)
                  for k, v in fields.items()]
        self.conn.execute(f"UPDATE advisories SET {sets} WHERE id = ?", [*values, advisory_id])

    def kev_cves(self) -> set[str]:
        """CVEs listed by any KEV-kind source."""
        return {c for (c,) in self.conn.execute(
            "SELECT DISTINCT c.cve FROM advisory_cves c JOIN advisories a ON a.id = c.advisory "
            "JOIN sources s ON s.id = a.source WHERE s.kind = 'kev'")}

    # --- collections and membership ---------------------------------------------------------
    def upsert_collection(self, c: dict) -> bool:
        now = utcnow()
        existing = self.get_collection(c["id"])
        if existing is None:
            self.conn.execute(
                "INSERT INTO collections (id, uuid, title, description, filter, origin, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (c["id"], c["uuid"], c["title"], c.get("description"), c["filter"], c.get("origin"), now, now))
            return True
        self.conn.execute(
            "UPDATE collections SET title = ?, description = ?, filter = ?, updated = ? WHERE id = ?",
            (c["title"], c.get("description"), c["filter"], now, c["id"]))
        return False

    def get_collection(self, cid: str) -> dict | None:
        """By id or UUID, without counts (the TAXII server asks on every request)."""
        rows = self._rows("SELECT * FROM collections WHERE id = ? OR uuid = ?", (cid, cid))
        return rows[0] if rows else None

    def list_collections(self, cid: str | None = None, counts: bool = True) -> list[dict]:
        """Collections by id; with `counts`, their advisories and objects (a scan of membership)."""
        extra = (", (SELECT COUNT(*) FROM membership m WHERE m.collection = c.id) AS objects, "
                 "(SELECT COUNT(DISTINCT advisory) FROM membership m WHERE m.collection = c.id) AS advisories"
                 if counts else "")
        where = " WHERE c.id = ? OR c.uuid = ?" if cid else ""
        return self._rows(f"SELECT c.*{extra} FROM collections c{where} ORDER BY c.id", (cid, cid) if cid else ())

    def remove_collection(self, cid: str) -> bool:
        self.conn.execute("DELETE FROM membership WHERE collection = ?", (cid,))
        return self.conn.execute("DELETE FROM collections WHERE id = ?", (cid,)).rowcount == 1

    def add_members(self, rows: list[tuple]) -> int:
        """(collection, object_id, modified, advisory, type, spec_version, tlp_rank) rows; each new
        one gets its date_added now."""
        before = self.conn.total_changes
        now = utcnow()
        self.conn.executemany(
            "INSERT OR IGNORE INTO membership (collection, object_id, modified, date_added, advisory, type, "
            "spec_version, tlp_rank) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(c, o, m, now, a, t, sv, r) for c, o, m, a, t, sv, r in rows])
        return self.conn.total_changes - before

    def membership_page(self, collection: str, max_rank: int, *, object_id: str | None = None,
                        added_after: str | None = None, cursor: tuple[str, int] | None = None,
                        ids: list[str] = (), types: list[str] = (), spec_versions: list[str] = (),
                        versions: list[str] = ("last",), timestamps: list[str] = (), limit: int = 100,
                        with_json: bool = True) -> list[dict]:
        """One page of a collection as a member with clearance `max_rank` may see it, in
        (date_added, seq) order after `cursor`. Versions ('first', 'last') are taken among the
        versions this member may see."""
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
        for col, values in (("m.object_id", ids), ("m.type", types), ("m.spec_version", spec_versions)):
            if values:
                where.append(f"{col} IN ({','.join('?' * len(values))})")
                args.extend(values)
        if "all" not in versions:
            alternatives = []
            for word, agg in (("last", "MAX"), ("first", "MIN")):
                if word in versions:
                    alternatives.append(
                        f"m.modified = (SELECT {agg}(x.modified) FROM membership x WHERE x.collection = "
                        "m.collection AND x.object_id = m.object_id AND x.tlp_rank <= ?)")
                    args.append(max_rank)
            if timestamps:
                forms = [f for t in timestamps for f in _timestamp_forms(t)]
                alternatives.append(f"m.modified IN ({','.join('?' * len(forms))})")
                args.extend(forms)
            where.append("(" + " OR ".join(alternatives) + ")")
        cols = "m.seq, m.date_added, m.object_id, m.modified" + (", o.json" if with_json else "")
        join = " JOIN objects o ON o.id = m.object_id AND o.modified = m.modified" if with_json else ""
        q = (f"SELECT {cols} FROM membership m{join} WHERE {' AND '.join(where)} "
             "ORDER BY m.date_added, m.seq LIMIT ?")
        return self._rows(q, [*args, limit])

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # --- members, grants, TAXII status --------------------------------------------------------
    def upsert_member(self, mid: str, name: str, clearance: str) -> bool:
        with self.transaction():
            if self.get_member(mid):
                self.conn.execute("UPDATE members SET name = ?, clearance = ? WHERE id = ?", (name, clearance, mid))
                return False
            self.conn.execute("INSERT INTO members (id, name, clearance, created) VALUES (?, ?, ?, ?)",
                              (mid, name, clearance, utcnow()))
            return True

    def get_member(self, mid: str) -> dict | None:
        rows = self._rows("SELECT * FROM members WHERE id = ?", (mid,))
        return rows[0] if rows else None

    def member_by_key(self, key_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM members WHERE key_id = ?", (key_id,))
        return rows[0] if rows else None

    def list_members(self) -> list[dict]:
        members = self._rows("SELECT id, name, clearance, enabled, secret_set, created FROM members ORDER BY id")
        grants = self._rows("SELECT * FROM grants ORDER BY collection")
        for m in members:
            m["enabled"] = bool(m["enabled"])
            m["grants"] = [{"collection": g["collection"], "read": bool(g["can_read"]),
                            "write": bool(g["can_write"])} for g in grants if g["member"] == m["id"]]
        return members

    def set_member_enabled(self, mid: str, enabled: bool) -> bool:
        with self.transaction():
            cur = self.conn.execute("UPDATE members SET enabled = ? WHERE id = ?", (int(enabled), mid))
            return cur.rowcount == 1

    def set_member_secret(self, mid: str, key_id: str, secret_hash: str) -> None:
        with self.transaction():
            self.conn.execute("UPDATE members SET key_id = ?, secret_hash = ?, secret_set = ? WHERE id = ?",
                              (key_id, secret_hash, utcnow(), mid))

    def set_grant(self, mid: str, cid: str, can_read: bool, can_write: bool) -> None:
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO grants VALUES (?, ?, ?, ?)",
                              (mid, cid, int(can_read), int(can_write)))

    def remove_grant(self, mid: str, cid: str) -> bool:
        with self.transaction():
            cur = self.conn.execute("DELETE FROM grants WHERE member = ? AND collection = ?", (mid, cid))
            return cur.rowcount == 1

    def grants_of(self, mid: str) -> dict[str, tuple[bool, bool]]:
        return {c: (bool(r), bool(w)) for c, r, w in self.conn.execute(
            "SELECT collection, can_read, can_write FROM grants WHERE member = ?", (mid,))}

    def recent_failures(self, address: str, since: str) -> int:
        return self.conn.execute(
            "SELECT COUNT(*) FROM audit WHERE address = ? AND http_status = 401 AND time >= ?",
            (address, since)).fetchone()[0]

    def save_status(self, status: dict, member: str, collection: str | None) -> None:
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO taxii_status VALUES (?, ?, ?, ?, ?)",
                              (status["id"], member, collection, utcnow(), json.dumps(status)))

    def get_status(self, sid: str, member: str) -> dict | None:
        row = self.conn.execute("SELECT json FROM taxii_status WHERE id = ? AND member = ?", (sid, member)).fetchone()
        return json.loads(row[0]) if row else None

    # --- subscribers, digests, deliveries -----------------------------------------------------
    def upsert_subscriber(self, sub: dict) -> bool:
        """Insert or update by e-mail address (lower-cased); the token of an existing one stays."""
        now = utcnow()
        existing = self.conn.execute("SELECT token FROM subscribers WHERE email = ?", (sub["email"],)).fetchone()
        if existing:
            self.conn.execute(
                "UPDATE subscribers SET name = ?, member = ?, frequency = ?, clearance = ?, lang = ?, updated = ?, "
                "unsubscribed = NULL WHERE email = ?",
                (sub["name"], sub["member"], sub["frequency"], sub["clearance"], sub["lang"], now, sub["email"]))
            return False
        self.conn.execute(
            "INSERT INTO subscribers (email, name, member, frequency, clearance, lang, token, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (sub["email"], sub["name"], sub["member"], sub["frequency"], sub["clearance"], sub["lang"],
             "u" + secrets.token_urlsafe(24), now, now))  # never starts with "-": safe as a CLI argument
        return True

    def list_subscribers(self, member: str | None = None, include_unsubscribed: bool = True) -> list[dict]:
        where, args = [], []
        if member:
            where.append("member = ?")
            args.append(member)
        if not include_unsubscribed:
            where.append("unsubscribed IS NULL")
        q = "SELECT * FROM subscribers" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY email"
        return self._rows(q, args)

    def remove_subscriber(self, email: str) -> bool:
        with self.transaction():
            return self.conn.execute("DELETE FROM subscribers WHERE email = ?", (email,)).rowcount == 1

    def unsubscribe(self, token: str) -> str | None:
        with self.transaction():
            row = self.conn.execute("SELECT email FROM subscribers WHERE token = ?", (token,)).fetchone()
            if row:
                self.conn.execute("UPDATE subscribers SET unsubscribed = COALESCE(unsubscribed, ?) WHERE token = ?",
                                  (utcnow(), token))
        return row[0] if row else None

    def subscriber_by_token(self, token: str) -> dict | None:
        rows = self._rows("SELECT * FROM subscribers WHERE token = ?", (token,))
        return rows[0] if rows else None

    def segments(self, frequency: str | None) -> list[dict]:
        """Active subscribers grouped as digests are rendered: member × clearance × language ×
        the time of their last digest."""
        col = f"last_{frequency}" if frequency else "NULL"
        where = "unsubscribed IS NULL" + (" AND frequency = ?" if frequency else "")
        return self._rows(f"SELECT member, clearance, lang, {col} AS since, COUNT(*) AS n FROM subscribers "
                          f"WHERE {where} GROUP BY member, clearance, lang, since ORDER BY member, clearance, lang",
                          (frequency,) if frequency else ())

    def segment_recipients(self, frequency: str | None, member: str, clearance: str, lang: str,
                           since: str | None, after_email: str = "", limit: int = 1000) -> list[dict]:
        col = f"last_{frequency}" if frequency else "NULL"
        q = (f"SELECT email, name, token FROM subscribers WHERE unsubscribed IS NULL AND member = ? AND clearance = ? "
             f"AND lang = ? AND {col} IS ? AND email > ?" + (" AND frequency = ?" if frequency else "")
             + " ORDER BY email LIMIT ?")
        args = [member, clearance, lang, since, after_email] + ([frequency] if frequency else []) + [limit]
        return self._rows(q, args)

    def get_run(self, run_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM digest_runs WHERE id = ?", (run_id,))
        return rows[0] if rows else None

    def create_run(self, run_id: str, kind: str, frequency: str | None, until: str,
                   advisory: str | None = None) -> dict:
        with self.transaction():
            self.conn.execute("INSERT OR IGNORE INTO digest_runs (id, kind, frequency, until, created, advisory) "
                              "VALUES (?, ?, ?, ?, ?, ?)", (run_id, kind, frequency, until, utcnow(), advisory))
        return self.get_run(run_id)

    def finish_run(self, run_id: str) -> None:
        with self.transaction():
            self.conn.execute("UPDATE digest_runs SET finished = ? WHERE id = ?", (utcnow(), run_id))

    def delivery_states(self, run_id: str, emails: list[str]) -> dict[str, dict]:
        out = {}
        for chunk in _chunks(emails, 500):
            for r in self._rows(f"SELECT * FROM deliveries WHERE run = ? AND email IN ({','.join('?' * len(chunk))})",
                                [run_id, *chunk]):
                out[r["email"]] = r
        return out

    def record_delivery(self, run_id: str, email: str, status: str, message_id: str | None,
                        error: str | None = None, frequency: str | None = None, until: str | None = None) -> None:
        """One recipient's outcome, and on success its digest cursor, in one transaction."""
        with self.transaction():
            self.conn.execute(
                "INSERT INTO deliveries (run, email, status, attempts, message_id, last_error, updated) "
                "VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT (run, email) DO UPDATE SET status = excluded.status, "
                "attempts = attempts + 1, message_id = excluded.message_id, last_error = excluded.last_error, "
                "updated = excluded.updated", (run_id, email, status, message_id, error, utcnow()))
            if status == "sent" and frequency:
                self.conn.execute(f"UPDATE subscribers SET last_{frequency} = ? WHERE email = ?", (until, email))

    def delivery_summary(self, run_id: str) -> dict[str, int]:
        return dict(self.conn.execute("SELECT status, COUNT(*) FROM deliveries WHERE run = ? GROUP BY status",
                                      (run_id,)).fetchall())

    def add_alert_period(self, name: str, start: str, end: str, note: str | None) -> None:
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO alert_periods VALUES (?, ?, ?, ?, ?)",
                              (name, start, end, note, utcnow()))

    def list_alert_periods(self) -> list[dict]:
        return self._rows("SELECT * FROM alert_periods ORDER BY start")

    def active_alert_periods(self, at: str) -> list[dict]:
        return self._rows("SELECT * FROM alert_periods WHERE start <= ? AND end > ? ORDER BY start", (at, at))

    def queue_flash(self, advisory: str, period: str) -> bool:
        cur = self.conn.execute("INSERT OR IGNORE INTO flash_queue (advisory, period, queued) VALUES (?, ?, ?)",
                                (advisory, period, utcnow()))
        return cur.rowcount == 1

    def pending_flashes(self) -> list[dict]:
        return self._rows("SELECT * FROM flash_queue WHERE run IS NULL ORDER BY queued")

    def mark_flash(self, advisory: str, run_id: str) -> None:
        with self.transaction():
            self.conn.execute("UPDATE flash_queue SET run = ? WHERE advisory = ?", (run_id, advisory))

    def published_for(self, collections: list[str], max_rank: int, since: str | None, until: str,
                      ids: list[str] | None = None) -> list[dict]:
        """Published (not revoked) advisories in any of the collections, at most TLP `max_rank`,
        whose publication entered them in (since, until]."""
        if not collections:
            return []
        tlps = [t for t in ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")][: max_rank + 1]
        where = [f"m.collection IN ({','.join('?' * len(collections))})", "m.object_id = a.id",
                 "m.date_added <= ?", "a.status = 'published'", f"a.tlp IN ({','.join('?' * len(tlps))})"]
        args = [*collections, until, *tlps]
        if since:
            where.append("m.date_added > ?")
            args.append(since)
        if ids is not None:
            where.append(f"a.id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        q = (f"SELECT DISTINCT a.* FROM advisories a JOIN membership m ON {' AND '.join(where)} "
             "ORDER BY a.published_utc DESC, a.rowid DESC")
        return self._advisory_rows(self.conn.execute(q, args))

    # --- incidents (TLP:RED, kept apart from advisories) ---------------------------------------
    def save_incident(self, inc: dict) -> None:
        self.conn.execute(
            "INSERT INTO incidents (id, status, prefecture, member, created, updated, json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated = excluded.updated, json = excluded.json",
            (inc["id"], inc["status"], inc["prefecture"], inc["member"], inc["created"], utcnow(),
             json.dumps(inc, ensure_ascii=False)))

    def find_incident(self, ref: str) -> dict | None:
        if len(ref.split("--", 1)[-1]) < 6:
            return None
        ids = self._ids_by_prefix("incidents", "incident", ref)
        if len(ids) != 1:
            return None
        return json.loads(self.conn.execute("SELECT json FROM incidents WHERE id = ?", ids).fetchone()[0])

    def list_incidents(self, status: str | None = None, prefecture: str | None = None) -> list[dict]:
        where, args = [], []
        for col, val in (("status", status), ("prefecture", prefecture)):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        q = "SELECT json FROM incidents" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created DESC"
        return [json.loads(js) for (js,) in self.conn.execute(q, args)]

    def _rows(self, q: str, args=()) -> list[dict]:
        return _dicts(self.conn.execute(q, args))

    def _ids_by_prefix(self, table: str, stix_type: str, ref: str) -> list[str]:
        """At most two ids of `table` whose UUID starts with the given part of `ref` (a full STIX id
        or a bare UUID prefix): one means a unique match."""
        key = (ref.split("--", 1)[1] if "--" in ref else ref).lower()
        return [i for (i,) in self.conn.execute(
            f"SELECT id FROM {table} WHERE id >= ? || ? AND id < ? || ? || x'ff' ORDER BY id LIMIT 2",
            (f"{stix_type}--", key, f"{stix_type}--", key))]

    def collections_of(self, advisory_ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for chunk in _chunks(advisory_ids, 500):
            q = (f"SELECT DISTINCT advisory, collection FROM membership WHERE advisory IN "
                 f"({','.join('?' * len(chunk))}) ORDER BY collection")
            for aid, cid in self.conn.execute(q, chunk):
                out.setdefault(aid, []).append(cid)
        return out

    # --- audit ------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target: str | None = None, details: dict | None = None,
              **request) -> None:
        cols = ["time", "actor", "action", "target", "details", *request]
        values = [utcnow(), actor, action, target,
                  json.dumps(details, ensure_ascii=False) if details else None, *request.values()]
        with self.transaction():
            self.conn.execute(f"INSERT INTO audit ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", values)

    def list_audit(self, *, since: str | None = None, actor: str | None = None, action: str | None = None,
                   member: str | None = None, limit: int | None = None) -> list[dict]:
        where, args = [], []
        for col, val in (("actor", actor), ("action", action), ("member", member)):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        if since:
            where.append("time >= ?")
            args.append(since)
        q = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq"
        if limit:
            q = f"SELECT * FROM ({q} DESC LIMIT {int(limit)}) ORDER BY seq"
        rows = self._rows(q, args)
        for r in rows:
            r["details"] = json.loads(r["details"]) if r["details"] else None
        return rows

    def _advisory_rows(self, cur) -> list[dict]:
        rows = []
        for d in _dicts(cur):
            for c in ADVISORY_JSON:
                d[c] = json.loads(d[c]) if d.get(c) is not None else []
            d["medical"] = None if d["medical"] is None else bool(d["medical"])
            rows.append(d)
        return rows

    def find_advisory(self, ref: str) -> dict:
        """By full STIX id or a unique prefix (6+ characters) of its UUID."""
        ref = ref.strip()
        uuid_part = ref.split("--", 1)[1] if "--" in ref else ref
        if len(uuid_part) < 6:
            raise StoreError(f"advisory id {ref!r} is too short: give 6 or more characters of its UUID")
        ids = self._ids_by_prefix("advisories", "report", ref)
        if not ids:
            raise StoreError(f"no advisory {ref!r}")
        if len(ids) > 1:
            raise StoreError(f"advisory id {ref!r} is ambiguous: give more characters")
        return self._advisory_rows(self.conn.execute("SELECT * FROM advisories WHERE id = ?", ids))[0]

    def object_versions(self, oid: str) -> list[dict]:
        return [json.loads(js) for (js,) in self.conn.execute(
            "SELECT json FROM objects WHERE id = ? ORDER BY modified", (oid,))]

    def latest_object(self, oid: str) -> dict | None:
        row = self.conn.execute("SELECT json FROM objects WHERE id = ? ORDER BY modified DESC LIMIT 1",
                                (oid,)).fetchone()
        return json.loads(row[0]) if row else None

    def count(self, table: str) -> int:
        return self.db[table].count


def _dicts(cur) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _timestamp_forms(ts: str) -> list[str]:
    """The spellings one instant may have in stored STIX: microseconds, milliseconds, seconds."""
    base, _, frac = ts.rstrip("Z").partition(".")
    frac = (frac + "000000")[:6]
    forms = [f"{base}.{frac}Z", f"{base}.{frac[:3]}Z"]
    if frac == "000000":
        forms.append(f"{base}Z")
    return forms


def _statements(script: str) -> list[str]:
    """Split a schema script on ';' outside trigger bodies."""
    out, buf = [], []
    for line in script.splitlines():
        buf.append(line)
        text = "\n".join(buf).strip()
        if text.endswith(";") and (not text.upper().startswith("CREATE TRIGGER") or text.upper().endswith("END;")):
            out.append(text)
            buf = []
    return out


def _dump(v) -> str:
    return "[]" if v == [] else json.dumps(v, ensure_ascii=False)


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]
