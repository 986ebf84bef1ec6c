"""Subscribers (with opt-outs that stick), digest runs, the delivery log, alert periods and the
flash-alert queue."""

from __future__ import annotations

import secrets

from ceptoar.store.base import Repository, chunks, marks, utcnow


class Subscribers(Repository):
    def upsert(self, sub: dict) -> str:
        """Insert, or update by e-mail address (lower-cased); returns 'added', 'updated' or
        'unsubscribed' (an address that opted out is left alone: only `resubscribe` brings it back).
        The token of an existing subscriber stays."""
        s = self.store
        existing = s.row("SELECT token, unsubscribed FROM subscribers WHERE email = ?", (sub["email"],))
        now = utcnow()
        if existing and existing["unsubscribed"]:
            return "unsubscribed"
        if existing:
            s.execute("UPDATE subscribers SET name = ?, member = ?, frequency = ?, clearance = ?, lang = ?, "
                      "facility = ?, updated = ? WHERE email = ?",
                      (sub["name"], sub["member"], sub["frequency"], sub["clearance"], sub["lang"], sub.get("facility"),
                       now, sub["email"]))
            return "updated"
        s.execute("INSERT INTO subscribers (email, name, member, frequency, clearance, lang, facility, token, created, "
                  "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (sub["email"], sub["name"], sub["member"], sub["frequency"], sub["clearance"], sub["lang"],
                   sub.get("facility"), "u" + secrets.token_urlsafe(24), now, now))  # never starts with "-"
        return "added"

    def get(self, email: str) -> dict | None:
        return self.store.row("SELECT * FROM subscribers WHERE email = ?", (email,))

    def list(self, member: str | None = None, include_unsubscribed: bool = True) -> list[dict]:
        where, args = [], []
        if member:
            where.append("member = ?")
            args.append(member)
        if not include_unsubscribed:
            where.append("unsubscribed IS NULL")
        q = "SELECT * FROM subscribers" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY email"
        return self.store.rows(q, args)

    def remove(self, email: str) -> bool:
        with self.store.transaction():
            return self.store.execute("DELETE FROM subscribers WHERE email = ?", (email,)).rowcount == 1

    def unsubscribe(self, token: str) -> str | None:
        s = self.store
        with s.transaction():
            email = s.scalar("SELECT email FROM subscribers WHERE token = ?", (token,))
            if email:
                s.execute("UPDATE subscribers SET unsubscribed = COALESCE(unsubscribed, ?) WHERE token = ?",
                          (utcnow(), token))
        return email

    def resubscribe(self, email: str) -> bool:
        """Undo an opt-out (only on the subscriber's own request)."""
        with self.store.transaction():
            return self.store.execute("UPDATE subscribers SET unsubscribed = NULL, updated = ? WHERE email = ? "
                                      "AND unsubscribed IS NOT NULL", (utcnow(), email)).rowcount == 1

    def by_token(self, token: str) -> dict | None:
        return self.store.row("SELECT * FROM subscribers WHERE token = ?", (token,))

    def segments(self, frequency: str | None, facility: str | None = None) -> list[dict]:
        """Active subscribers grouped as digests are rendered: member × clearance × language ×
        the time of their last digest (a flash alert: everyone, or one facility's staff)."""
        where = "unsubscribed IS NULL" + (" AND frequency = ?" if frequency else "")
        if not frequency:  # a flash alert: no cursor
            where += " AND facility = ?" if facility else ""
            return self.store.rows(
                f"SELECT member, clearance, lang, NULL AS since, COUNT(*) AS n FROM subscribers WHERE {where} "
                "GROUP BY member, clearance, lang ORDER BY member, clearance, lang", (facility,) if facility else ())
        col = f"last_{frequency}"
        return self.store.rows(
            f"SELECT member, clearance, lang, {col} AS since, COUNT(*) AS n FROM subscribers "
            f"WHERE {where} GROUP BY member, clearance, lang, {col} ORDER BY member, clearance, lang", (frequency,))

    def recipients(self, frequency: str | None, member: str, clearance: str, lang: str,
                   since: str | None, after: tuple[str, str] = ("", ""), limit: int = 1000,
                   facility: str | None = None) -> list[dict]:
        """One page of a segment's recipients, by facility then address (a facility's staff come
        together, so its block is rendered once and let go), after the (facility, email) cursor."""
        col = f"last_{frequency}" if frequency else "NULL"
        cursor = f"{col} IS NULL" if since is None else f"{col} = ?"
        q = ("SELECT email, name, token, facility FROM subscribers WHERE unsubscribed IS NULL AND member = ? "
             f"AND clearance = ? AND lang = ? AND {cursor} AND (COALESCE(facility, ''), email) > (?, ?)"
             + (" AND frequency = ?" if frequency else "") + (" AND facility = ?" if facility else "")
             + " ORDER BY COALESCE(facility, ''), email LIMIT ?")
        args = ([member, clearance, lang] + ([] if since is None else [since]) + list(after)
                + ([frequency] if frequency else []) + ([facility] if facility else []) + [limit])
        return self.store.rows(q, args)


class Deliveries(Repository):
    """Digest runs, the per-recipient delivery log, alert periods and the flash queue."""

    def get_run(self, run_id: str) -> dict | None:
        return self.store.row("SELECT * FROM digest_runs WHERE id = ?", (run_id,))

    def create_run(self, run_id: str, kind: str, frequency: str | None, until: str,
                   advisory: str | None = None) -> dict:
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO digest_runs (id, kind, frequency, until, created, advisory) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING", (run_id, kind, frequency, until, utcnow(), advisory))
        return self.get_run(run_id)

    def finish_run(self, run_id: str) -> None:
        with self.store.transaction():
            self.store.execute("UPDATE digest_runs SET finished = ? WHERE id = ?", (utcnow(), run_id))

    def states(self, run_id: str, emails: list[str]) -> dict[str, dict]:
        out = {}
        for chunk in chunks(emails):
            for r in self.store.rows(f"SELECT * FROM deliveries WHERE run = ? AND email IN ({marks(len(chunk))})",
                                     [run_id, *chunk]):
                out[r["email"]] = r
        return out

    def record(self, run_id: str, email: str, status: str, message_id: str | None, error: str | None = None,
               frequency: str | None = None, until: str | None = None) -> None:
        """One recipient's outcome, and on success its digest cursor, in one transaction."""
        self.record_many([(run_id, email, status, message_id, error, frequency, until)])

    def record_many(self, outcomes: list[tuple]) -> None:
        """Recipients' outcomes (run, email, status, message_id, error, frequency, until), and the
        digest cursors of those sent, in one transaction."""
        if not outcomes:
            return
        s, now = self.store, utcnow()
        with s.transaction():
            s.executemany(
                "INSERT INTO deliveries (run, email, status, attempts, message_id, last_error, updated) "
                "VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT (run, email) DO UPDATE SET status = excluded.status, "
                "attempts = deliveries.attempts + 1, message_id = excluded.message_id, "
                "last_error = excluded.last_error, updated = excluded.updated",
                [(run, email, status, mid, error, now) for run, email, status, mid, error, _f, _u in outcomes])
            for frequency in {f for *_, f, _u in outcomes if f}:
                s.executemany(f"UPDATE subscribers SET last_{frequency} = ? WHERE email = ?",
                              [(until, email) for _r, email, status, _m, _e, f, until in outcomes
                               if status == "sent" and f == frequency])

    def summary(self, run_id: str) -> dict[str, int]:
        return dict(self.store.execute("SELECT status, COUNT(*) FROM deliveries WHERE run = ? GROUP BY status",
                                       (run_id,)).fetchall())

    # --- alert periods and flash alerts ------------------------------------------------------------
    def add_alert_period(self, name: str, start: str, end: str, note: str | None) -> None:
        with self.store.transaction():
            self.store.execute(
                'INSERT INTO alert_periods (name, start, "end", note, created) VALUES (?, ?, ?, ?, ?) '
                'ON CONFLICT (name) DO UPDATE SET start = excluded.start, "end" = excluded."end", note = excluded.note',
                (name, start, end, note, utcnow()))

    def alert_periods(self) -> list[dict]:
        return self.store.rows("SELECT * FROM alert_periods ORDER BY start")

    def active_alert_periods(self, at: str) -> list[dict]:
        return self.store.rows('SELECT * FROM alert_periods WHERE start <= ? AND "end" > ? ORDER BY start', (at, at))

    def queue_flash(self, advisory: str, period: str) -> bool:
        return self.store.execute("INSERT INTO flash_queue (advisory, period, queued) VALUES (?, ?, ?) "
                                  "ON CONFLICT DO NOTHING", (advisory, period, utcnow())).rowcount == 1

    def pending_flashes(self) -> list[dict]:
        return self.store.rows("SELECT * FROM flash_queue WHERE run IS NULL ORDER BY queued")

    def mark_flash(self, advisory: str, run_id: str) -> None:
        with self.store.transaction():
            self.store.execute("UPDATE flash_queue SET run = ? WHERE advisory = ?", (run_id, advisory))
