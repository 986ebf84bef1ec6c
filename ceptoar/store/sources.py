"""Sources: the catalogue, each source's fetch state, its raw entries and followed index entries."""

from __future__ import annotations

import json

from ceptoar.store.base import Repository, chunks, marks, utcnow

FIELDS = ("id", "name", "kind", "url", "enabled", "tlp", "lang", "interval", "options", "defined_by")
RAW_SPILL = 4 << 20  # characters of a raw entry whose write spills its pages at once (write_raw)
FIELDS_KEPT = 200  # unknown field paths kept per source (a hostile feed could name millions)
WARNINGS_KEPT = 10  # of a run's warnings, the first this many are kept with their count


class Sources(Repository):
    def upsert(self, src: dict, *, keep_enabled: bool = True) -> bool:
        """Insert or update a source definition; fetch state, and the enabled flag the operator
        set, survive a reload of the catalogue. Returns True when the source is new."""
        row = {k: src.get(k) for k in FIELDS if k in src}
        row["options"] = json.dumps(src.get("options") or {}, ensure_ascii=False, sort_keys=True)
        s = self.store
        with s.transaction():
            if self.get(row["id"]) is None:
                s.execute(f"INSERT INTO sources ({', '.join(row)}) VALUES ({marks(len(row))})", list(row.values()))
                return True
            if keep_enabled:
                row.pop("enabled", None)
            cols = [k for k in row if k != "id"]
            s.execute(f"UPDATE sources SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",
                      [row[k] for k in cols] + [row["id"]])
            return False

    @staticmethod
    def _row(d: dict) -> dict:
        d["options"] = json.loads(d.get("options") or "{}")
        d["last_warnings"] = json.loads(d.get("last_warnings") or "[]")
        d["unknown_fields"] = json.loads(d.get("unknown_fields") or "{}")
        d["enabled"] = bool(d["enabled"])
        return d

    def get(self, source_id: str) -> dict | None:
        r = self.store.row("SELECT * FROM sources WHERE id = ?", (source_id,))
        return self._row(r) if r else None

    def list(self) -> list[dict]:
        return [self._row(r) for r in self.store.rows("SELECT * FROM sources ORDER BY id")]

    def set_enabled(self, source_id: str, enabled: bool) -> bool:
        with self.store.transaction():
            return self.store.execute("UPDATE sources SET enabled = ? WHERE id = ?",
                                      (int(enabled), source_id)).rowcount == 1

    def note_fields(self, source_id: str, seen: dict[str, int]) -> list[str]:
        """Field paths a run's items carried that their format's schema does not name, with how often:
        kept per path as {count (its last run), total, first_seen, last_seen, told}. Returns the paths
        seen for the first time."""
        if not seen:
            return []
        s, now = self.store, utcnow()
        with s.transaction():
            held = json.loads(s.scalar("SELECT unknown_fields FROM sources WHERE id = ?", (source_id,)) or "{}")
            new = []
            for path, n in seen.items():
                if path not in held:
                    if len(held) >= FIELDS_KEPT:
                        continue
                    new.append(path)
                f = held.get(path) or {"total": 0, "first_seen": now, "told": False}
                held[path] = f | {"count": n, "total": f["total"] + n, "last_seen": now}
            s.execute("UPDATE sources SET unknown_fields = ? WHERE id = ?", (json.dumps(held, ensure_ascii=False),
                                                                             source_id))
        return new

    def fields_told(self, source_id: str, paths: list[str]) -> None:
        """The operator has been told of these new fields (once each)."""
        s = self.store
        with s.transaction():
            held = json.loads(s.scalar("SELECT unknown_fields FROM sources WHERE id = ?", (source_id,)) or "{}")
            for p in paths:
                if p in held:
                    held[p]["told"] = True
            s.execute("UPDATE sources SET unknown_fields = ? WHERE id = ?", (json.dumps(held, ensure_ascii=False),
                                                                             source_id))

    def record_fetch(self, source_id: str, status: str, error: str | None = None,
                     etag: str | None = None, last_modified: str | None = None, note: str | None = None,
                     changed: bool = False, warnings: list[str] | None = None) -> None:
        """Fetch outcome; ETag/Last-Modified only move forward on success. `note`: what the operator
        should know of a successful run (items skipped, a run cut short); `changed`: it brought new
        or updated entries; `warnings`: the run's, of which the count and the first WARNINGS_KEPT
        are kept. Consecutive failures and the last success feed the source's health."""
        s = self.store
        now = utcnow()
        with s.transaction():
            s.execute("UPDATE sources SET warning_count = ?, last_warnings = ? WHERE id = ?",
                      (len(warnings or []), json.dumps((warnings or [])[:WARNINGS_KEPT], ensure_ascii=False),
                       source_id))
            if status == "not-modified":
                s.execute("UPDATE sources SET last_fetched = ?, last_status = ?, last_error = NULL, last_note = NULL, "
                          "failures = 0, last_success = ? WHERE id = ?", (now, status, now, source_id))
            elif status == "ok":
                s.execute("UPDATE sources SET last_fetched = ?, last_status = ?, last_error = NULL, etag = ?, "
                          "last_modified = ?, last_note = ?, failures = 0, last_success = ? WHERE id = ?",
                          (now, status, etag, last_modified, note, now, source_id))
            else:
                s.execute("UPDATE sources SET last_fetched = ?, last_status = ?, last_error = ?, "
                          "failures = failures + 1 WHERE id = ?", (now, status, error, source_id))
            if changed:
                s.execute("UPDATE sources SET last_new = ? WHERE id = ?", (now, source_id))

    def schedule(self, source_id: str, next_due: str) -> None:
        with self.store.transaction():
            self.store.execute("UPDATE sources SET next_due = ? WHERE id = ?", (next_due, source_id))

    def set_health(self, source_id: str, health: str, since: str) -> None:
        with self.store.transaction():
            self.store.execute("UPDATE sources SET health = ?, health_since = ? WHERE id = ?",
                               (health, since, source_id))

    def first_seen_days(self, source_id: str, limit: int = 60) -> list[str]:
        """The days (UTC) on which the source's newest advisories first arrived, newest first."""
        return [r[0] for r in self.store.execute(
            "SELECT DISTINCT substr(first_seen, 1, 10) AS day FROM advisories WHERE source = ? "
            "ORDER BY day DESC LIMIT ?", (source_id, limit))]

    # --- raw entries and followed index entries ----------------------------------------------------
    def raw_versions(self, source_id: str, keys: list[str]) -> dict[str, tuple[str, str | None]]:
        """key → (hash, version) of the raw entries already held for a source."""
        out = {}
        for chunk in chunks(keys):
            for k, h, v in self.store.execute(
                    f"SELECT key, hash, version FROM raw_entries WHERE source = ? AND key IN ({marks(len(chunk))})",
                    [source_id, *chunk]):
                out[k] = (h, v)
        return out

    def raw_held(self, source_id: str, limit: int = 500_000) -> dict[str, tuple[str, str | None]] | None:
        """hash → (key, version) of every raw entry held for a source; None when it has more than
        `limit` (held in memory for one ingest: about 300 bytes each)."""
        if self.store.scalar("SELECT COUNT(*) FROM raw_entries WHERE source = ?", (source_id,)) > limit:
            return None
        return {h: (k, v) for k, h, v in self.store.execute(
            "SELECT key, hash, version FROM raw_entries WHERE source = ?", (source_id,))}

    def write_raw(self, rows: list[tuple]) -> None:
        """(source, key, hash, version, raw) rows: the entry as last received, with the version its
        source gave it (the stored report's may be later, when its content changed at the same one)."""
        now = utcnow()
        # A raw entry of tens of megabytes (a bundle's) is written as overflow pages, which SQLite would
        # keep in its page cache to the end of the transaction: a small cache for that statement lets
        # them spill to the write-ahead log instead.
        spill = self.store.dialect == "sqlite" and any(len(r[4]) > RAW_SPILL for r in rows)
        if spill:
            cache = self.store.scalar("PRAGMA cache_size")
            self.store.execute("PRAGMA cache_size = -2048")
        try:
            self.store.executemany(
                "INSERT INTO raw_entries (source, key, hash, received, version, raw) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (source, key) DO UPDATE SET hash = excluded.hash, received = excluded.received, "
                "version = excluded.version, raw = excluded.raw",
                [(s, k, h, now, v, raw) for s, k, h, v, raw in rows])
        finally:
            if spill:
                self.store.execute(f"PRAGMA cache_size = {int(cache)}")

    def followed(self, source_id: str) -> dict[str, str]:
        """id → `updated` of the index entries (ROLIE, TAXII cursors) already followed for a source."""
        return dict(self.store.execute("SELECT id, updated FROM followed WHERE source = ?", (source_id,)).fetchall())

    def mark_followed(self, source_id: str, items: list[tuple[str, str]]) -> None:
        self.store.executemany(
            "INSERT INTO followed (source, id, updated) VALUES (?, ?, ?) "
            "ON CONFLICT (source, id) DO UPDATE SET updated = excluded.updated",
            [(source_id, i, u) for i, u in items])

    def raw_entries(self, source_id: str, size: int = 1000):
        """(key, raw) of every raw entry held for a source, in batches."""
        yield from self.store.stream("SELECT key, raw FROM raw_entries WHERE source = ? ORDER BY key", size,
                                     (source_id,))
