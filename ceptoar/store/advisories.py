"""Advisories: what each source says (facts) and what the analyst decided, in separate columns.

Ingest writes only FACTS; triage writes only DECISIONS. The effective TLP (the analyst's where set,
else the source's) and the effective tags (the source's suggestions, plus the analyst's additions,
minus the analyst's removals) are derived from both by `refresh_derived`, the one place that
combines them. Search is a trigram full-text index over title, description and identifiers.
"""

from __future__ import annotations

import json
import re

from ceptoar.core.errors import CeptoarError, NotFound
from ceptoar.core.model import TLP_ORDER
from ceptoar.store.base import Repository, chunks, dump, like_escaped, load, marks
from ceptoar.store.schema import search_key

FACTS = ("source", "entry_key", "source_report", "title", "description", "published", "published_utc", "modified",
         "stix_modified", "url", "identifiers", "cves", "cvss", "cpes", "max_cvss", "source_tlp", "lang",
         "auto_tags", "medical_signals", "updated_at")
DECISIONS = ("status", "analyst_tlp", "severity", "medical", "tags_added", "tags_removed", "notes", "decided_at",
             "published_version", "published_source", "clinic")
JSON_COLUMNS = {"identifiers", "cves", "cvss", "cpes", "auto_tags", "medical_signals", "tags_added", "tags_removed",
                "notes", "tags", "clinic"}
# PostgreSQL's search text is lowercased under "C" (ASCII letters only); so is the query.
ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
DERIVED_FROM = {"analyst_tlp", "tags_added", "tags_removed"}  # the decisions refresh_derived reads


def effective_tags(suggested: list[str], added: list[str], removed: list[str]) -> list[str]:
    tags = [t for t in suggested if t not in removed]
    return tags + [t for t in added if t not in tags and t not in removed]


def _value(column: str, v):
    if column in JSON_COLUMNS:
        return dump(v if v is not None else {} if column == "clinic" else [])
    return int(v) if isinstance(v, bool) else v


def decode(d: dict) -> dict:
    d.pop("search_key", None)  # the full-text index's key (SQLite), not a fact or a decision
    for c in JSON_COLUMNS & d.keys():
        d[c] = load(d[c], {} if c == "clinic" else None)
    if "medical" in d:
        d["medical"] = None if d["medical"] is None else bool(d["medical"])
    return d


class Advisories(Repository):
    # --- ingest: facts ---------------------------------------------------------------------------
    def ids_for_entries(self, source: str, keys: list[str]) -> dict[str, str]:
        """entry key → advisory id of the advisories a source already has."""
        out = {}
        for chunk in chunks(keys):
            out.update(self.store.execute(
                f"SELECT entry_key, id FROM advisories WHERE source = ? AND entry_key IN ({marks(len(chunk))})",
                [source, *chunk]).fetchall())
        return out

    def states(self, ids: list[str]) -> dict[str, dict]:
        """What ingest needs to know of existing advisories (facts and the effective TLP)."""
        out = {}
        for chunk in chunks(ids):
            for r in self.store.rows(
                    "SELECT id, first_seen, source_tlp, analyst_tlp, tlp, status, stix_modified, auto_tags "
                    f"FROM advisories WHERE id IN ({marks(len(chunk))})", chunk):
                r["auto_tags"] = json.loads(r["auto_tags"])
                out[r["id"]] = r
        return out

    def write_facts(self, rows: list[dict]) -> None:
        """Insert or update the facts of advisories (`id` and FACTS columns; `first_seen` for new
        ones). Decisions are never written here; derived values are refreshed from both."""
        if not rows:
            return
        s = self.store
        new_ids = [r["id"] for r in rows if r.get("_new")]
        cols = ["id", *FACTS]
        updates = ", ".join(f"{c} = excluded.{c}" for c in FACTS)
        values = [[_value(c, r[c]) for c in cols] + [r["first_seen"], r["source_tlp"],
                                                      TLP_ORDER.index(r["source_tlp"]), dump(r["auto_tags"])]
                  for r in rows]
        extra, more = "", ""
        if s.dialect == "sqlite":
            # The search key given with the row (rowids numbered here, under the write lock), instead
            # of a trigger's second write of every new row.
            extra, more = ", rowid, search_key", f", ?, {search_key(None)}"
            base = s.scalar("SELECT COALESCE(MAX(rowid), 0) FROM advisories")
            published = cols.index("published_utc")
            for i, v in enumerate(values, base + 1):
                v += [i, v[published], i]
        else:
            # New rows (none held under this id when the batch was read, under the writers' lock) by
            # COPY; the changed ones by upsert.
            s.insert("advisories", (*cols, "first_seen", "tlp", "tlp_rank", "tags"),
                     [v for v, r in zip(values, rows, strict=True) if r.get("_new")])
            values = [v for v, r in zip(values, rows, strict=True) if not r.get("_new")]
        s.executemany(
            f"INSERT INTO advisories ({', '.join(cols)}, first_seen, tlp, tlp_rank, tags{extra}) "
            f"VALUES ({marks(len(cols) + 4)}{more}) ON CONFLICT (id) DO UPDATE SET {updates}", values)
        self.refresh_derived([r["id"] for r in rows if not r.get("_new")])
        if s.dialect != "sqlite":
            return  # PostgreSQL's trigram index follows the table by itself
        # One full-text insert for the whole batch, in key order: FTS5 builds its segments fastest
        # from ascending keys (UUID order made it four times slower).
        s.execute("CREATE TEMP TABLE IF NOT EXISTS fresh_ids (id TEXT PRIMARY KEY)")
        s.execute("DELETE FROM temp.fresh_ids")
        s.executemany("INSERT INTO temp.fresh_ids VALUES (?) ON CONFLICT DO NOTHING", [(i,) for i in new_ids])
        s.execute("INSERT INTO advisories_fts (rowid, title, description, identifiers) SELECT search_key, title, "
                  "description, identifiers FROM advisories WHERE id IN (SELECT id FROM temp.fresh_ids) "
                  "ORDER BY search_key")

    def write_cves(self, rows: list[tuple[str, str]], replacing: list[str]) -> None:
        for chunk in chunks(replacing):
            self.store.execute(f"DELETE FROM advisory_cves WHERE advisory IN ({marks(len(chunk))})", chunk)
        self.store.insert("advisory_cves", ("cve", "advisory"), rows, "ON CONFLICT DO NOTHING")

    # --- triage: decisions -----------------------------------------------------------------------
    def decide(self, advisory_id: str, **decisions) -> None:
        bad = set(decisions) - set(DECISIONS)
        if bad:
            raise ValueError(f"not analyst decisions: {sorted(bad)}")
        self.store.execute(f"UPDATE advisories SET {', '.join(f'{k} = ?' for k in decisions)} WHERE id = ?",
                           [*(_value(k, v) for k, v in decisions.items()), advisory_id])
        self.refresh_derived([advisory_id])

    def decide_many(self, decisions: list[tuple[str, dict]]) -> None:
        """The same decisions (one set of keys) for many advisories, each with its own values."""
        if not decisions:
            return
        keys = list(decisions[0][1])
        bad = set(keys) - set(DECISIONS)
        if bad or any(list(d) != keys for _a, d in decisions):
            raise ValueError(f"not one set of analyst decisions: {sorted(bad) or keys}")
        self.store.executemany(f"UPDATE advisories SET {', '.join(f'{k} = ?' for k in keys)} WHERE id = ?",
                               [[*(_value(k, d[k]) for k in keys), aid] for aid, d in decisions])
        if DERIVED_FROM & set(keys):
            self.refresh_derived([aid for aid, _d in decisions])

    def statuses(self, ids: list[str]) -> list[dict]:
        """id, status, source and source report of these advisories (no facts decoded)."""
        out = []
        for chunk in chunks(list(dict.fromkeys(ids))):
            out += self.store.rows(f"SELECT id, status, source, source_report FROM advisories "
                                   f"WHERE id IN ({marks(len(chunk))})", chunk)
        return out

    def get_many(self, ids: list[str]) -> dict[str, dict]:
        out = {}
        for chunk in chunks(list(dict.fromkeys(ids))):
            for r in self.store.rows(f"SELECT * FROM advisories WHERE id IN ({marks(len(chunk))})", chunk):
                out[r["id"]] = decode(r)
        return out

    def refresh_derived(self, ids: list[str]) -> None:
        """Effective TLP and tags from the source's facts and the analyst's decisions."""
        updates = []
        for chunk in chunks(ids):
            for aid, source_tlp, analyst_tlp, auto, added, removed in self.store.execute(
                    "SELECT id, source_tlp, analyst_tlp, auto_tags, tags_added, tags_removed FROM advisories "
                    f"WHERE id IN ({marks(len(chunk))})", chunk):
                tlp = analyst_tlp or source_tlp
                tags = effective_tags(load(auto), load(added), load(removed))
                updates.append((tlp, TLP_ORDER.index(tlp), dump(tags), aid))
        self.store.executemany("UPDATE advisories SET tlp = ?, tlp_rank = ?, tags = ? WHERE id = ?", updates)

    # --- reading ---------------------------------------------------------------------------------
    def get(self, advisory_id: str) -> dict | None:
        r = self.store.row("SELECT * FROM advisories WHERE id = ?", (advisory_id,))
        return decode(r) if r else None

    def find(self, ref: str) -> dict:
        """By full STIX id or a unique prefix (6+ characters) of its UUID."""
        ref = ref.strip()
        uuid_part = ref.split("--", 1)[1] if "--" in ref else ref
        if len(uuid_part) < 6:
            raise NotFound(f"advisory id {ref!r} is too short: give 6 or more characters of its UUID")
        ids = self.ids_by_prefix(ref)
        if not ids:
            raise NotFound(f"no advisory {ref!r}")
        if len(ids) > 1:
            raise NotFound(f"advisory id {ref!r} is ambiguous: give more characters")
        return self.get(ids[0])

    def ids_by_prefix(self, ref: str) -> list[str]:
        return ids_by_prefix(self.store, "advisories", "report", ref)

    def kev_cves(self) -> set[str]:
        """CVEs listed by any KEV-kind source."""
        return {c for (c,) in self.store.execute(
            "SELECT DISTINCT c.cve FROM advisory_cves c JOIN advisories a ON a.id = c.advisory "
            "JOIN sources s ON s.id = a.source WHERE s.kind = 'kev'")}

    def japanese_entries(self, cves: list[str], exclude: str | None = None) -> list[dict]:
        """Public Japanese JVN entries naming any of these CVEs (effective TLP:CLEAR from a CLEAR
        source, neither rejected nor revoked), with the CVEs each names; newest first."""
        found: dict[str, dict] = {}
        for chunk in chunks(sorted(set(cves))):
            for row in self.store.execute(
                    "SELECT a.id, a.source, a.source_report, a.entry_key, a.title, a.description, a.url, a.cves, "
                    "a.modified FROM advisory_cves c JOIN advisories a ON a.id = c.advisory "
                    "JOIN sources s ON s.id = a.source "
                    f"WHERE c.cve IN ({marks(len(chunk))}) AND s.kind = 'jvn' AND a.lang = 'ja' AND a.tlp = 'CLEAR' "
                    "AND a.source_tlp = 'CLEAR' AND a.status NOT IN ('rejected', 'revoked') AND a.id != ?",
                    [*chunk, exclude or ""]).fetchall():
                keys = ("id", "source", "source_report", "entry_key", "title", "description", "url", "cves",
                        "modified")
                found[row[0]] = decode(dict(zip(keys, row, strict=True)))
        return sorted(found.values(), key=lambda r: r["modified"] or "", reverse=True)

    def list(self, *, source: str | None = None, cve: str | None = None, since: str | None = None,
             tag: str | None = None, status: str | None = None, search: str | None = None,
             medical: bool | None = None, ids: list[str] | None = None, collection: str | None = None,
             limit: int | None = None) -> list[dict]:
        """Advisories newest first. `medical` is the analyst's decision, or the suggestion while
        there is none; `search` matches substrings of title, description and identifiers (tabs
        and line breaks in it are spaces; any other control character is refused)."""
        s = self.store
        where, args = [], []
        if search is not None:
            search = search_words(search)
        if ids is not None:
            if not ids:
                return []
            where.append(f"a.id IN ({marks(len(ids))})")
            args.extend(ids)
        if source:
            where.append("a.source = ?")
            args.append(source)
        if collection:
            where.append("a.id IN (SELECT advisory FROM placements WHERE collection = ?)")
            args.append(collection)
        if cve:
            where.append("a.id IN (SELECT advisory FROM advisory_cves WHERE cve = ?)")
            args.append(cve.upper())
        if since:
            where.append("a.published_utc >= ?")
            args.append(since)
        like = "ILIKE" if s.dialect == "postgresql" else "LIKE"  # SQLite's LIKE ignores ASCII case
        if tag:
            where.append(f"a.tags {like} ? ESCAPE '\\'")
            args.append("%" + like_escaped(json.dumps(tag, ensure_ascii=False)) + "%")
        if status and status != "all":
            where.append("a.status = ?")
            args.append(status)
        if medical is not None:
            effective = "(a.medical = 1 OR (a.medical IS NULL AND a.tags LIKE '%\"medical-suggested\"%'))"
            where.append(effective if medical else f"NOT {effective}")
        if search and s.dialect == "postgresql":
            return self._search_postgresql(search, where, args, limit)
        elif search and len(search) >= 3:  # the trigram index needs three characters
            return self._search(search, where, args, limit)
        elif search:
            like = "%" + like_escaped(search) + "%"
            where.append("(a.title LIKE ? ESCAPE '\\' OR a.description LIKE ? ESCAPE '\\' "
                         "OR a.identifiers LIKE ? ESCAPE '\\')")
            args.extend([like, like, like])
        q = "SELECT a.* FROM advisories a"
        if s.dialect == "sqlite" and search:
            # Two characters: walk the date index newest first and probe them (bounded by the table
            # size), rather than fetch and sort every hit.
            q += " INDEXED BY advisories_status" if status and status != "all" else " INDEXED BY advisories_published"
        if where:
            q += " WHERE " + " AND ".join(where)
        q += f" ORDER BY a.published_utc DESC, a.{s.engine.rowid} DESC"
        if limit:
            q += " LIMIT ?"
            args.append(limit)
        return [decode(r) for r in s.rows(q, args)]

    def _search(self, text: str, where: list[str], args: list, limit: int | None) -> list[dict]:
        """Full-text search (SQLite), newest first: the index is keyed newest first (search_key),
        so its newest hits are read in growing batches, the other conditions applied to each, until
        `limit` rows pass; a search costs what it returns, not how many advisories match. A query
        with a number of four digits or more (an identifier) is looked up by that number first."""
        s = self.store
        match = '"' + text.replace('"', '""') + '"'
        cond = "".join(f" AND {w}" for w in where)
        anchored = self._anchored(text)
        if anchored is not None:
            out = []
            for chunk in chunks(anchored):
                out += s.rows(f"SELECT a.* FROM advisories a WHERE a.search_key IN ({marks(len(chunk))}){cond} "
                              "ORDER BY a.search_key DESC" + (" LIMIT ?" if limit else ""),
                              [*chunk, *args, *([limit - len(out)] if limit else [])])
                if limit and len(out) >= limit:
                    break
            return [decode(r) for r in out[:limit]]
        if not limit:
            return [decode(r) for r in s.rows(
                "SELECT a.* FROM advisories_fts f JOIN advisories a ON a.search_key = f.rowid "
                f"WHERE advisories_fts MATCH ?{cond} ORDER BY a.search_key DESC", [match, *args])]
        out: list[dict] = []
        below, batch = None, max(limit, 50)
        while len(out) < limit:
            keys = [k for (k,) in s.execute(
                "SELECT rowid FROM advisories_fts WHERE advisories_fts MATCH ?"
                + (" AND rowid < ?" if below is not None else "") + " ORDER BY rowid DESC LIMIT ?",
                [match, *([below] if below is not None else []), batch])]
            if keys:
                out += s.rows(f"SELECT a.* FROM advisories a WHERE a.search_key IN ({marks(len(keys))}){cond} "
                              "ORDER BY a.search_key DESC", [*keys, *args])
            if len(keys) < batch:
                break
            below, batch = keys[-1], min(batch * 4, 5000)
        return [decode(r) for r in out[:limit]]

    def _search_postgresql(self, text: str, where: list[str], args: list, limit: int | None) -> list[dict]:
        """Search (PostgreSQL), newest first, in the lowercased text of advisory_search
        (schema.POSTGRES_SEARCH). First the newest advisories that meet the other conditions are
        looked at in order, each one's text read by its key: a common word is in enough of them
        (a few hundred rows, whatever the table's size). Otherwise the trigram index finds every
        hit and, when nothing else is asked, picks the newest in the search table itself, so only
        those are read from advisories. The planner, with the table's statistics (VACUUM (ANALYZE)
        after a large ingest: Store.checkpoint), chooses between the index and a scan of the text
        (a byte comparison, fast; a word with common trigrams such as cve-2099-… costs the index
        more). One query over both, as before, cost 10 to 60 ms at 10,000 advisories."""
        s = self.store
        pattern = "%" + like_escaped(text.translate(ASCII_LOWER)) + "%"
        cond = " AND ".join(where)
        order = " ORDER BY a.published_utc DESC, a.seq DESC"
        # A query with a long number (a CVE or JVNDB id) is rare: straight to the index.
        if limit and not re.search(r"\d{4}", text):
            newest = f"SELECT * FROM advisories a{' WHERE ' + cond if cond else ''}{order} LIMIT ?"
            rows = s.rows(f"SELECT a.* FROM ({newest}) a WHERE (SELECT text FROM advisory_search "
                          f"WHERE advisory = a.id) LIKE ? ESCAPE '\\'{order} LIMIT ?",
                          [*args, max(4 * limit, 200), pattern, limit])
            if len(rows) >= limit:  # the newest `limit` hits of all: every other advisory is older
                return [decode(r) for r in rows]
        hits, more = "SELECT advisory FROM advisory_search WHERE text LIKE ? ESCAPE '\\'", [pattern]
        if limit and not cond:
            hits += " ORDER BY published_utc DESC, seq DESC LIMIT ?"
            more.append(limit)
        q = (f"WITH hits AS MATERIALIZED ({hits}) SELECT a.* FROM advisories a JOIN hits ON hits.advisory = a.id"
             + (f" WHERE {cond}" if cond else "") + order + (" LIMIT ?" if limit else ""))
        return [decode(r) for r in s.rows(q, [*more, *args, *([limit] if limit else [])])]

    def _anchored(self, text: str, most: int = 2000) -> list[int] | None:
        """The keys of the advisories containing `text`, newest first, found through its longest
        number (four digits or more: a CVE or JVNDB id) and checked by substring; None when the
        query has no such number or the number is too common to help (a phrase of common trigrams
        like CVE-, -20 costs FTS5 tens of milliseconds to walk; the number alone, one)."""
        numbers = re.findall(r"\d{4,}", text)
        if not numbers:
            return None
        anchor = max(numbers, key=len)
        keys = [k for (k,) in self.store.execute(
            "SELECT rowid FROM advisories_fts WHERE advisories_fts MATCH ? ORDER BY rowid DESC LIMIT ?",
            (f'"{anchor}"', most + 1))]
        if len(keys) > most:
            return None
        low, found = text.lower(), []
        for chunk in chunks(keys):
            found += [k for k, *cols in self.store.execute(
                f"SELECT search_key, title, description, identifiers FROM advisories WHERE search_key IN "
                f"({marks(len(chunk))})", chunk) if any(low in (c or "").lower() for c in cols)]
        return sorted(found, reverse=True)


def search_words(text: str) -> str:
    """A search's text as both engines look for it: tabs and line breaks as spaces (a pasted line
    break would otherwise meet PostgreSQL's separator between title and description, and SQLite's
    own, differently). A NUL or other control character, which no stored text holds (PostgreSQL
    refuses NUL outright, SQLite ends the pattern there and matched everything), is refused."""
    text = re.sub(r"[\t\n\r\v\f]", " ", text)
    bad = re.search(r"[\x00-\x1f\x7f]", text)
    if bad:
        raise CeptoarError(f"the search text holds a control character (U+{ord(bad.group()):04X}); "
                           "search for words")
    return text


def ids_by_prefix(store, table: str, stix_type: str, ref: str) -> list[str]:
    """At most two ids of `table` whose UUID starts with the given part of `ref` (a full STIX id
    or a bare UUID prefix): one means a unique match."""
    key = (ref.split("--", 1)[1] if "--" in ref else ref).lower()
    low = f"{stix_type}--{key}"
    # Both engines compare these ids byte by byte (SQLite's BINARY, PostgreSQL's "C"): the largest
    # code point sorts after every id that starts with the prefix.
    return [i for (i,) in store.execute(
        f"SELECT id FROM {table} WHERE id >= ? AND id < ? ORDER BY id LIMIT 2", (low, low + "\U0010ffff"))]
