"""Maintenance vendors (保守業者): the companies that maintain facilities' systems, as parties."""

from __future__ import annotations

import json

from ceptoar.store.base import Repository, utcnow

COLUMNS = ("id", "name", "email", "phone", "aliases", "clearance", "created", "updated")


class Vendors(Repository):
    def upsert(self, v: dict) -> bool:
        """Add or redefine a vendor; True when it was new (its clearance is kept on a redefinition)."""
        now, new = utcnow(), self.get(v["id"]) is None
        self.store.execute(
            "INSERT INTO vendors (id, name, email, phone, aliases, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email, phone = excluded.phone, "
            "aliases = excluded.aliases, updated = excluded.updated",
            (v["id"], v["name"], v["email"], v.get("phone"), json.dumps(v.get("aliases") or [], ensure_ascii=False),
             now, now))
        return new

    @staticmethod
    def _row(r: dict) -> dict:
        r["aliases"] = json.loads(r.get("aliases") or "[]")
        return r

    def get(self, vid: str) -> dict | None:
        r = self.store.row(f"SELECT {', '.join(COLUMNS)} FROM vendors WHERE id = ?", (vid,))
        return self._row(r) if r else None

    def list(self) -> list[dict]:
        return [self._row(r) for r in self.store.rows(f"SELECT {', '.join(COLUMNS)} FROM vendors ORDER BY id")]

    def remove(self, vid: str) -> bool:
        return self.store.execute("DELETE FROM vendors WHERE id = ?", (vid,)).rowcount == 1

    def maintained_matches(self) -> list[dict]:
        """Every match of a published advisory on a register row that names a maintenance vendor:
        facility, its name and prefecture, the row (n, category, vendor, product, version,
        maintenance_vendor), the advisory, its title, TLP and CVEs."""
        return self.store.rows(
            "SELECT r.facility, f.name AS facility_name, f.prefecture, r.n, r.category, r.vendor, r.product, "
            "r.version, r.maintenance_vendor, m.advisory, a.title, a.tlp, a.cves, a.severity, a.max_cvss "
            "FROM register_rows r JOIN matches m ON m.profile = r.profile JOIN facilities f ON f.id = r.facility "
            "JOIN advisories a ON a.id = m.advisory "
            "WHERE r.maintenance_vendor IS NOT NULL AND r.maintenance_vendor <> '' AND a.status = 'published' "
            "ORDER BY m.advisory, r.facility, r.n")

    def requested(self) -> set[tuple[str, str, str, int]]:
        return {tuple(r) for r in self.store.execute("SELECT vendor, advisory, facility, n FROM vendor_requests")}

    def record_requests(self, rows: list[tuple[str, str, str, int]]) -> None:
        now = utcnow()
        self.store.executemany("INSERT INTO vendor_requests (vendor, advisory, facility, n, sent) "
                               "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", [(*r, now) for r in rows])

    def requested_rows(self, vid: str, advisory: str) -> list[dict]:
        """The register rows this vendor was asked about for this advisory (they may have changed since)."""
        return self.store.rows(
            "SELECT q.facility, q.n, r.vendor, r.product, r.version, r.category, f.name AS facility_name, "
            "f.prefecture FROM vendor_requests q "
            "LEFT JOIN register_rows r ON r.facility = q.facility AND r.n = q.n "
            "LEFT JOIN facilities f ON f.id = q.facility "
            "WHERE q.vendor = ? AND q.advisory = ? ORDER BY q.facility, q.n", (vid, advisory))

    def put_answers(self, rows: list[dict]) -> None:
        """The vendor's answer for each row (the newest stands; every answer is in the audit log)."""
        self.store.executemany(
            "INSERT INTO vendor_answers (vendor, advisory, facility, n, status, justification, fix_date, "
            "fixed_version, note, time, actor, via) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (vendor, advisory, facility, n) DO UPDATE SET status = excluded.status, "
            "justification = excluded.justification, fix_date = excluded.fix_date, "
            "fixed_version = excluded.fixed_version, note = excluded.note, time = excluded.time, "
            "actor = excluded.actor, via = excluded.via",
            [(r["vendor"], r["advisory"], r["facility"], r["n"], r["status"], r.get("justification"), r.get("fix_date"),
              r.get("fixed_version"), r.get("note"), r["time"], r["actor"], r["via"]) for r in rows])

    def answers_of(self, vid: str, advisory: str) -> dict[tuple[str, int], dict]:
        """(facility, row) → this vendor's answer for that row of one advisory."""
        return {(r["facility"], r["n"]): r for r in self.store.rows(
            "SELECT * FROM vendor_answers WHERE vendor = ? AND advisory = ?", (vid, advisory))}

    def answers_at(self, facility: str, advisory: str) -> list[dict]:
        """Every vendor's answer for the rows of one facility about one advisory."""
        return self.store.rows("SELECT * FROM vendor_answers WHERE facility = ? AND advisory = ? ORDER BY n, vendor",
                               (facility, advisory))

    def answers(self) -> dict[tuple[str, str, int], dict]:
        """(advisory, facility, row) → the newest vendor answer for it."""
        out: dict[tuple[str, str, int], dict] = {}
        for r in self.store.rows("SELECT * FROM vendor_answers ORDER BY time"):
            out[(r["advisory"], r["facility"], r["n"])] = r
        return out

    def request_summary(self, today: str) -> list[dict]:
        """Per vendor and advisory: rows asked about, answered, still open, the oldest open request and
        planned fixes whose date has passed."""
        return self.store.rows(
            "SELECT q.vendor, q.advisory, COUNT(*) AS rows, COUNT(a.status) AS answered, "
            "COUNT(*) - COUNT(a.status) AS open, MIN(CASE WHEN a.status IS NULL THEN q.sent END) AS oldest_open, "
            "SUM(CASE WHEN a.status = 'affected' AND a.fix_date < ? THEN 1 ELSE 0 END) AS overdue_fixes "
            "FROM vendor_requests q LEFT JOIN vendor_answers a ON a.vendor = q.vendor AND a.advisory = q.advisory "
            "AND a.facility = q.facility AND a.n = q.n GROUP BY q.vendor, q.advisory ORDER BY q.vendor, q.advisory",
            (today,))

    def overdue_fixes(self, today: str) -> list[dict]:
        """Answers `affected` whose planned fix date has passed and whose vendor was not reminded since."""
        return self.store.rows(
            "SELECT a.vendor, a.advisory, a.facility, a.n, a.fix_date, d.title, d.tlp, r.vendor AS maker, r.product, "
            "r.version FROM vendor_answers a JOIN advisories d ON d.id = a.advisory "
            "LEFT JOIN register_rows r ON r.facility = a.facility AND r.n = a.n "
            "WHERE a.status = 'affected' AND a.fix_date IS NOT NULL AND a.fix_date < ? "
            "AND (a.reminded IS NULL OR a.reminded < a.time) ORDER BY a.vendor, a.advisory, a.facility, a.n",
            (today,))

    def mark_reminded(self, rows: list[tuple[str, str, str, int]]) -> None:
        now = utcnow()
        self.store.executemany("UPDATE vendor_answers SET reminded = ? WHERE vendor = ? AND advisory = ? AND "
                               "facility = ? AND n = ?", [(now, *r) for r in rows])

    def set_clearance(self, vid: str, tlp: str) -> bool:
        return self.store.execute("UPDATE vendors SET clearance = ?, updated = ? WHERE id = ?",
                                  (tlp, utcnow(), vid)).rowcount == 1

    def maintained_names(self) -> list[tuple[str, int, int]]:
        """(maintenance_vendor as written, rows, facilities) over every current register."""
        return [tuple(r) for r in self.store.execute(
            "SELECT maintenance_vendor, COUNT(*), COUNT(DISTINCT facility) FROM register_rows "
            "WHERE maintenance_vendor IS NOT NULL AND maintenance_vendor <> '' GROUP BY maintenance_vendor "
            "ORDER BY COUNT(*) DESC, maintenance_vendor")]
