"""What an operator needs besides the worker: the hub's status (with exit codes for monitoring),
backups taken while everything runs, and restoring one.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ceptoar.core import settings
from ceptoar.core.errors import CeptoarError
from ceptoar.core.model import SYSTEM, stamp
from ceptoar.incidents import contacts
from ceptoar.store import Store, schema

OK, WARNING, CRITICAL = 0, 1, 2
BUSY_WINDOW = timedelta(minutes=2)  # a TAXII request this recent means a server is using the database
NEW_FIELD_DAYS = timedelta(days=14)  # how long `status` names a field first seen in a source's items


@dataclass
class Status:
    level: int = OK
    problems: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    sources: list[dict] = field(default_factory=list)

    def warn(self, text: str, level: int = WARNING) -> None:
        self.problems.append(text)
        self.level = max(self.level, level)


def status(store: Store, backup_max_age: timedelta = timedelta(days=2)) -> Status:
    st = Status()
    version = schema.version_of(store)
    st.facts["database"] = store.where
    st.facts["schema"] = version
    if version != schema.SCHEMA_VERSION:
        st.warn(f"the database has schema {version}, this hub needs {schema.SCHEMA_VERSION}: run `ceptoar init`",
                CRITICAL)
        return st
    if store.path is not None:
        st.facts["database_bytes"] = store.path.stat().st_size
        wal = Path(f"{store.path}-wal")
        st.facts["wal_bytes"] = wal.stat().st_size if wal.exists() else 0
    st.facts["advisories"] = store.count("advisories")
    st.facts["flash_queue"] = len(store.deliveries.pending_flashes())
    st.facts["targeted_queue"] = store.facilities.pending_count()
    st.facts["last_digests"] = [r["id"] + ("" if r["finished"] else " (unfinished)") for r in store.rows(
        "SELECT id, finished FROM digest_runs WHERE kind = 'digest' ORDER BY created DESC LIMIT 3")]
    worker = store.leases.get("worker")
    st.facts["worker"] = (f"running ({worker['holder'].split('|')[0]})"
                          if worker and worker["expires"] > stamp(datetime.now(UTC)) else "not running")
    for where in contacts.placeholders():  # a clinic would be sent to a number nobody answers
        st.warn(f"{where} is still an example value: set the real one (incidents report refuses it)")
    if not settings.current().contacts().get("after_hours"):
        st.warn("contacts.toml has no [after_hours] line: the incident acknowledgement has no number for the night")
    last = store.meta("last_backup")
    st.facts["last_backup"] = last
    if store.dialect == "sqlite" and store.path is not None:
        if not last:
            st.warn("no backup taken yet: `ceptoar backup FILE` (e.g. daily from cron)")
        elif datetime.fromisoformat(last.split(" ")[0].replace("Z", "+00:00")) < datetime.now(UTC) - backup_max_age:
            st.warn(f"the last backup is older than {backup_max_age.days} days ({last})")
    for r in store.sources.list():
        st.sources.append({k: r.get(k) for k in ("id", "enabled", "health", "failures", "last_success", "last_new",
                                                  "next_due", "last_status", "last_error", "warning_count")})
        if not r["enabled"]:
            continue
        if r.get("health") in ("failing", "quiet"):
            st.warn(f"source {r['id']} is {r['health']} since {r.get('health_since') or '?'}"
                    + (f": {r['last_error']}" if r.get("last_error") and r["health"] == "failing" else ""))
        elif r.get("last_status") == "error":
            st.warn(f"source {r['id']}: its last run failed ({r.get('failures') or 1} in a row): {r.get('last_error')}")
        if r.get("warning_count") and r.get("last_status") != "error":
            first = (r.get("last_warnings") or ["?"])[0]
            st.warn(f"source {r['id']}: {r['warning_count']} warning(s) in its last run, the first: {first} "
                    f"(`ceptoar sources show {r['id']}`)")
        recent = stamp(datetime.now(UTC) - NEW_FIELD_DAYS)
        for path, f in sorted((r.get("unknown_fields") or {}).items()):
            if str(f.get("first_seen") or "") >= recent:  # one line per new field, for its first two weeks
                st.warn(f"source {r['id']}: new field {path} ({f.get('count', 0):,} in its last run, first seen "
                        f"{str(f.get('first_seen'))[:10]}): kept in the raw entries, not read by the hub yet")
    return st


def backup(store: Store, target: Path, actor: str = SYSTEM) -> Path:
    """A consistent copy of a SQLite hub while it runs (SQLite's online backup API), checked, private;
    the time and place are kept for `status`."""
    if store.dialect != "sqlite" or store.path is None:
        raise CeptoarError("the hub's backup copies SQLite databases; for PostgreSQL use "
                           "`pg_dump --format=custom` (and pg_restore)")
    target = Path(target)
    if target.exists():
        raise CeptoarError(f"{target} exists: give a new file name (backups are never overwritten)")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    dest = sqlite3.connect(target)
    try:
        store.conn.backup(dest, pages=4096)  # in steps: writers are held up only between them
        if dest.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise CeptoarError(f"the copy {target} failed its integrity check")
        dest.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
    except sqlite3.Error as e:
        dest.close()
        target.unlink(missing_ok=True)
        raise CeptoarError(f"backup to {target} failed: {e}") from None
    dest.close()
    with store.transaction():
        store.execute("INSERT INTO meta (key, value) VALUES ('last_backup', ?) ON CONFLICT (key) DO UPDATE SET "
                      "value = excluded.value", (f"{stamp(datetime.now(UTC))} {target}",))
        store.audit.add(actor, "backup", str(target), {"bytes": target.stat().st_size})
    return target


def in_use(store: Store) -> str | None:
    """Why the hub's database looks in use (a live lease, a recent TAXII request), or None."""
    now = datetime.now(UTC)
    for lease in store.rows("SELECT name, holder, expires FROM leases"):
        if lease["expires"] > stamp(now):
            return f"{lease['name']} is running ({lease['holder'].split('|')[0]})"
    recent = store.scalar("SELECT MAX(time) FROM audit WHERE method IS NOT NULL")
    if recent and recent > stamp(now - BUSY_WINDOW):
        return f"the TAXII server answered a request at {recent[:19]} UTC"
    return None


def restore(db: Path, backup_file: Path, force: bool = False, actor: str = SYSTEM) -> Path | None:
    """Put a backup in place of the database `db`; the database it replaces is kept beside it.
    Refused while the hub looks in use (stop the worker and the TAXII server) unless `force`."""
    backup_file, db = Path(backup_file), Path(db)
    try:
        src = sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)
        version = src.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error as e:
        raise CeptoarError(f"{backup_file} is not a hub database: {e}") from None
    if version is None or int(version[0]) > schema.SCHEMA_VERSION:
        src.close()
        raise CeptoarError(f"{backup_file} is not a backup this hub can restore (schema "
                           f"{version[0] if version else 'unknown'})")
    kept = None
    if db.exists():
        current = Store(db)
        busy = in_use(current) if current.is_initialized() else None
        if busy and not force:
            current.close()
            src.close()
            raise CeptoarError(f"not restoring over a running hub: {busy}. Stop the worker and the TAXII server "
                               "first, or give --force")
        kept = db.with_name(f"{db.name}.before-restore-{datetime.now(UTC):%Y%m%dT%H%M%S}")
        keep = sqlite3.connect(kept)
        try:
            current.conn.backup(keep)
        finally:
            keep.close()
        kept.chmod(0o600)
        current.close()
    dest = sqlite3.connect(db)
    try:
        src.backup(dest)
    finally:
        src.close()
        dest.close()
    db.chmod(0o600)
    restored = Store(db)
    restored.audit.add(actor, "restore", str(backup_file), {"previous": str(kept) if kept else None})
    restored.close()
    return kept
