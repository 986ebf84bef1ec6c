"""Upgrades of databases written by earlier versions of the hub, frozen as those versions left them.

`upgrade_to_6` brings any pre-7 database to the released schema 6 (what the hub's `init` did then);
`trust_model` is step 7: origins for every object version, facts and decisions apart, pinned
publications, membership derived from them; `hub_extensions` is step 8: the hub's custom properties
as STIX property extensions. Each step only reads what its predecessor wrote.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ceptoar.core import extensions
from ceptoar.core.model import (
    HUB,
    INCIDENT,
    SEVERITY_LABEL,
    TLP_BY_ID,
    TLP_ORDER,
    marking_definition,
    marking_rank,
    serialize,
    source_origin,
    vulnerability_id,
)
from ceptoar.normalize import merge_vulnerability
from ceptoar.store.base import statements

if TYPE_CHECKING:
    from ceptoar.store import Store

# The released schema 6 (commit 85537d9), as its `migrate` created it.
SCHEMA_6 = """
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



def upgrade_to_6(store: Store) -> None:
    for stmt in statements(SCHEMA_6):
        store.execute(stmt)
    for table, column, decl in ADDED_COLUMNS:
        if column not in {r[1] for r in store.execute(f"PRAGMA table_info({table})")}:
            store.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    store.execute("CREATE INDEX IF NOT EXISTS membership_object ON membership "
                  "(collection, object_id, tlp_rank, modified)")
    store.execute("DROP TRIGGER IF EXISTS advisories_fts_insert")


def _origin_of(row: dict, obj: dict, advisory_source: dict[str, str], referenced_by: dict[str, str]) -> str:
    if row["origin"] == "triage":
        return HUB
    if row["origin"] == "incident":
        return INCIDENT
    if obj["type"] == "marking-definition" and obj["id"] in TLP_BY_ID:
        return HUB
    if obj["type"] == "vulnerability" and obj["id"] == vulnerability_id(str(obj.get("name", ""))):
        return HUB
    if obj["type"] == "identity" and "x_ceptoar_source" in obj:
        return HUB
    if obj["id"] in advisory_source:
        return source_origin(advisory_source[obj["id"]])
    if obj["id"] in referenced_by:
        return source_origin(referenced_by[obj["id"]])
    return source_origin(str(obj.get("x_ceptoar_source") or "legacy"))


def trust_model(store: Store, tables: list[str]) -> None:
    """Schema 6 → 7; `tables` are the current schema's statements, whose publications, pins,
    placements and membership tables this step creates."""
    s = store
    s.execute("ALTER TABLE sources RENAME COLUMN origin TO defined_by")
    s.execute("ALTER TABLE sources ADD COLUMN last_note TEXT")
    s.execute("CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, what TEXT, acquired TEXT NOT NULL, "
              "expires TEXT NOT NULL)")

    # --- object versions get their origin ---------------------------------------------------------
    advisory_source = dict(s.execute("SELECT id, source FROM advisories").fetchall())
    old = s.rows("SELECT * FROM objects ORDER BY seq")
    referenced_by: dict[str, str] = {}
    for r in old:
        if r["type"] == "report" and r["origin"] == "source" and r["id"] in advisory_source:
            for ref in json.loads(r["json"]).get("object_refs") or []:
                referenced_by.setdefault(ref, advisory_source[r["id"]])
    s.execute("ALTER TABLE objects RENAME TO objects_6")
    s.execute("""CREATE TABLE objects (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, origin TEXT NOT NULL, modified TEXT NOT NULL, type TEXT NOT NULL,
    hash TEXT NOT NULL, added TEXT NOT NULL, own_rank INTEGER, kept_apart INTEGER NOT NULL DEFAULT 0,
    json TEXT NOT NULL, UNIQUE (id, origin, modified))""")
    rows, origin_of_version = [], {}
    for r in old:
        obj = json.loads(r["json"])
        origin = _origin_of(r, obj, advisory_source, referenced_by)
        origin_of_version[(r["id"], r["modified"])] = origin
        rows.append((r["seq"], r["id"], origin, r["modified"], r["type"], r["hash"], r["added"], marking_rank(obj),
                     0, r["json"]))
    s.executemany("INSERT INTO objects (seq, id, origin, modified, type, hash, added, own_rank, kept_apart, json) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    s.execute("DROP TABLE objects_6")
    s.execute("""CREATE TABLE object_owners (id TEXT PRIMARY KEY, origin TEXT NOT NULL, claimed TEXT NOT NULL)""")
    s.execute("INSERT INTO object_owners (id, origin, claimed) SELECT o.id, o.origin, o.added FROM objects o "
              "WHERE o.seq = (SELECT MIN(x.seq) FROM objects x WHERE x.id = o.id AND x.origin != 'hub') "
              "AND o.id NOT IN (SELECT id FROM objects WHERE origin = 'hub' AND type != 'report')")
    s.execute("INSERT INTO object_owners (id, origin, claimed) SELECT id, 'hub', MIN(added) FROM objects "
              "WHERE origin = 'hub' AND type != 'report' GROUP BY id ON CONFLICT (id) DO NOTHING")

    # --- facts and decisions apart ------------------------------------------------------------------
    for column, decl in [("source_report", "TEXT NOT NULL DEFAULT ''"), ("source_tlp", "TEXT NOT NULL DEFAULT 'CLEAR'"),
                         ("analyst_tlp", "TEXT"), ("tags_added", "TEXT NOT NULL DEFAULT '[]'"),
                         ("tags_removed", "TEXT NOT NULL DEFAULT '[]'"), ("decided_at", "TEXT"),
                         ("tlp_rank", "INTEGER NOT NULL DEFAULT 4")]:
        s.execute(f"ALTER TABLE advisories ADD COLUMN {column} {decl}")
    s.execute("UPDATE advisories SET source_report = id")
    analyst: dict[str, str] = {}
    for target, details in s.execute("SELECT target, details FROM audit WHERE action = 'triage' ORDER BY seq"):
        tlp = (json.loads(details) if details else {}).get("tlp")
        if tlp:
            analyst[target] = tlp
    source_tlp_of = dict(s.execute("SELECT id, tlp FROM sources").fetchall())
    updates = []
    for a in s.rows("SELECT id, source, tlp, tags, auto_tags FROM advisories"):
        latest = s.scalar("SELECT json FROM objects WHERE id = ? AND origin = ? ORDER BY modified DESC LIMIT 1",
                          (a["id"], source_origin(a["source"])))
        marked = marking_rank(json.loads(latest)) if latest else None
        source_tlp = TLP_ORDER[marked] if marked is not None else source_tlp_of.get(a["source"]) or a["tlp"]
        tags, auto = json.loads(a["tags"]), json.loads(a["auto_tags"])
        updates.append((source_tlp, analyst.get(a["id"]), json.dumps([t for t in tags if t not in auto]),
                        json.dumps([t for t in auto if t not in tags]), a["id"]))
    s.executemany("UPDATE advisories SET source_tlp = ?, analyst_tlp = ?, tags_added = ?, tags_removed = ? "
                  "WHERE id = ?", updates)
    s.advisories.refresh_derived([i for (i,) in s.execute("SELECT id FROM advisories").fetchall()])
    s.execute("CREATE UNIQUE INDEX advisories_entry ON advisories (source, entry_key)")

    # --- publications, pins and placements from what was published -----------------------------------
    for stmt in tables:
        if stmt.startswith(("CREATE TABLE publications", "CREATE TABLE pins", "CREATE INDEX pins_",
                            "CREATE TABLE placements", "CREATE INDEX placements_")):
            s.execute(stmt)
    old_members = s.rows("SELECT * FROM membership ORDER BY seq")
    placed_with: dict[tuple[str, str, str], list[dict]] = {}  # (collection, advisory, date_added) → rows
    for m in old_members:
        placed_with.setdefault((m["collection"], m["advisory"], m["date_added"]), []).append(m)
    published_source = dict(s.execute("SELECT id, published_source FROM advisories").fetchall())
    rows_by_advisory = {a["id"]: a for a in s.rows("SELECT * FROM advisories")}
    for v in s.rows("SELECT id, modified, json, added FROM objects WHERE origin = 'hub' AND type = 'report' "
                    "ORDER BY id, modified"):
        a = rows_by_advisory.get(v["id"])
        if a is None:
            continue
        report = json.loads(v["json"])
        rank = marking_rank(report)
        rank = TLP_ORDER.index(a["tlp"]) if rank is None else rank
        view = {k: a[k] for k in ("id", "title", "source", "published", "modified", "url", "lang", "severity",
                                  "medical", "max_cvss")}
        view.update({k: json.loads(a[k]) for k in ("identifiers", "cves", "cvss", "cpes", "tags")})
        view.update(title=report.get("name"), tlp=TLP_ORDER[rank], medical=report.get("x_ceptoar_medical"),
                    severity=report.get("x_ceptoar_severity"), tags=report.get("labels") or [])
        latest = s.scalar("SELECT MAX(modified) FROM objects WHERE origin = 'hub' AND id = ?", (v["id"],))
        s.execute("INSERT INTO publications (advisory, version, source_version, tlp, revoked, actor, published_at, "
                  "view) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  (v["id"], v["modified"], published_source.get(v["id"]) if v["modified"] == latest else None,
                   TLP_ORDER[rank], int(bool(report.get("revoked"))), None, v["added"],
                   json.dumps(view, ensure_ascii=False)))
        pins = {v["id"]: (v["modified"], HUB, "report", report.get("spec_version", "2.1"), rank)}
        for m in old_members:
            if m["advisory"] != v["id"] or m["object_id"] != v["id"] or m["modified"] != v["modified"]:
                continue
            s.execute("INSERT INTO placements (collection, advisory, version, placed) VALUES (?, ?, ?, ?) "
                      "ON CONFLICT DO NOTHING", (m["collection"], v["id"], v["modified"], m["date_added"]))
            for o in placed_with.get((m["collection"], v["id"], m["date_added"]), []):
                if o["object_id"] in pins:
                    continue
                origin = origin_of_version.get((o["object_id"], o["modified"]), HUB)
                text = s.scalar("SELECT json FROM objects WHERE id = ? AND modified = ? AND origin = ?",
                                (o["object_id"], o["modified"], origin))
                own = marking_rank(json.loads(text)) if text else None
                pins[o["object_id"]] = (o["modified"], origin, o["type"] or o["object_id"].split("--")[0],
                                        o["spec_version"] or "2.1", max(rank, own if own is not None else rank))
        s.executemany("INSERT INTO pins (advisory, version, object_id, modified, origin, type, spec_version, "
                      "pin_rank, tombstone) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                      [(v["id"], v["modified"], oid, *p) for oid, p in pins.items()])

    # --- membership, derived; rows that existed keep their date_added and seq (cursors stay valid) ----
    kept = {(m["collection"], m["object_id"], m["modified"]): m for m in old_members}
    s.execute("ALTER TABLE membership RENAME TO membership_6")
    for name in ("membership_page", "membership_advisory", "membership_object"):
        s.execute(f"DROP INDEX IF EXISTS {name}")
    for stmt in tables:
        if stmt.startswith(("CREATE TABLE membership", "CREATE INDEX membership_")):
            s.execute(stmt)
    targets = s.rows(
        "SELECT pl.collection, p.object_id, p.modified, MIN(p.origin) AS origin, MIN(p.type) AS type, "
        "MIN(p.spec_version) AS spec_version, MIN(pl.placed) AS placed, MIN(CASE WHEN p.tombstone = 1 OR "
        "p.pin_rank >= a.tlp_rank THEN p.pin_rank ELSE a.tlp_rank END) AS rank FROM pins p JOIN placements pl "
        "ON pl.advisory = p.advisory AND pl.version = p.version JOIN advisories a ON a.id = p.advisory "
        "GROUP BY pl.collection, p.object_id, p.modified")
    rows = []
    for t in targets:
        before = kept.get((t["collection"], t["object_id"], t["modified"]))
        rows.append((before["seq"] if before else None, t["collection"], t["object_id"], t["modified"], t["origin"],
                     t["type"], t["spec_version"], t["rank"], before["date_added"] if before else t["placed"]))
    rows.sort(key=lambda r: (r[0] is None, r[0] or 0, r[8]))
    s.executemany("INSERT INTO membership (seq, collection, object_id, modified, origin, type, spec_version, "
                  "tlp_rank, date_added) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    s.execute("DROP TABLE membership_6")


def hub_extensions(store: Store) -> None:
    """Step 8: the hub's `x_ceptoar_*` custom properties become its STIX property extensions, in
    place in every stored version (the information is the same; only its encoding changes). Hub
    vulnerabilities also gain what importers read (description, CWE references, OpenCTI's CVSS);
    published reports gain the severity label."""

    rows = store.execute("SELECT id, modified, origin, json FROM objects WHERE json LIKE '%\"x\\_ceptoar\\_%' "
                         "ESCAPE '\\'").fetchall()
    updates = []
    for oid, modified, origin, text in rows:
        obj = json.loads(text)
        new = extensions.converted(obj)
        if origin == HUB and new.get("type") == "vulnerability" and isinstance(new.get("name"), str):
            new = merge_vulnerability(new, {})
        severity = extensions.prop(new, "severity", str) if new.get("type") == "report" else None
        if origin == HUB and severity and SEVERITY_LABEL.format(severity) not in new.get("labels", []):
            new["labels"] = [*new.get("labels", []), SEVERITY_LABEL.format(severity)]
        if new != obj:
            text, h = serialize(new)
            updates.append((text, h, oid, modified, origin))
    store.executemany("UPDATE objects SET json = ?, hash = ? WHERE id = ? AND modified = ? AND origin = ?", updates)

    # Publications go out with the extension-definitions their objects use, and the hub identity
    # that authors them (the definitions themselves are written by `seed`, after the steps).
    clear = marking_definition("CLEAR")
    fixed = {o["id"]: o for o in extensions.hub_objects()} | {clear["id"]: clear | {"modified": clear["created"]}}
    converted_ids = {u[2] for u in updates}
    new_pins = []
    for adv, version, rank in store.execute(
            "SELECT p.advisory, p.version, pn.pin_rank FROM publications p JOIN pins pn ON pn.advisory = p.advisory "
            "AND pn.version = p.version AND pn.object_id = p.advisory WHERE p.revoked = 0").fetchall():
        pinned = store.execute("SELECT p.object_id, o.json FROM pins p JOIN objects o ON o.id = p.object_id AND "
                               "o.modified = p.modified AND o.origin = p.origin WHERE p.advisory = ? AND p.version = ?",
                               (adv, version)).fetchall()
        if not any(oid in converted_ids for oid, _ in pinned):
            continue
        used = {e for _, text in pinned for e in extensions.used(json.loads(text)) if e in fixed}
        have = {oid for oid, _ in pinned}
        for oid in sorted(used) + ([extensions.HUB_IDENTITY, clear["id"]] if used else []):
            if oid not in have:
                new_pins.append((adv, version, oid, fixed[oid]["modified"], HUB, fixed[oid]["type"], "2.1", rank, 0))
    store.executemany("INSERT INTO pins (advisory, version, object_id, modified, origin, type, spec_version, pin_rank, "
                      "tombstone) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", new_pins)
    keys = [(o["id"], o["modified"]) for o in fixed.values()]
    for (collection,) in store.execute("SELECT DISTINCT collection FROM placements").fetchall():
        store.membership.refresh(collection, keys)
