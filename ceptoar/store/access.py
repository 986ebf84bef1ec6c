"""Members (association secretariats): credentials, clearance, grants; TAXII status resources."""

from __future__ import annotations

import json

from ceptoar.store.base import Repository, utcnow


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

    def get(self, mid: str, with_grants: bool = False) -> dict | None:
        """A member; `with_grants`: its grants beside it, as grants_of gives them, read in the same
        statement (a TAXII request's authentication then needs no second one)."""
        if not with_grants:
            r = self.store.row("SELECT * FROM members WHERE id = ?", (mid,))
        else:
            found = self.store.rows(
                "SELECT m.*, g.collection AS grant_collection, g.can_read AS grant_read, g.can_write AS grant_write "
                "FROM members m LEFT JOIN grants g ON g.member = m.id WHERE m.id = ?", (mid,))
            r = None
            if found:
                grants = {x["grant_collection"]: (bool(x["grant_read"]), bool(x["grant_write"]))
                          for x in found if x["grant_collection"] is not None}
                r = {k: v for k, v in found[0].items() if not k.startswith("grant_")} | {"grants": grants}
        if r:
            r["enabled"] = bool(r["enabled"])
        return r

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
                        ) -> dict[str, tuple[int, str | None]]:
        """(failed logins, time of the last one) since a time from one address and, given, for one
        member: {"address": …, "member": …}, counted in one statement (each index probed once)."""
        count = "SUM(CASE WHEN {0} = ? THEN 1 ELSE 0 END), MAX(CASE WHEN {0} = ? THEN time END)"
        row = self.store.execute(
            f"SELECT {count.format('address')}, {count.format('member')} FROM audit WHERE (address = ? OR member = ?) "
            "AND http_status = 401 AND action = 'taxii-denied' AND time >= ?",
            (address, address, member, member, address, member, since)).fetchone()
        out = {"address": (row[0] or 0, row[1])}
        if member is not None:
            out["member"] = (row[2] or 0, row[3])
        return out

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
