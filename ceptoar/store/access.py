"""Members (association secretariats): credentials, clearance, grants; TAXII status resources."""

from __future__ import annotations

import json

from ceptoar.store.base import Repository, utcnow


Failures = dict[str, tuple[int, str | None]]  # "address"/"member" → (count, time of the last)
# Failed TAXII logins since a time, from one address and of one member: both counts in one pass
# over the audit log's (address, …) and (member, action, time) indexes.
FAILURES = ("SELECT SUM(CASE WHEN address = ? THEN 1 ELSE 0 END) AS failures_address, "
            "MAX(CASE WHEN address = ? THEN time END) AS failures_address_last, "
            "SUM(CASE WHEN member = ? THEN 1 ELSE 0 END) AS failures_member, "
            "MAX(CASE WHEN member = ? THEN time END) AS failures_member_last "
            "FROM audit WHERE (address = ? OR member = ?) AND http_status = 401 AND action = 'taxii-denied' "
            "AND time >= ?")


def _failures(row: dict, of_member: bool) -> Failures:
    out = {"address": (row["failures_address"] or 0, row["failures_address_last"])}
    if of_member:
        out["member"] = (row["failures_member"] or 0, row["failures_member_last"])
    return out


class Members(Repository):
    def upsert(self, mid: str, name: str, clearance: str) -> bool:
        s = self.store
        with s.transaction():
            if self.get(mid):
                s.execute("UPDATE members SET name = ?, clearance = ? WHERE id = ?", (name, clearance, mid))
                return False
            s.execute("INSERT INTO members (id, name, clearance, created) VALUES (?, ?, ?, ?)",
                      (mid, name, clearance, utcnow()))
            return True

    def get(self, mid: str) -> dict | None:
        r = self.store.row("SELECT * FROM members WHERE id = ?", (mid,))
        if r:
            r["enabled"] = bool(r["enabled"])
        return r

    def signing_in(self, mid: str, *, address: str, since: str) -> tuple[dict | None, Failures]:
        """What a TAXII request's Basic authentication needs, in one statement: the member (None if
        there is none) with its grants beside it (as grants_of gives them, under "grants"), and the
        failed logins since a time from the address and of that member (as recent_failures)."""
        rows = self.store.rows(
            f"SELECT f.*, m.*, g.collection AS grant_collection, g.can_read AS grant_read, g.can_write AS grant_write "
            f"FROM ({FAILURES}) f LEFT JOIN members m ON m.id = ? LEFT JOIN grants g ON g.member = m.id",
            (address, address, mid, mid, address, mid, since, mid))
        first = rows[0]  # the counts make one row, whether or not the member exists
        if first["id"] is None:
            return None, _failures(first, False)
        member = {k: v for k, v in first.items() if not k.startswith(("grant_", "failures_"))}
        member["enabled"] = bool(member["enabled"])
        member["grants"] = {r["grant_collection"]: (bool(r["grant_read"]), bool(r["grant_write"]))
                            for r in rows if r["grant_collection"] is not None}
        return member, _failures(first, True)

    def by_key(self, key_id: str) -> dict | None:
        r = self.store.row("SELECT * FROM members WHERE key_id = ?", (key_id,))
        if r:
            r["enabled"] = bool(r["enabled"])
        return r

    def by_certificate(self, fingerprint: str | None, subject: str | None) -> dict | None:
        """The member a verified client certificate belongs to: by its SHA-256 fingerprint, else by
        its subject DN."""
        for column, value in (("cert_fingerprint", fingerprint), ("cert_subject", subject)):
            if value:
                r = self.store.row(f"SELECT * FROM members WHERE {column} = ?", (value,))
                if r:
                    r["enabled"] = bool(r["enabled"])
                    return r
        return None

    def set_certificate(self, mid: str, fingerprint: str | None, subject: str | None, required: bool) -> None:
        with self.store.transaction():
            self.store.execute("UPDATE members SET cert_fingerprint = ?, cert_subject = ?, cert_required = ? "
                               "WHERE id = ?", (fingerprint, subject, int(required), mid))

    def set_collection_titles(self, mid: str, titles: str) -> None:
        with self.store.transaction():
            self.store.execute("UPDATE members SET collection_titles = ? WHERE id = ?", (titles, mid))

    def list(self) -> list[dict]:
        s = self.store
        members = s.rows("SELECT id, name, clearance, enabled, secret_set, collection_titles, "
                         "cert_fingerprint IS NOT NULL OR cert_subject IS NOT NULL AS certificate, cert_required, "
                         "created FROM members ORDER BY id")
        grants = s.rows("SELECT * FROM grants ORDER BY collection")
        for m in members:
            m["enabled"] = bool(m["enabled"])
            m["certificate"] = ("required" if m.pop("cert_required") else "yes") if m["certificate"] else "no"
            m["grants"] = [{"collection": g["collection"], "read": bool(g["can_read"]),
                            "write": bool(g["can_write"])} for g in grants if g["member"] == m["id"]]
        return members

    def set_enabled(self, mid: str, enabled: bool) -> bool:
        with self.store.transaction():
            return self.store.execute("UPDATE members SET enabled = ? WHERE id = ?", (int(enabled), mid)).rowcount == 1

    def set_secret(self, mid: str, key_id: str, secret_hash: str) -> None:
        with self.store.transaction():
            self.store.execute("UPDATE members SET key_id = ?, secret_hash = ?, secret_set = ? WHERE id = ?",
                               (key_id, secret_hash, utcnow(), mid))

    def set_grant(self, mid: str, cid: str, can_read: bool, can_write: bool) -> None:
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO grants (member, collection, can_read, can_write) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (member, collection) DO UPDATE SET can_read = excluded.can_read, "
                "can_write = excluded.can_write", (mid, cid, int(can_read), int(can_write)))

    def remove_grant(self, mid: str, cid: str) -> bool:
        with self.store.transaction():
            return self.store.execute("DELETE FROM grants WHERE member = ? AND collection = ?",
                                      (mid, cid)).rowcount == 1

    def grants_of(self, mid: str) -> dict[str, tuple[bool, bool]]:
        return {c: (bool(r), bool(w)) for c, r, w in self.store.execute(
            "SELECT collection, can_read, can_write FROM grants WHERE member = ?", (mid,))}

    def recent_failures(self, *, since: str, address: str, member: str | None = None
                        ) -> Failures:
        """(failed logins, time of the last one) since a time from one address and, given, for one
        member: {"address": …, "member": …}, counted in one statement (each index probed once)."""
        row = self.store.row(FAILURES, (address, address, member, member, address, member, since))
        return _failures(row, member is not None)

    def objects_submitted(self, member: str, since: str) -> int:
        """Objects the member has added over TAXII since a time (from the audit log)."""
        return sum((json.loads(d) or {}).get("objects", 0) for (d,) in self.store.execute(
            "SELECT details FROM audit WHERE action = 'taxii-add' AND member = ? AND time >= ?", (member, since)))

    def save_status(self, status: dict, member: str, collection: str | None) -> None:
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO taxii_status (id, member, collection, created, json) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET json = excluded.json",
                (status["id"], member, collection, utcnow(), json.dumps(status)))

    def get_status(self, sid: str, member: str) -> dict | None:
        text = self.store.scalar("SELECT json FROM taxii_status WHERE id = ? AND member = ?", (sid, member))
        return json.loads(text) if text else None
