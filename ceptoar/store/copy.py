"""Copying a whole hub from one store to another (SQLite → PostgreSQL, or back), counts verified.

The target must be empty (a new database, or one with nothing but the seeds `init` writes). Tables
are copied in insertion order (so PostgreSQL's identity columns follow SQLite's rowids), in one
transaction: a failure leaves the target as empty as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ceptoar.core.errors import StoreError
from ceptoar.store import Store, schema
from ceptoar.store.base import statements

BATCH = 2000
# What `init` puts in a new database; anything else in the target means it is in use.
SEEDED = {"meta", "objects", "object_owners"}


def tables() -> list[tuple[str, list[str]]]:
    """(table, columns) of the portable schema, in creation order."""
    out = []
    for stmt in statements(schema.TABLES):
        m = re.match(r"CREATE TABLE (\w+) \((.*)\);$", stmt, re.S)
        if not m:
            continue
        parts, depth, buf = [], 0, ""
        for ch in m.group(2):
            depth += (ch == "(") - (ch == ")")
            if ch == "," and depth == 0:
                parts.append(buf)
                buf = ""
            else:
                buf += ch
        parts.append(buf)
        names = [part.split()[0].strip('"') for part in parts if part.strip()]
        out.append((m.group(1), [n for n in names if n.upper() not in ("PRIMARY", "UNIQUE")]))
    return out


def _order(store: Store, table: str, cols: list[str]) -> str:
    if "seq" in cols:
        return "seq"
    if table in ("advisories", "pins"):
        return store.engine.rowid
    return ", ".join(f'"{c}"' for c in cols[:3])


def copy_store(src: Store, dst: Store, progress: Callable[[str, int], None] | None = None,
               actor: str = "ceptoar") -> dict[str, int]:
    """Copy every table of `src` into the empty `dst`; table → rows copied (equal on both sides)."""
    src.require_initialized()
    dst.migrate()
    in_use = [t for t, _ in tables() if t not in SEEDED and dst.count(t)]
    if in_use:
        raise StoreError(f"the target {dst.where} already holds a hub ({', '.join(in_use[:4])}…): "
                         "copy into a new, empty database")
    counts: dict[str, int] = {}
    with dst.transaction():
        for table, cols in tables():
            if table in SEEDED:
                dst.execute(f"DELETE FROM {table}")
            quoted = ", ".join(f'"{c}"' for c in cols)
            insert = f"INSERT INTO {table} ({quoted}) VALUES ({', '.join('?' * len(cols))})"
            done = 0
            for batch in src.stream(f"SELECT {quoted} FROM {table} ORDER BY {_order(src, table, cols)}", BATCH):
                dst.executemany(insert, batch)
                done += len(batch)
                if progress:
                    progress(table, done)
            counts[table] = done
        dst.after_copy()
        theirs = {t: dst.count(t) for t in counts}
        wrong = {t: (counts[t], theirs[t]) for t in counts if counts[t] != theirs[t] or src.count(t) != counts[t]}
        if wrong:
            raise StoreError("the copy does not match its source (nothing was kept): "
                             + ", ".join(f"{t} {a} → {b}" for t, (a, b) in wrong.items()))
        dst.audit.add(actor, "store-copied", dst.where, {"from": src.where, "rows": sum(counts.values())})
    return counts
