"""Leases: one holder at a time for work that must not run twice (a digest run, the flash queue,
a source's fetch, the worker). In the database, so they hold across processes and machines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ceptoar.store import Repository, utcnow


def _at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Leases(Repository):
    def get(self, name: str) -> dict | None:
        return self.store.row("SELECT * FROM leases WHERE name = ?", (name,))

    def acquire(self, name: str, holder: str, what: str, seconds: float, take_over: bool = False) -> dict | None:
        """Hold `name` for `seconds`: None when done, else the other holder's live lease. `take_over`
        replaces a live lease (its holder is known to be gone)."""
        s = self.store
        with s.transaction():
            current = self.get(name)
            if current and current["holder"] != holder and current["expires"] > utcnow() and not take_over:
                return current
            s.execute("INSERT INTO leases (name, holder, what, acquired, expires) VALUES (?, ?, ?, ?, ?) "
                      "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, what = excluded.what, "
                      "acquired = excluded.acquired, expires = excluded.expires",
                      (name, holder, what, utcnow(), _at(seconds)))
        return None

    def renew(self, name: str, holder: str, seconds: float) -> bool:
        """Extend the lease; False when it is no longer this holder's."""
        with self.store.transaction():
            return self.store.execute("UPDATE leases SET expires = ? WHERE name = ? AND holder = ?",
                                      (_at(seconds), name, holder)).rowcount == 1

    def release(self, name: str, holder: str) -> None:
        with self.store.transaction():
            self.store.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))
