"""EPSS scores: each CVE's newest probability of exploitation in the next 30 days and its percentile
(FIRST's daily file, through a source of kind `epss`), and each advisory's highest over its CVEs."""

from __future__ import annotations

from collections.abc import Iterable

from ceptoar.store.base import Repository, chunks, marks, utcnow

BATCH = 5000  # rows written at a time: the daily file is read as a stream, never held whole


class Epss(Repository):
    def put(self, rows: Iterable[tuple[str, float, float]], score_date: str | None, model: str | None,
            source: str) -> int:
        """(CVE, probability, percentile) rows of one file, in the caller's transaction; a CVE's score
        of a later date than this file's stands. Returns how many rows were written."""
        now, n, batch = utcnow(), 0, []
        sql = ("INSERT INTO epss (cve, epss, percentile, score_date, model, source, updated) "
               "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cve) DO UPDATE SET epss = excluded.epss, "
               "percentile = excluded.percentile, score_date = excluded.score_date, model = excluded.model, "
               "source = excluded.source, updated = excluded.updated "
               "WHERE epss.score_date IS NULL OR excluded.score_date IS NULL OR excluded.score_date >= epss.score_date")
        for cve, p, pct in rows:
            batch.append((cve, p, pct, score_date, model, source, now))
            if len(batch) >= BATCH:
                self.store.executemany(sql, batch)
                n, batch = n + len(batch), []
        if batch:
            self.store.executemany(sql, batch)
            n += len(batch)
        return n

    def of(self, cves: list[str]) -> dict[str, dict]:
        out = {}
        for chunk in chunks(sorted(set(cves))):
            for r in self.store.rows(f"SELECT cve, epss, percentile, score_date FROM epss WHERE cve IN "
                                     f"({marks(len(chunk))})", chunk):
                out[r["cve"]] = r
        return out

    def refresh(self, advisory_ids: list[str] | None = None) -> None:
        """Each advisory's highest EPSS probability over its CVEs (and that CVE's percentile): for
        these advisories, or all of them."""
        best = ("(SELECT MAX(e.epss) FROM epss e JOIN advisory_cves c ON c.cve = e.cve "
                "WHERE c.advisory = advisories.id)")
        rank = ("(SELECT e.percentile FROM epss e JOIN advisory_cves c ON c.cve = e.cve "
                "WHERE c.advisory = advisories.id ORDER BY e.epss DESC, e.percentile DESC LIMIT 1)")
        if advisory_ids is None:
            self.store.execute(f"UPDATE advisories SET epss = {best}, epss_percentile = {rank}")
            return
        # Only rows that have a score or may get one: an advisory none of whose CVEs is scored, and
        # that holds no score, would be rewritten as it is (every advisory of an ingest, on
        # PostgreSQL a new row version each).
        scored = ("(epss IS NOT NULL OR EXISTS (SELECT 1 FROM epss e JOIN advisory_cves c ON c.cve = e.cve "
                  "WHERE c.advisory = advisories.id))")
        for chunk in chunks(sorted(set(advisory_ids))):
            self.store.execute(f"UPDATE advisories SET epss = {best}, epss_percentile = {rank} "
                               f"WHERE id IN ({marks(len(chunk))}) AND {scored}", chunk)
