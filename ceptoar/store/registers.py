"""Facilities, their registers (台帳) and the matches of advisories against them.

A register is TLP:RED: it says what a clinic runs. It is kept as versions (each import a new one),
its current rows pointing at profiles (what matching reads of a row: vendor, product, version, CPE,
aliases), and never read by TAXII, digests of other facilities or exports. Advisories are matched to
profiles, not to facilities: a product in 100,000 registers at a handful of versions is a handful of
profiles, each matched once; a facility's matches are its rows' profiles' matches, joined when read.
"""

from __future__ import annotations

import json

from ceptoar.store.base import Repository, chunks, dump, marks, utcnow

PROFILE_COLUMNS = ("vendor", "product", "version", "cpe", "aliases", "purl")  # what matching reads of a row
ROW_COLUMNS = ("n", "category", "vendor", "product", "version", "cpe", "purl", "aliases", "internet_exposed",
               "remote_maintenance", "maintenance_vendor", "note", "device")
LINE_COLUMNS = ("category", "vendor", "product", "version", "device", "internet_exposed", "remote_maintenance")


def signature(row: dict) -> str:
    """What matching reads of a register row, as one text: rows alike share a profile (and its matches)."""
    return json.dumps([row.get(c) for c in PROFILE_COLUMNS], ensure_ascii=False)


class Facilities(Repository):
    def upsert(self, f: dict) -> bool:
        """Add or update a facility; True when it was new."""
        now = utcnow()
        new = self.get(f["id"]) is None
        self.store.execute(
            "INSERT INTO facilities (id, name, facility_type, prefecture, member, phone, designations, municipality, "
            "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "name = excluded.name, facility_type = excluded.facility_type, prefecture = excluded.prefecture, "
            "member = excluded.member, phone = excluded.phone, designations = excluded.designations, "
            "municipality = excluded.municipality, updated = excluded.updated",
            (f["id"], f["name"], f["facility_type"], f["prefecture"], f["member"], f.get("phone"),
             json.dumps(f.get("designations") or [], ensure_ascii=False), f.get("municipality"), now, now))
        return new

    @staticmethod
    def _facility(r: dict | None) -> dict | None:
        if r is not None:
            r["designations"] = json.loads(r.get("designations") or "[]")
        return r

    def get(self, fid: str) -> dict | None:
        return self._facility(self.store.row("SELECT * FROM facilities WHERE id = ?", (fid,)))

    def list(self, member: str | None = None) -> list[dict]:
        if member:
            rows = self.store.rows("SELECT * FROM facilities WHERE member = ? ORDER BY id", (member,))
        else:
            rows = self.store.rows("SELECT * FROM facilities ORDER BY id")
        return [self._facility(r) for r in rows]

    # --- registers ------------------------------------------------------------------------------
    def replace_register(self, fid: str, rows: list[dict], keys: dict[str, list[str]], actor: str,
                         origin: str) -> tuple[int, list[int]]:
        """A new version of the facility's register (the previous ones kept); its rows become the
        current ones, each pointing at its profile. `keys`: product keys by profile signature.
        Returns the version and the profiles created now (never matched yet)."""
        version = (self.store.scalar("SELECT MAX(version) FROM registers WHERE facility = ?", (fid,)) or 0) + 1
        now = utcnow()
        self.store.execute("INSERT INTO registers (facility, version, imported, actor, origin, rows) "
                           "VALUES (?, ?, ?, ?, ?, ?)", (fid, version, now, actor, origin, dump(rows)))
        profiles, created = self.profiles(rows, keys)
        # A row whose profile the facility already had keeps the time it first had it (reminders count from it).
        since = dict(self.store.execute("SELECT profile, MIN(added) FROM register_rows WHERE facility = ? "
                                        "GROUP BY profile", (fid,)))
        dropped = set(since) - set(profiles.values())
        self.store.execute("DELETE FROM register_rows WHERE facility = ?", (fid,))
        self.store.executemany(
            f"INSERT INTO register_rows (facility, {', '.join(ROW_COLUMNS)}, profile, added) "
            f"VALUES (?, {marks(len(ROW_COLUMNS) + 2)})",
            [(fid, *(int(r[c]) if isinstance(r.get(c), bool) else r.get(c) for c in ROW_COLUMNS),
              profiles[signature(r)], since.get(profiles[signature(r)]) or now) for r in rows])
        self.prune(sorted(dropped))
        return version, created

    def profiles(self, rows: list[dict], keys: dict[str, list[str]]) -> tuple[dict[str, int], list[int]]:
        """signature → profile id for these rows, creating the missing ones (with their keys)."""
        wanted = {signature(r): r for r in rows}
        found = self._profile_ids(list(wanted))
        missing = [s for s in wanted if s not in found]
        if missing:
            self.store.executemany(
                f"INSERT INTO row_profiles (signature, {', '.join(PROFILE_COLUMNS)}) "
                f"VALUES (?, {marks(len(PROFILE_COLUMNS))}) ON CONFLICT (signature) DO NOTHING",
                [(s, *(wanted[s].get(c) for c in PROFILE_COLUMNS)) for s in missing])
            created = self._profile_ids(missing)
            self.store.executemany("INSERT INTO profile_keys (product_key, profile) VALUES (?, ?) "
                                   "ON CONFLICT DO NOTHING", [(k, pid) for s, pid in created.items() for k in keys[s]])
            found |= created
        return found, sorted(found[s] for s in missing)

    def _profile_ids(self, signatures: list[str]) -> dict[str, int]:
        out = {}
        for chunk in chunks(signatures):
            out.update(self.store.execute(
                f"SELECT signature, seq FROM row_profiles WHERE signature IN ({marks(len(chunk))})", chunk))
        return out

    def prune(self, profiles: list[int] | None = None) -> int:
        """Forget profiles no register row has any more (of these, or all), with their keys and matches."""
        if profiles is None:
            profiles = [p for (p,) in self.store.execute(
                "SELECT seq FROM row_profiles p WHERE NOT EXISTS "
                "(SELECT 1 FROM register_rows r WHERE r.profile = p.seq)")]
        else:
            used = set()
            for chunk in chunks(profiles):
                used |= {p for (p,) in self.store.execute(
                    f"SELECT DISTINCT profile FROM register_rows WHERE profile IN ({marks(len(chunk))})", chunk)}
            profiles = [p for p in profiles if p not in used]
        for chunk in chunks(profiles):
            for table, col in (("matches", "profile"), ("profile_keys", "profile"), ("row_profiles", "seq")):
                self.store.execute(f"DELETE FROM {table} WHERE {col} IN ({marks(len(chunk))})", chunk)
        return len(profiles)

    def register(self, fid: str) -> list[dict]:
        rows = self.store.rows(f"SELECT {', '.join(ROW_COLUMNS)} FROM register_rows WHERE facility = ? ORDER BY n",
                               (fid,))
        for r in rows:
            r["internet_exposed"], r["remote_maintenance"] = bool(r["internet_exposed"]), bool(r["remote_maintenance"])
        return rows

    def register_versions(self, fid: str) -> list[dict]:
        return self.store.rows("SELECT version, imported, actor, origin FROM registers WHERE facility = ? "
                               "ORDER BY version", (fid,))

    def unprofiled_rows(self) -> list[dict]:
        """Rows from before profiles (an upgraded database)."""
        return self.store.rows(f"SELECT facility, n, {', '.join(PROFILE_COLUMNS)} FROM register_rows "
                               "WHERE profile IS NULL ORDER BY facility, n")

    def set_row_profiles(self, rows: list[tuple[str, int, int]]) -> None:
        """(facility, n, profile): each row dated from its register's latest import."""
        self.store.executemany(
            "UPDATE register_rows SET profile = ?, added = (SELECT MAX(g.imported) FROM registers g "
            "WHERE g.facility = register_rows.facility) WHERE facility = ? AND n = ?",
            [(p, f, n) for f, n, p in rows])

    def all_profiles(self) -> list[dict]:
        return self.store.rows(f"SELECT seq, {', '.join(PROFILE_COLUMNS)} FROM row_profiles ORDER BY seq")

    def profiles_for_keys(self, keys: list[str]) -> list[dict]:
        """The profiles (distinct register rows as matching sees them) having any of these keys."""
        ids: set[int] = set()
        for chunk in chunks(sorted(set(keys))):
            ids |= {p for (p,) in self.store.execute(
                f"SELECT profile FROM profile_keys WHERE product_key IN ({marks(len(chunk))})", chunk)}
        return self.profiles_by_id(sorted(ids))

    def profiles_by_id(self, ids: list[int]) -> list[dict]:
        out = []
        for chunk in chunks(ids):
            out += self.store.rows(f"SELECT seq, {', '.join(PROFILE_COLUMNS)} FROM row_profiles "
                                   f"WHERE seq IN ({marks(len(chunk))})", chunk)
        return out

    def profile_keys(self, ids: list[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for chunk in chunks(ids):
            for k, p in self.store.execute(
                    f"SELECT product_key, profile FROM profile_keys WHERE profile IN ({marks(len(chunk))})", chunk):
                out.setdefault(p, []).append(k)
        return out

    def set_profile_keys(self, pid: int, keys: list[str]) -> None:
        self.store.execute("DELETE FROM profile_keys WHERE profile = ?", (pid,))
        self.store.executemany("INSERT INTO profile_keys (product_key, profile) VALUES (?, ?) ON CONFLICT DO NOTHING",
                               [(k, pid) for k in sorted(set(keys))])

    # --- advisories' products and matches -------------------------------------------------------
    def set_products_many(self, items: list[tuple[str, list[str], list[dict], bool]]) -> None:
        """The products each advisory (as published) names (advisory, keys, affected, urgent): their
        keys for lookups, and the whole list for matching without reading the report again; `urgent`:
        KEV-listed or critical."""
        ids = [a for a, *_ in items]
        for chunk in chunks(ids):
            self.store.execute(f"DELETE FROM advisory_products WHERE advisory IN ({marks(len(chunk))})", chunk)
            self.store.execute(f"DELETE FROM advisory_affected WHERE advisory IN ({marks(len(chunk))})", chunk)
        self.store.executemany("INSERT INTO advisory_products (advisory, product_key) VALUES (?, ?) "
                               "ON CONFLICT DO NOTHING",
                               [(a, k) for a, keys, _af, _u in items for k in sorted(set(keys))])
        self.store.insert("advisory_affected", ("advisory", "affected", "urgent"),
                          [(a, dump(af), int(u)) for a, _k, af, u in items if af])

    def replace_matches_many(self, found: dict[str, list[tuple[int, str, list[str]]]]) -> None:
        """Replace advisories' matches: `found` advisory → (profile, confidence, reasons). A match that
        stays keeps the time it was first made."""
        old: set[tuple[str, int]] = set()
        for chunk in chunks(list(found)):
            old |= {(a, p) for a, p in self.store.execute(
                f"SELECT advisory, profile FROM matches WHERE advisory IN ({marks(len(chunk))})", chunk)}
        keep = {(a, p) for a, ms in found.items() for p, *_ in ms}
        self.store.executemany("DELETE FROM matches WHERE advisory = ? AND profile = ?", sorted(old - keep))
        self.add_matches([(p, a, c, r) for a, ms in found.items() for p, c, r in ms])

    def affected(self, advisories: list[str]) -> dict[str, list[dict]]:
        out = {}
        for chunk in chunks(advisories):
            for a, text in self.store.execute(
                    f"SELECT advisory, affected FROM advisory_affected WHERE advisory IN ({marks(len(chunk))})",
                    chunk):
                out[a] = json.loads(text)
        return out

    def advisories_for_keys(self, keys: list[str]) -> list[str]:
        out: dict[str, None] = {}
        for chunk in chunks(sorted(set(keys))):
            for (a,) in self.store.execute(
                    f"SELECT DISTINCT advisory FROM advisory_products WHERE product_key IN ({marks(len(chunk))})",
                    chunk):
                out[a] = None
        return list(out)

    def add_matches(self, found: list[tuple[int, str, str, list[str]]]) -> None:
        """(profile, advisory, confidence, reasons) added or updated (a new match dated now)."""
        now = utcnow()
        texts: dict[tuple, str] = {}  # the same reasons repeat across profiles
        self.store.executemany(
            "INSERT INTO matches (profile, advisory, confidence, reasons, matched) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (profile, advisory) DO UPDATE SET confidence = excluded.confidence, "
            "reasons = excluded.reasons",
            [(p, a, c, texts.get(tuple(r)) or texts.setdefault(tuple(r), json.dumps(r, ensure_ascii=False)), now)
             for p, a, c, r in found])

    def count_matches(self, *, advisory: str | None = None, facility: str | None = None) -> int:
        """(facility, advisory) pairs: of one advisory, of one facility, or all."""
        where, args = ("WHERE m.advisory = ?", (advisory,)) if advisory else \
            ("WHERE r.facility = ?", (facility,)) if facility else ("", ())
        return self.store.scalar("SELECT COUNT(*) FROM (SELECT DISTINCT r.facility, m.advisory FROM matches m "
                                 f"JOIN register_rows r ON r.profile = m.profile {where}) x", args)

    def exposure(self, advisory: str, confidences: list[str]) -> dict[str, int]:
        """prefecture → facilities with a row matching the advisory at one of these confidences."""
        return dict(self.store.execute(
            "SELECT f.prefecture, COUNT(DISTINCT r.facility) FROM matches m "
            "JOIN register_rows r ON r.profile = m.profile JOIN facilities f ON f.id = r.facility "
            f"WHERE m.advisory = ? AND m.confidence IN ({marks(len(confidences))}) GROUP BY f.prefecture",
            (advisory, *confidences)))

    def unanswered(self, facilities: list[str], before: str) -> dict[str, list[dict]]:
        """Per facility, the published advisories matched to it before `before` (by the later of the
        match and the row's arrival) and never answered by it: id, severity, max_cvss, cves, tags;
        newest first. Facilities with none are left out."""
        out: dict[str, list[dict]] = {}
        for chunk in chunks(facilities):
            for r in self.store.rows(
                    "SELECT DISTINCT r.facility, a.id, a.severity, a.max_cvss, a.cves, a.tags, a.published_utc "
                    "FROM register_rows r CROSS JOIN matches m JOIN advisories a ON a.id = m.advisory "
                    f"WHERE r.facility IN ({marks(len(chunk))}) AND m.profile = r.profile "
                    "AND m.matched <= ? AND r.added <= ? "
                    "AND a.status = 'published' AND NOT EXISTS (SELECT 1 FROM responses x "
                    "WHERE x.facility = r.facility AND x.advisory = a.id) "
                    "ORDER BY r.facility, a.published_utc DESC, a.id", (*chunk, before, before)):
                r["cves"], r["tags"] = json.loads(r.pop("cves")), json.loads(r.pop("tags"))
                del r["published_utc"]
                out.setdefault(r.pop("facility"), []).append(r)
        return out

    def matches(self, *, facility: str | None = None, advisory: str | None = None, member: str | None = None,
                advisories: list[str] | None = None, facilities: list[str] | None = None) -> list[dict]:
        """Matches per facility register row: a profile's match is every row of that profile. A row's
        match dates from the later of the match and the row's arrival in the register. Each carries
        what a person reads of its row (`row`: category, vendor, product, version, device, exposure)."""
        # Of given facilities, the query starts from their rows (SQLite takes CROSS JOIN's order as
        # written; without it, it may start from the advisories' matches and walk every facility
        # running the product) and filters advisories on each row's few matches ("|| ''" keeps SQLite
        # from probing the key once per row and advisory instead).
        by_rows = bool(facility or facilities)
        where, args = [], []
        if facility:
            where.append("r.facility = ?")
            args.append(facility)
        if facilities is not None:
            if not facilities:
                return []
            if len(facilities) > 500:
                return [m for chunk in chunks(facilities) for m in self.matches(
                    advisory=advisory, member=member, advisories=advisories, facilities=chunk)]
            where.append(f"r.facility IN ({marks(len(facilities))})")
            args.extend(facilities)
        if advisory:
            where.append("m.advisory = ?")
            args.append(advisory)
        if member:
            where.append("f.member = ?")
            args.append(member)
        if advisories is not None:
            if not advisories:
                return []
            column = "m.advisory || ''" if by_rows else "m.advisory"
            where.append(f"{column} IN ({marks(len(advisories))})")
            args.extend(advisories)
        joined = ("register_rows r CROSS JOIN matches m" if by_rows
                  else "matches m JOIN register_rows r ON r.profile = m.profile")
        where.append("m.profile = r.profile")
        rows = self.store.rows(
            "SELECT r.facility, m.advisory, r.n, m.confidence, m.reasons, "
            "CASE WHEN m.matched > r.added THEN m.matched ELSE r.added END AS matched, f.member, "
            f"f.name AS facility_name, {', '.join('r.' + c for c in LINE_COLUMNS)} "
            f"FROM {joined} JOIN facilities f ON f.id = r.facility WHERE {' AND '.join(where)} "
            "ORDER BY r.facility, m.advisory, r.n", args)
        parsed: dict[str, list] = {}
        for r in rows:
            text = r["reasons"]
            r["reasons"] = list(parsed.get(text) or parsed.setdefault(text, json.loads(text)))
            r["row"] = {c: r.pop(c) for c in LINE_COLUMNS}
            r["row"]["internet_exposed"] = bool(r["row"]["internet_exposed"])
            r["row"]["remote_maintenance"] = bool(r["row"]["remote_maintenance"])
        return rows

    # --- answers and targeted alerts ------------------------------------------------------------
    def add_response(self, r: dict) -> None:
        self.store.execute("INSERT INTO responses (facility, advisory, status, fixed_on, note, time, actor, via) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (r["facility"], r["advisory"], r["status"], r["fixed_on"], r["note"], r["time"],
                            r["actor"], r["via"]))

    def responses(self, facility: str, advisory: str) -> list[dict]:
        return self.store.rows("SELECT status, fixed_on, note, time, actor, via FROM responses WHERE facility = ? "
                               "AND advisory = ? ORDER BY seq", (facility, advisory))

    def latest_responses(self, facility: str | None = None, facilities: list[str] | None = None) -> dict:
        """(facility, advisory) → the latest answer (with `facility`: advisory → it)."""
        q = ("SELECT r.facility, r.advisory, r.status, r.fixed_on, r.note, r.time FROM responses r "
             "WHERE r.seq = (SELECT MAX(x.seq) FROM responses x WHERE x.facility = r.facility "
             "AND x.advisory = r.advisory)")
        if facility:
            return {r["advisory"]: r for r in self.store.rows(q + " AND r.facility = ?", (facility,))}
        if facilities is not None:
            return {(r["facility"], r["advisory"]): r for chunk in chunks(facilities) for r in self.store.rows(
                q + f" AND r.facility IN ({marks(len(chunk))})", chunk)}
        return {(r["facility"], r["advisory"]): r for r in self.store.rows(q)}

    def queue_targeted(self, *, advisory: str | None = None, facility: str | None = None) -> None:
        """Targeted alerts (once per facility and advisory) for urgent matches on internet-exposed or
        remotely maintained rows: of one facility, queued now; of one advisory, the advisory queued,
        its facilities found when the alerts are sent (`expand_targeted`), so publishing an advisory
        that thousands of facilities expose costs one row, not thousands."""
        if advisory:
            self.store.execute("INSERT INTO alert_queue (advisory, queued) VALUES (?, ?) ON CONFLICT DO NOTHING",
                               (advisory, utcnow()))
            return
        self._queue_exposed("r.facility = ?", facility)

    def _queue_exposed(self, where: str, arg: str) -> None:
        self.store.execute(
            "INSERT INTO targeted_alerts (facility, advisory, queued) SELECT DISTINCT r.facility, m.advisory, ? "
            "FROM matches m JOIN register_rows r ON r.profile = m.profile JOIN advisory_affected a "
            f"ON a.advisory = m.advisory WHERE {where} AND a.urgent = 1 "
            "AND (r.internet_exposed = 1 OR r.remote_maintenance = 1) ON CONFLICT DO NOTHING", (utcnow(), arg))

    def expand_targeted(self) -> int:
        """Each queued advisory's alerts, one per facility exposing a matched row (if the advisory is
        still urgent and published). Returns the number of advisories expanded."""
        queued = [a for (a,) in self.store.execute("SELECT advisory FROM alert_queue ORDER BY queued, advisory")]
        for advisory in queued:
            self._queue_exposed("m.advisory = ?", advisory)
            self.store.execute("DELETE FROM alert_queue WHERE advisory = ?", (advisory,))
        return len(queued)

    def pending_count(self) -> int:
        """Targeted alerts waiting: per facility, advisories whose facilities are still to be found, and
        corrections of alerts sent before review."""
        return (self.store.scalar("SELECT COUNT(*) FROM targeted_alerts WHERE run IS NULL")
                + self.store.scalar("SELECT COUNT(*) FROM alert_queue") + self.pending_corrections_count())

    def pending_targeted(self) -> list[dict]:
        rows = self.store.rows("SELECT * FROM targeted_alerts WHERE run IS NULL ORDER BY queued, facility")
        for r in rows:
            r["detail"] = json.loads(r["detail"]) if r.get("detail") else None
        return rows

    def mark_targeted(self, facility: str, advisory: str, run: str, *, pre_review: bool = False,
                      sent: str | None = None) -> None:
        """The alert went out in `run` (`sent`: when; `pre_review`: before any analyst acted)."""
        self.store.execute("UPDATE targeted_alerts SET run = ?, pre_review = ?, sent = ? WHERE facility = ? "
                           "AND advisory = ?", (run, int(pre_review), sent, facility, advisory))

    # --- the urgent path: alerts on arrival, before review, and their corrections -----------------
    def exposed_rows(self, profiles: list[int]) -> list[dict]:
        """The register rows of these profiles that are internet-exposed or remotely maintained,
        each with its facility and the line a person reads (`row`)."""
        out = []
        for chunk in chunks(sorted(set(profiles))):
            out += self.store.rows(
                f"SELECT r.facility, r.profile, {', '.join('r.' + c for c in LINE_COLUMNS)} FROM register_rows r "
                f"WHERE r.profile IN ({marks(len(chunk))}) AND (r.internet_exposed = 1 OR r.remote_maintenance = 1) "
                "ORDER BY r.facility, r.n", chunk)
        for r in out:
            r["row"] = {c: r.pop(c) for c in LINE_COLUMNS}
            r["row"]["internet_exposed"] = bool(r["row"]["internet_exposed"])
            r["row"]["remote_maintenance"] = bool(r["row"]["remote_maintenance"])
        return out

    def queue_on_arrival(self, alerts: list[tuple[str, str, list[dict]]]) -> int:
        """(facility, advisory, what matched) alerts queued before review, once per facility and
        advisory (one queued or sent already stands). Returns how many were new."""
        now, n = utcnow(), 0
        for facility, advisory, detail in alerts:
            n += self.store.execute(
                "INSERT INTO targeted_alerts (facility, advisory, queued, pre_review, detail) VALUES (?, ?, ?, 1, ?) "
                "ON CONFLICT DO NOTHING", (facility, advisory, now, dump(detail))).rowcount
        return n

    def drop_pending(self, advisory: str) -> int:
        """An advisory's alerts not sent yet, withdrawn (an analyst rejected it first)."""
        return self.store.execute("DELETE FROM targeted_alerts WHERE advisory = ? AND run IS NULL",
                                  (advisory,)).rowcount

    def last_urgent(self, facilities: list[str]) -> dict[str, str]:
        """When each facility's last urgent message went out."""
        out = {}
        for chunk in chunks(sorted(set(facilities))):
            out |= {f: t for f, t in self.store.execute(
                f"SELECT facility, MAX(sent) FROM targeted_alerts WHERE facility IN ({marks(len(chunk))}) "
                "AND sent IS NOT NULL GROUP BY facility", chunk)}
        return out

    def alerted_before_review(self, advisories: list[str]) -> list[str]:
        """Those of these advisories some facility was alerted about before review."""
        out: set[str] = set()
        for chunk in chunks(advisories):
            out |= {a for (a,) in self.store.execute(
                f"SELECT DISTINCT advisory FROM targeted_alerts WHERE pre_review = 1 AND sent IS NOT NULL "
                f"AND advisory IN ({marks(len(chunk))})", chunk)}
        return sorted(out)

    def queue_corrections(self, advisory: str, what: str, detail: dict | None = None) -> list[str]:
        """A correction to every facility alerted about `advisory` before review; their ids."""
        text = dump(detail or {})
        facilities = [f for (f,) in self.store.execute(
            "SELECT t.facility FROM targeted_alerts t WHERE t.advisory = ? AND t.pre_review = 1 "
            "AND t.sent IS NOT NULL AND NOT EXISTS (SELECT 1 FROM alert_corrections c WHERE c.facility = t.facility "
            "AND c.advisory = t.advisory AND c.what = ? AND c.detail = ?) ORDER BY t.facility",
            (advisory, what, text))]  # each told once
        now = utcnow()
        self.store.executemany("INSERT INTO alert_corrections (facility, advisory, what, detail, queued) "
                               "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               [(f, advisory, what, text, now) for f in facilities])
        return facilities

    def pending_corrections(self) -> list[dict]:
        rows = self.store.rows("SELECT * FROM alert_corrections WHERE run IS NULL ORDER BY facility, queued")
        for r in rows:
            r["detail"] = json.loads(r["detail"] or "{}")
        return rows

    def mark_corrections(self, facility: str, run: str) -> None:
        self.store.execute("UPDATE alert_corrections SET run = ? WHERE facility = ? AND run IS NULL", (run, facility))

    def pending_corrections_count(self) -> int:
        return self.store.scalar("SELECT COUNT(*) FROM alert_corrections WHERE run IS NULL")
