"""The database schema and its migrations.

A new database gets the current schema at once. An existing one is upgraded by numbered steps,
each with its backfills, all in one transaction after a backup copy; a database written by a newer
hub is refused. `schema_version` in `meta` says where a database stands.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ceptoar.core.errors import StoreError
from ceptoar.core.extensions import hub_objects
from ceptoar.core.model import TLP_ORDER, headline_cvss, marking_definition
from ceptoar.store import legacy
from ceptoar.store.base import statements

if TYPE_CHECKING:
    from ceptoar.store import Store

SCHEMA_VERSION = 22

# Portable tables first (the same statements serve PostgreSQL with its own key columns), then the
# SQLite-only pieces: the trigram search index, its ordering table and the append-only triggers.
TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE sources (
    id TEXT PRIMARY KEY, name TEXT, kind TEXT NOT NULL, url TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1, tlp TEXT NOT NULL DEFAULT 'CLEAR', lang TEXT,
    interval INTEGER, options TEXT NOT NULL DEFAULT '{}', defined_by TEXT,
    etag TEXT, last_modified TEXT, last_fetched TEXT, last_status TEXT, last_error TEXT, last_note TEXT,
    failures INTEGER NOT NULL DEFAULT 0, last_success TEXT, last_new TEXT, health TEXT NOT NULL DEFAULT 'ok',
    health_since TEXT, next_due TEXT, warning_count INTEGER NOT NULL DEFAULT 0, last_warnings TEXT, unknown_fields TEXT
);
CREATE TABLE raw_entries (
    source TEXT NOT NULL, key TEXT NOT NULL, hash TEXT NOT NULL, received TEXT NOT NULL,
    version TEXT, raw TEXT NOT NULL, PRIMARY KEY (source, key)
);
CREATE TABLE followed (
    source TEXT NOT NULL, id TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (source, id)
);
CREATE TABLE objects (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, origin TEXT NOT NULL, modified TEXT NOT NULL, type TEXT NOT NULL,
    hash TEXT NOT NULL, added TEXT NOT NULL, own_rank INTEGER, kept_apart INTEGER NOT NULL DEFAULT 0,
    json TEXT NOT NULL, UNIQUE (id, origin, modified)
);
CREATE TABLE object_owners (id TEXT PRIMARY KEY, origin TEXT NOT NULL, claimed TEXT NOT NULL);
CREATE TABLE advisories (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, entry_key TEXT NOT NULL, source_report TEXT NOT NULL,
    title TEXT, description TEXT, published TEXT, published_utc TEXT, modified TEXT, stix_modified TEXT, url TEXT,
    identifiers TEXT NOT NULL DEFAULT '[]', cves TEXT NOT NULL DEFAULT '[]', cvss TEXT NOT NULL DEFAULT '[]',
    cpes TEXT NOT NULL DEFAULT '[]', max_cvss REAL, source_tlp TEXT NOT NULL, lang TEXT,
    auto_tags TEXT NOT NULL DEFAULT '[]', medical_signals TEXT NOT NULL DEFAULT '[]',
    first_seen TEXT NOT NULL, updated_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'new', analyst_tlp TEXT, severity TEXT, medical INTEGER,
    tags_added TEXT NOT NULL DEFAULT '[]', tags_removed TEXT NOT NULL DEFAULT '[]', notes TEXT NOT NULL DEFAULT '[]',
    decided_at TEXT,
    tlp TEXT NOT NULL, tlp_rank INTEGER NOT NULL, tags TEXT NOT NULL DEFAULT '[]',
    published_version TEXT, published_source TEXT, clinic TEXT NOT NULL DEFAULT '{}', epss REAL,
    epss_percentile REAL
);
CREATE UNIQUE INDEX advisories_entry ON advisories (source, entry_key);
CREATE INDEX advisories_source ON advisories (source, published_utc);
CREATE INDEX advisories_published ON advisories (published_utc);
CREATE INDEX advisories_status ON advisories (status, published_utc);
CREATE TABLE advisory_cves (
    cve TEXT NOT NULL, advisory TEXT NOT NULL, PRIMARY KEY (cve, advisory)
);
CREATE INDEX advisory_cves_advisory ON advisory_cves (advisory);
CREATE TABLE vendors (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, phone TEXT, aliases TEXT NOT NULL DEFAULT '[]',
    clearance TEXT NOT NULL DEFAULT 'GREEN', created TEXT NOT NULL, updated TEXT NOT NULL
);
CREATE TABLE vendor_requests (
    vendor TEXT NOT NULL, advisory TEXT NOT NULL, facility TEXT NOT NULL, n INTEGER NOT NULL, sent TEXT NOT NULL,
    PRIMARY KEY (vendor, advisory, facility, n)
);
CREATE TABLE vendor_answers (
    vendor TEXT NOT NULL, advisory TEXT NOT NULL, facility TEXT NOT NULL, n INTEGER NOT NULL, status TEXT NOT NULL,
    justification TEXT, fix_date TEXT, fixed_version TEXT, note TEXT, time TEXT NOT NULL, actor TEXT NOT NULL,
    via TEXT NOT NULL, reminded TEXT, PRIMARY KEY (vendor, advisory, facility, n)
);
CREATE INDEX vendor_answers_row ON vendor_answers (advisory, facility, n);
CREATE TABLE epss (
    cve TEXT PRIMARY KEY, epss REAL NOT NULL, percentile REAL NOT NULL, score_date TEXT, model TEXT,
    source TEXT NOT NULL, updated TEXT NOT NULL
);
CREATE TABLE collections (
    id TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, title TEXT NOT NULL, description TEXT,
    filter TEXT NOT NULL, origin TEXT, created TEXT NOT NULL, updated TEXT NOT NULL
);
CREATE TABLE publications (
    seq INTEGER PRIMARY KEY, advisory TEXT NOT NULL, version TEXT NOT NULL, source_version TEXT,
    tlp TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0, actor TEXT, published_at TEXT NOT NULL,
    view TEXT NOT NULL, UNIQUE (advisory, version)
);
CREATE TABLE pins (
    advisory TEXT NOT NULL, version TEXT NOT NULL, object_id TEXT NOT NULL, modified TEXT NOT NULL,
    origin TEXT NOT NULL, type TEXT NOT NULL, spec_version TEXT NOT NULL, pin_rank INTEGER NOT NULL,
    tombstone INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (advisory, version, object_id)
);
CREATE INDEX pins_object ON pins (object_id, modified);
CREATE TABLE placements (
    collection TEXT NOT NULL, advisory TEXT NOT NULL, version TEXT NOT NULL, placed TEXT NOT NULL,
    PRIMARY KEY (collection, advisory, version)
);
CREATE INDEX placements_advisory ON placements (advisory, collection);
CREATE TABLE membership (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, collection TEXT NOT NULL, object_id TEXT NOT NULL,
    modified TEXT NOT NULL, origin TEXT NOT NULL, type TEXT NOT NULL, spec_version TEXT NOT NULL DEFAULT '2.1',
    tlp_rank INTEGER NOT NULL, date_added TEXT NOT NULL, newer_rank INTEGER,
    UNIQUE (collection, object_id, modified)
);
CREATE INDEX membership_page ON membership (collection, date_added, seq);
CREATE INDEX membership_object ON membership (collection, object_id, tlp_rank, modified);
CREATE INDEX membership_report ON membership (type, collection, date_added);
CREATE INDEX membership_spec ON membership (collection, spec_version);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, actor TEXT, action TEXT NOT NULL,
    target TEXT, details TEXT, member TEXT, address TEXT, method TEXT, path TEXT, collection TEXT,
    http_status INTEGER, objects INTEGER
);
CREATE INDEX audit_time ON audit (time);
CREATE INDEX audit_failures ON audit (address, http_status, time);
CREATE INDEX audit_member ON audit (member, action, time);
CREATE TABLE members (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, clearance TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1,
    key_id TEXT UNIQUE, secret_hash TEXT, secret_set TEXT, created TEXT NOT NULL,
    collection_titles TEXT NOT NULL DEFAULT 'title', cert_fingerprint TEXT UNIQUE, cert_subject TEXT UNIQUE,
    cert_required INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE grants (
    member TEXT NOT NULL, collection TEXT NOT NULL, can_read INTEGER NOT NULL, can_write INTEGER NOT NULL,
    PRIMARY KEY (member, collection)
);
CREATE TABLE subscribers (
    email TEXT PRIMARY KEY, name TEXT, member TEXT NOT NULL, frequency TEXT NOT NULL, clearance TEXT NOT NULL,
    lang TEXT NOT NULL, token TEXT NOT NULL UNIQUE, created TEXT NOT NULL, updated TEXT NOT NULL,
    unsubscribed TEXT, last_daily TEXT, last_weekly TEXT, facility TEXT
);
CREATE INDEX subscribers_segment ON subscribers (frequency, member, clearance, lang, email);
CREATE TABLE digest_runs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, frequency TEXT, until TEXT NOT NULL, created TEXT NOT NULL,
    advisory TEXT, finished TEXT
);
CREATE TABLE deliveries (
    run TEXT NOT NULL, email TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    message_id TEXT, last_error TEXT, updated TEXT NOT NULL, PRIMARY KEY (run, email)
);
CREATE TABLE alert_periods (
    name TEXT PRIMARY KEY, start TEXT NOT NULL, "end" TEXT NOT NULL, note TEXT, created TEXT NOT NULL
);
CREATE TABLE flash_queue (
    advisory TEXT PRIMARY KEY, period TEXT NOT NULL, queued TEXT NOT NULL, run TEXT
);
CREATE TABLE incidents (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, prefecture TEXT NOT NULL, member TEXT NOT NULL,
    created TEXT NOT NULL, updated TEXT NOT NULL, json TEXT NOT NULL
);
CREATE TABLE leases (
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, what TEXT, acquired TEXT NOT NULL, expires TEXT NOT NULL
);
CREATE TABLE taxii_status (
    id TEXT PRIMARY KEY, member TEXT NOT NULL, collection TEXT, created TEXT NOT NULL, json TEXT NOT NULL
);
CREATE TABLE facilities (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, facility_type TEXT NOT NULL, prefecture TEXT NOT NULL,
    member TEXT NOT NULL, phone TEXT, created TEXT NOT NULL, updated TEXT NOT NULL,
    designations TEXT NOT NULL DEFAULT '[]', municipality TEXT
);
CREATE INDEX facilities_member ON facilities (member);
CREATE TABLE registers (
    facility TEXT NOT NULL, version INTEGER NOT NULL, imported TEXT NOT NULL, actor TEXT, origin TEXT,
    rows TEXT NOT NULL, PRIMARY KEY (facility, version)
);
CREATE TABLE register_rows (
    facility TEXT NOT NULL, n INTEGER NOT NULL, category TEXT NOT NULL, vendor TEXT, product TEXT NOT NULL,
    version TEXT, cpe TEXT, purl TEXT, aliases TEXT, internet_exposed INTEGER NOT NULL DEFAULT 0,
    remote_maintenance INTEGER NOT NULL DEFAULT 0, maintenance_vendor TEXT, note TEXT, device TEXT,
    profile INTEGER, added TEXT, PRIMARY KEY (facility, n)
);
CREATE INDEX register_rows_profile ON register_rows (profile);
CREATE TABLE row_profiles (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, signature TEXT NOT NULL UNIQUE, vendor TEXT, product TEXT NOT NULL,
    version TEXT, cpe TEXT, aliases TEXT, purl TEXT
);
CREATE TABLE profile_keys (
    product_key TEXT NOT NULL, profile INTEGER NOT NULL, PRIMARY KEY (product_key, profile)
);
CREATE INDEX profile_keys_profile ON profile_keys (profile);
CREATE TABLE advisory_products (
    advisory TEXT NOT NULL, product_key TEXT NOT NULL, PRIMARY KEY (advisory, product_key)
);
CREATE INDEX advisory_products_key ON advisory_products (product_key);
CREATE TABLE advisory_affected (
    advisory TEXT PRIMARY KEY, affected TEXT NOT NULL, urgent INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE matches (
    profile INTEGER NOT NULL, advisory TEXT NOT NULL, confidence TEXT NOT NULL, reasons TEXT NOT NULL,
    matched TEXT NOT NULL, PRIMARY KEY (profile, advisory)
);
CREATE INDEX matches_advisory ON matches (advisory);
CREATE TABLE responses (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, facility TEXT NOT NULL, advisory TEXT NOT NULL, status TEXT NOT NULL,
    fixed_on TEXT, note TEXT, time TEXT NOT NULL, actor TEXT, via TEXT
);
CREATE INDEX responses_facility ON responses (facility, advisory, seq);
CREATE TABLE alert_queue (
    advisory TEXT PRIMARY KEY, queued TEXT NOT NULL
);
CREATE TABLE targeted_alerts (
    facility TEXT NOT NULL, advisory TEXT NOT NULL, queued TEXT NOT NULL, run TEXT,
    pre_review INTEGER NOT NULL DEFAULT 0, detail TEXT, sent TEXT,
    PRIMARY KEY (facility, advisory)
);
CREATE INDEX targeted_alerts_sent ON targeted_alerts (facility, sent);
CREATE TABLE alert_corrections (
    facility TEXT NOT NULL, advisory TEXT NOT NULL, what TEXT NOT NULL, detail TEXT, queued TEXT NOT NULL,
    run TEXT, PRIMARY KEY (facility, advisory, queued)
);
"""


# The full-text index (SQLite): FTS5 trigram over title, description and identifiers, keyed not by
# rowid but by `search_key` = (published second << 31) | rowid, so that its own order is newest
# first and a search reads the newest hits and stops (`ORDER BY rowid DESC LIMIT n`). Ingest gives
# it with the row (one write per row); the trigger fills it for rows inserted without it.
_SEARCH_KEY = ("(MAX(COALESCE(CAST(strftime('%s', {published}) AS INTEGER), 0), 0) << 31) "
               "| ({rowid} & 2147483647)")


def search_key(row: str | None) -> str:
    """The search key's SQL for a row (`new`, a table), or with two parameters (published, rowid)."""
    if row is None:
        return _SEARCH_KEY.format(published="?", rowid="?")
    return _SEARCH_KEY.format(published=f"{row}.published_utc", rowid=f"{row}.rowid")


SEARCH_EXTRAS = f"""
ALTER TABLE advisories ADD COLUMN search_key INTEGER;
CREATE INDEX advisories_search_key ON advisories (search_key);
CREATE TRIGGER advisories_search_key AFTER INSERT ON advisories WHEN new.search_key IS NULL BEGIN
    UPDATE advisories SET search_key = {search_key('new')} WHERE rowid = new.rowid;
END;
CREATE VIRTUAL TABLE advisories_fts USING fts5 (
    title, description, identifiers, content='advisories', content_rowid='search_key', tokenize='trigram'
);
CREATE TRIGGER advisories_fts_delete AFTER DELETE ON advisories BEGIN
    INSERT INTO advisories_fts (advisories_fts, rowid, title, description, identifiers)
    VALUES ('delete', old.search_key, old.title, old.description, old.identifiers);
END;
CREATE TRIGGER advisories_fts_update AFTER UPDATE OF title, description, identifiers, published_utc ON advisories
WHEN old.search_key IS NOT NULL AND (old.title IS NOT new.title OR old.description IS NOT new.description
    OR old.identifiers IS NOT new.identifiers OR old.published_utc IS NOT new.published_utc)
BEGIN
    INSERT INTO advisories_fts (advisories_fts, rowid, title, description, identifiers)
    VALUES ('delete', old.search_key, old.title, old.description, old.identifiers);
    UPDATE advisories SET search_key = {search_key('new')} WHERE rowid = new.rowid;
    INSERT INTO advisories_fts (rowid, title, description, identifiers)
    VALUES ({search_key('new')}, new.title, new.description, new.identifiers);
END;
"""

SQLITE_EXTRAS = """
CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
WHEN NOT EXISTS (SELECT 1 FROM meta WHERE key = 'audit_pruning')
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
""" + SEARCH_EXTRAS


# PostgreSQL: the same tables with its own types. Text compares byte by byte (COLLATE "C", as
# SQLite's BINARY) whatever the database's locale, so ids, timestamps and pages order alike on both.
# The tables SQLite orders by rowid get an identity column `seq`. Search is a trigram GIN index
# over each advisory's text, in a table of its own (POSTGRES_SEARCH) that triggers keep: an index on
# advisories itself was rewritten by every decision (publishing 5,000 spent 0.4 s in it); the audit
# log is append-only by a trigger.
def search_text(row: str = "") -> str:
    """The text PostgreSQL's search index holds for an advisory, of `row` (e.g. "NEW.") or the table's:
    lowercased under "C", which folds ASCII letters only, as SQLite's LIKE does (a LIKE on it is a
    byte comparison; ILIKE folded every row's whole text again at each search)."""
    return (f'lower((coalesce({row}title, \'\') || chr(10) || coalesce({row}description, \'\') || chr(10) '
            f'|| {row}identifiers) COLLATE "C")')


# The search row also holds the advisory's place in the newest-first order (published_utc, seq), so
# the newest hits of a word are picked in this table and only they are read from advisories.
POSTGRES_SEARCH = [
    'CREATE TABLE advisory_search (advisory TEXT COLLATE "C" PRIMARY KEY REFERENCES advisories (id) '
    'ON DELETE CASCADE, published_utc TEXT COLLATE "C", seq BIGINT NOT NULL, text TEXT COLLATE "C" NOT NULL)',
    "CREATE FUNCTION ceptoar_search_text() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO advisory_search (advisory, published_utc, seq, text) "
    f"VALUES (NEW.id, NEW.published_utc, NEW.seq, {search_text('NEW.')}) ON CONFLICT (advisory) DO UPDATE "
    "SET published_utc = excluded.published_utc, text = excluded.text; RETURN NULL; END $$",
    "CREATE TRIGGER advisories_search_insert AFTER INSERT ON advisories FOR EACH ROW "
    "EXECUTE FUNCTION ceptoar_search_text()",
    "CREATE TRIGGER advisories_search_update AFTER UPDATE OF title, description, identifiers, published_utc "
    "ON advisories FOR EACH ROW WHEN (OLD.title IS DISTINCT FROM NEW.title "
    "OR OLD.description IS DISTINCT FROM NEW.description OR OLD.identifiers IS DISTINCT FROM NEW.identifiers "
    "OR OLD.published_utc IS DISTINCT FROM NEW.published_utc) EXECUTE FUNCTION ceptoar_search_text()",
    "CREATE INDEX advisory_search_text ON advisory_search USING gin (text gin_trgm_ops)",
    # The newest advisories in order, for a search's first look (and the triage queue's pages).
    "CREATE INDEX advisories_newest ON advisories (published_utc, seq)",
]
POSTGRES_EXTRAS = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "ALTER TABLE advisories ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE",
    "ALTER TABLE pins ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE",
    *POSTGRES_SEARCH,
    "CREATE FUNCTION ceptoar_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM meta WHERE key = 'audit_pruning') THEN RETURN OLD; END IF; "
    "RAISE EXCEPTION USING ERRCODE = 'restrict_violation', MESSAGE = 'the audit log is append-only'; END $$",
    "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit "
    "FOR EACH ROW EXECUTE FUNCTION ceptoar_append_only()",
]


# A membership row's `newer_rank`: the lowest rank among the collection's newer versions of its object
# (NULL: none), so "the latest version a reader at rank r may see" is the visible row with no newer
# version at or below r. Kept by `Membership._apply` for the objects it writes.
NEWER_RANK = ("(SELECT MIN(x.tlp_rank) FROM membership x WHERE x.collection = membership.collection "
              "AND x.object_id = membership.object_id AND x.modified > membership.modified)")


def postgres_types(sql: str) -> str:
    """SQLite's column types in PostgreSQL's words (text compared byte by byte)."""
    sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
    return re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', sql)


def postgres_tables() -> list[str]:
    out = []
    for stmt in statements(TABLES):
        stmt = re.sub(r"seq INTEGER PRIMARY KEY( AUTOINCREMENT)?", "seq BIGINT GENERATED BY DEFAULT AS IDENTITY "
                      "PRIMARY KEY", stmt)
        out.append(postgres_types(stmt).rstrip(";"))
    return out + POSTGRES_EXTRAS


def version_of(store: Store) -> int | None:
    """The schema version of the database, None for an empty one."""
    if "meta" not in store.table_names():
        return None
    value = store.scalar("SELECT value FROM meta WHERE key = 'schema_version'")
    return int(value) if value else 0


def seed(store: Store) -> None:
    """What every database holds from its first day: the `next` signing key, the fixed OASIS
    TLP marking definitions, the hub identity and its extension-definitions, owned by the hub."""

    for key in ("next_key", "response_key"):  # paging cursors; facilities' answer links
        store.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                      (key, secrets.token_hex(32)))
    store.objects.put_hub([marking_definition(t) for t in TLP_ORDER] + hub_objects(), replace=True)


def migrate(store: Store, backup: Callable[[], str | None] | None = None,
            backfills: Mapping[int, Callable[[Store], None]] | None = None) -> tuple[int, int | None, str | None]:
    """Bring the database to SCHEMA_VERSION. Returns (version, previous version, backup path).

    `backfills` is the work a step leaves to the rooms above the store (step 12: every published
    advisory matched again to facilities' registers), run right after that step, in the same
    transaction; without it an upgraded database's matches wait for `ceptoar matches refresh`."""

    current = version_of(store)
    if current is not None and current > SCHEMA_VERSION:
        raise StoreError(f"the database has schema {current}, newer than this hub's {SCHEMA_VERSION}: "
                         "upgrade the hub instead")
    if current == SCHEMA_VERSION:
        with store.transaction():
            seed(store)
        return SCHEMA_VERSION, current, None
    saved = backup() if current is not None and backup else None
    with store.transaction():
        if current is None:
            script = (postgres_tables() if store.dialect == "postgresql"
                      else statements(TABLES) + statements(SQLITE_EXTRAS))
            for stmt in script:
                store.execute(stmt)
        else:
            if current < 6:
                legacy.upgrade_to_6(store)
            for number, step in STEPS:
                if number > max(current, 6):
                    step(store)
                    if backfills and number in backfills:
                        backfills[number](store)
        seed(store)
        store.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                      "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))
    return SCHEMA_VERSION, current, saved


def _step7(store: Store) -> None:
    legacy.trust_model(store, statements(TABLES))


def _step8(store: Store) -> None:
    legacy.hub_extensions(store)
    store.execute("ALTER TABLE members ADD COLUMN collection_titles TEXT NOT NULL DEFAULT 'title'")
    store.execute("ALTER TABLE members ADD COLUMN cert_fingerprint TEXT")
    store.execute("ALTER TABLE members ADD COLUMN cert_subject TEXT")
    store.execute("ALTER TABLE members ADD COLUMN cert_required INTEGER NOT NULL DEFAULT 0")
    store.execute("CREATE UNIQUE INDEX members_cert_fingerprint ON members (cert_fingerprint)")
    store.execute("CREATE UNIQUE INDEX members_cert_subject ON members (cert_subject)")
    store.execute("CREATE INDEX IF NOT EXISTS membership_spec ON membership (collection, spec_version)")
    # STIX 2.0 objects (no spec_version) were recorded as 2.1.
    for table in ("pins", "membership"):
        store.execute(f"UPDATE {table} SET spec_version = '2.0' WHERE spec_version = '2.1' AND EXISTS (SELECT 1 "
                      f"FROM objects o WHERE o.id = {table}.object_id AND o.modified = {table}.modified AND "
                      f"o.origin = {table}.origin AND json_extract(o.json, '$.spec_version') IS NULL AND "
                      "json_extract(o.json, '$.created') IS NOT NULL)")


def _step9(store: Store) -> None:
    """Feed health per source; the audit log prunable only by `audit prune` (archive first)."""
    pg = store.dialect == "postgresql"
    for column in ("failures INTEGER NOT NULL DEFAULT 0", "last_success TEXT", "last_new TEXT",
                   "health TEXT NOT NULL DEFAULT 'ok'", "health_since TEXT", "next_due TEXT"):
        _add_column(store, "sources", column)
    store.execute("UPDATE sources SET last_success = last_fetched WHERE last_status IN ('ok', 'not-modified')")
    store.execute("UPDATE sources SET failures = 1 WHERE last_status = 'error'")
    store.execute("UPDATE sources SET last_new = (SELECT MAX(a.first_seen) FROM advisories a "
                  "WHERE a.source = sources.id)")
    if pg:
        store.execute(next(x for x in POSTGRES_EXTRAS if "FUNCTION" in x).replace("CREATE FUNCTION",
                                                                                  "CREATE OR REPLACE FUNCTION"))
        return
    _recreate_trigger(store, SQLITE_EXTRAS, "audit_append_only_delete")


def _step10(store: Store) -> None:
    """The analyst's plain-language text for clinics (a decision, versioned with the advisory)."""
    _add_column(store, "advisories", "clinic TEXT NOT NULL DEFAULT '{}'")


def _step11(store: Store) -> None:
    """Facilities, their registers and the matches of advisories against them; a subscriber's facility."""
    _create(store, ("facilities", "registers", "register_rows", "advisory_products", "advisory_affected",
                    "responses", "targeted_alerts"))
    _add_column(store, "subscribers", "facility TEXT")


def _create(store: Store, wanted: tuple[str, ...]) -> None:
    """The current definitions of these tables (and their indexes), where missing."""
    for stmt in postgres_tables() if store.dialect == "postgresql" else statements(TABLES):
        m = re.match(r"CREATE (?:UNIQUE )?(?:TABLE|INDEX) (\w+)(?: ON (\w+))?", stmt)
        if m and (m.group(1) in wanted or m.group(2) in wanted):
            store.execute(re.sub(r"^CREATE (UNIQUE )?(TABLE|INDEX) ", r"CREATE \1\2 IF NOT EXISTS ", stmt))


def _add_column(store: Store, table: str, column: str) -> None:
    """`column` ("name TYPE …", SQLite's words) added to a table, in the engine's types."""
    store.execute(f"ALTER TABLE {table} ADD COLUMN "
                  + (postgres_types(column) if store.dialect == "postgresql" else column))


def _recreate_trigger(store: Store, script: str, name: str) -> None:
    """SQLite: a trigger dropped and made again from its current definition in `script`."""
    store.execute(f"DROP TRIGGER {name}")
    for stmt in statements(script):
        if stmt.startswith(f"CREATE TRIGGER {name} "):
            store.execute(stmt)


def _columns(store: Store, table: str) -> set[str]:
    if store.dialect == "postgresql":
        return {c for (c,) in store.execute("SELECT column_name FROM information_schema.columns "
                                            "WHERE table_schema = current_schema() AND table_name = ?", (table,))}
    return {r[1] for r in store.execute(f"PRAGMA table_info({table})")}


def _step12(store: Store) -> None:
    """Matches by profile (rows alike matched once) instead of by facility row; advisories marked
    urgent for targeted alerts, queued as advisories. Every published advisory is matched again."""
    store.execute("DROP TABLE IF EXISTS register_keys")
    if "facility" in _columns(store, "matches"):
        store.execute("DROP TABLE matches")
    have = _columns(store, "register_rows")
    for col, kind in (("profile", "INTEGER"), ("added", "TEXT")):
        if col not in have:
            _add_column(store, "register_rows", f"{col} {kind}")
    if "urgent" not in _columns(store, "advisory_affected"):
        _add_column(store, "advisory_affected", "urgent INTEGER NOT NULL DEFAULT 0")
    _create(store, ("register_rows", "row_profiles", "profile_keys", "matches", "alert_queue"))
    # Then the backfill (ceptoar.facilities.registers.refresh_all, given by `init`): profiles from
    # the rows there are, and every published advisory matched again.


def _step13(store: Store) -> None:
    """SQLite: the full-text index keyed newest first (search_key); the advisory_order table and
    its triggers, which ordered hits before, dropped."""
    if store.dialect != "sqlite":
        return
    for trigger in ("advisory_order_insert", "advisory_order_update", "advisory_order_delete",
                    "advisories_fts_delete", "advisories_fts_update", "advisories_fts_insert"):
        store.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    store.execute("DROP TABLE IF EXISTS advisory_order")
    store.execute("DROP TABLE IF EXISTS advisories_fts")
    for stmt in statements(SEARCH_EXTRAS):
        store.execute(stmt)
    store.execute(f"UPDATE advisories SET search_key = {search_key('advisories')}")
    store.execute("INSERT INTO advisories_fts (advisories_fts) VALUES ('rebuild')")


def _step14(store: Store) -> None:
    """A member's failed logins and submissions found by index (every TAXII request counted them by
    reading the audit log's recent window); SQLite: the search key given with a new row by ingest,
    the trigger only filling it in when absent."""
    _create(store, ("audit",))
    if store.dialect != "sqlite":
        return
    _recreate_trigger(store, SEARCH_EXTRAS, "advisories_search_key")


def _step15(store: Store) -> None:
    """Each served version knows the lowest rank of the collection's newer versions of its object,
    so a page of latest versions needs no subquery per row."""
    if "newer_rank" not in _columns(store, "membership"):
        _add_column(store, "membership", "newer_rank INTEGER")
    store.execute(f"UPDATE membership SET newer_rank = {NEWER_RANK}")


def _step16(store: Store) -> None:
    """The urgent path: a targeted alert knows whether it went before review (and then what it
    matched, and when it was sent, for the pace of urgent mail); corrections of those alerts. A
    source keeps its last run's warnings (how many, the first few)."""
    have = _columns(store, "targeted_alerts")
    for col, kind in (("pre_review", "INTEGER NOT NULL DEFAULT 0"), ("detail", "TEXT"), ("sent", "TEXT")):
        if col not in have:
            _add_column(store, "targeted_alerts", f"{col} {kind}")
    _create(store, ("targeted_alerts", "alert_corrections"))
    have = _columns(store, "sources")
    for col, kind in (("warning_count", "INTEGER NOT NULL DEFAULT 0"), ("last_warnings", "TEXT")):
        if col not in have:
            _add_column(store, "sources", f"{col} {kind}")


def _step17(store: Store) -> None:
    """Schema drift: a source keeps the fields its items carry that their format's schema does not
    name. An advisory ranks by the highest score of the newest CVSS version it has (no longer the
    highest of any version): `max_cvss` of those held, again from their stored scores."""
    if "unknown_fields" not in _columns(store, "sources"):
        _add_column(store, "sources", "unknown_fields TEXT")
    # Register rows are matched by their package URL too: a profile holds it, and the rows that have
    # one are profiled again (by the backfill the setup passes: registers.refresh_all).
    if "purl" not in _columns(store, "row_profiles"):
        _add_column(store, "row_profiles", "purl TEXT")
    store.execute("UPDATE register_rows SET profile = NULL WHERE purl IS NOT NULL")
    changed = []
    for aid, cvss, before in store.execute("SELECT id, cvss, max_cvss FROM advisories").fetchall():
        try:
            head = headline_cvss(cvss if isinstance(cvss, list) else json.loads(cvss or "[]"))
        except ValueError:
            continue
        after = head["score"] if head else None
        if after != before:
            changed.append((after, aid))
    store.executemany("UPDATE advisories SET max_cvss = ? WHERE id = ?", changed)


def _step18(store: Store) -> None:
    """EPSS: each CVE's newest probability of exploitation and percentile (FIRST's daily file), and
    an advisory's highest over its CVEs."""
    _create(store, ("epss",))
    have = _columns(store, "advisories")
    for col in ("epss", "epss_percentile"):
        if col not in have:
            _add_column(store, "advisories", f"{col} REAL")


def _step19(store: Store) -> None:
    """Maintenance vendors (保守業者) as parties, named by the registers' maintenance_vendor, and the
    requests each was sent (one row per advisory and register row it was asked about)."""
    _create(store, ("vendors", "vendor_requests", "vendor_answers"))


def _step20(store: Store) -> None:
    """Facilities' designations (特定機能病院, 基幹インフラ, 特別社会基盤事業者, 自治体立…) and, for a
    municipal hospital, the municipality that owns it: incident obligations follow them."""
    have = _columns(store, "facilities")
    if "designations" not in have:
        _add_column(store, "facilities", "designations TEXT NOT NULL DEFAULT '[]'")
    if "municipality" not in have:
        _add_column(store, "facilities", "municipality TEXT")


def _step21(store: Store) -> None:
    """PostgreSQL: the search text and its trigram index moved out of advisories into a table of their
    own, kept by triggers, so a decision (publishing, a tag) no longer rewrites the index. Step 22
    makes that table in its present shape, from advisories, whatever a database holds before it."""


def _step22(store: Store) -> None:
    """PostgreSQL: the search table made anew (step 21's, or on a database of 20 the expression index
    on advisories, dropped): its text lowercased once, for LIKE, and each row's place in the
    newest-first order beside it; advisories indexed newest first. SQLite's full-text table already
    stands apart."""
    if store.dialect != "postgresql":
        return
    store.execute("DROP INDEX IF EXISTS advisories_search")
    for trigger in ("advisories_search_insert", "advisories_search_update"):
        store.execute(f"DROP TRIGGER IF EXISTS {trigger} ON advisories")
    for index in ("advisory_search_text", "advisories_newest"):
        store.execute(f"DROP INDEX IF EXISTS {index}")
    store.execute("DROP TABLE IF EXISTS advisory_search")
    for stmt in POSTGRES_SEARCH:
        if stmt.startswith("CREATE INDEX advisory_search_text"):
            store.execute("INSERT INTO advisory_search (advisory, published_utc, seq, text) "
                          f"SELECT id, published_utc, seq, {search_text()} FROM advisories")
        store.execute(stmt.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
    store.execute("ANALYZE advisory_search")  # its statistics: the planner picks index or scan by them


STEPS: list[tuple[int, Callable[[Store], None]]] = [(7, _step7), (8, _step8), (9, _step9), (10, _step10),
                                                     (11, _step11), (12, _step12), (13, _step13), (14, _step14),
                                                     (15, _step15), (16, _step16), (17, _step17),
                                                     (18, _step18), (19, _step19), (20, _step20), (21, _step21),
                                                     (22, _step22)]
