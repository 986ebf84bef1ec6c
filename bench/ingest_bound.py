"""What a 30,000-item JVN ingest costs per advisory now, against what it would cost if ingest kept
facts only: the measure behind issue 18's open question (5,000 advisories/s on two cores leaves
0.40 CPU ms per advisory for everything).

Both halves run in this one process, the cyclic collector paused as in the hub, on a fresh database:

- now: the JVN stream read, normalized and prepared (`ceptoar.ingest.entries.prepare`), then stored by
  `store_entries` in one transaction (object versions of the report and of the hub's vulnerability
  per CVE, ownership, advisory facts, CVE rows, raw entries, the search index);
- facts only: a design that does not exist. The same stream and item reader (`_rss_item` reads
  every field as it does now), but the item's facts go straight into an advisory row instead of
  STIX dicts (`advisory()` is replaced for the run), and the store writes the advisory rows, CVE
  rows, raw entries and search index only: no report or vulnerability object, no ownership rows.

    python bench/ingest_bound.py [--items 30000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_section  # noqa: E402
from bench.ingest import big_jvn_feed, cpu  # noqa: E402
from ceptoar.core.model import CVE_RE, Source, canonical_identifier, iso_original, stable_id, stix_time  # noqa: E402
from ceptoar.ingest import medical  # noqa: E402
from ceptoar.ingest.entries import NORMALIZER_VERSION, prepare, store_entries  # noqa: E402
from ceptoar.normalize import jvn  # noqa: E402
from ceptoar.normalize.kinds import STREAMS  # noqa: E402
from ceptoar.pipeline import paused_gc  # noqa: E402
from ceptoar.store import Store, utcnow  # noqa: E402


class Facts:
    """One item's facts, as the advisory row holds them."""

    __slots__ = ("key", "raw", "row")

    def __init__(self, key: str, raw: str, row: dict):
        self.key, self.raw, self.row = key, raw, row


def facts(source: Source, key: str, *, title: str, raw: str, description: str = "", published=None,
          modified=None, url=None, own_id=None, identifiers=(), cves=(), cvss=(), cpes=(), lang=None, tlp=None,
          extra=None, **_ignored) -> Facts:
    """Stands in for `ceptoar.normalize.advisory` during the facts-only run: the row, no STIX."""
    cves = list(dict.fromkeys(c.upper() for c in cves if CVE_RE.fullmatch(c)))
    own = [canonical_identifier(own_id)] if own_id else []
    scores = [c["score"] for c in cvss if c.get("score") is not None]
    products = [p.get("product") or "" for p in (extra or {}).get("products", [])]
    return Facts(key, raw, {
        "source": source.id, "entry_key": key, "source_report": stable_id("report", source.id, key),
        "title": title, "description": description,
        "published": iso_original(published) if published else None,
        "published_utc": stix_time(published) if published else None,
        "modified": iso_original(modified) if modified else None,
        "stix_modified": stix_time(modified) if modified else None, "url": url,
        "identifiers": list(dict.fromkeys(own + [i for i, _ in identifiers] + cves)), "cves": cves,
        "cvss": [{k: c.get(k) for k in ("version", "score", "severity", "vector")} for c in cvss],
        "cpes": list(dict.fromkeys(cpes)), "max_cvss": max(scores) if scores else None,
        "source_tlp": tlp or source.tlp, "lang": lang or source.lang,
        "medical_signals": medical.keyword_signals([title, description, *products])})


def fresh_store(tmp: str, name: str) -> Store:
    Store(Path(tmp) / name).migrate()
    return Store(Path(tmp) / name)


def now_path(body: bytes, source: Source, tmp: str) -> tuple[float, float]:
    c0 = cpu()
    entries = [prepare(e, source) for e in STREAMS["jvn"](body, source, None)]
    c1 = cpu()
    store = fresh_store(tmp, "now.db")
    c2 = cpu()
    with store.transaction():
        store_entries(store, source, entries)
    return c1 - c0, cpu() - c2


def facts_path(body: bytes, source: Source, tmp: str) -> tuple[float, float]:
    real = jvn.advisory
    jvn.advisory = facts
    try:
        c0 = cpu()
        items = list(STREAMS["jvn"](body, source, None))
        hashes = [hashlib.sha256((NORMALIZER_VERSION + f.raw).encode()).hexdigest() for f in items]
        c1 = cpu()
    finally:
        jvn.advisory = real
    store = fresh_store(tmp, "facts.db")
    c2 = cpu()
    now = utcnow()
    with store.transaction():
        rows = [dict(f.row, id=f.row["source_report"], updated_at=now, first_seen=now, _new=True,
                     auto_tags=[medical.TAG] if f.row["medical_signals"] else []) for f in items]
        store.advisories.write_facts(rows)
        store.advisories.write_cves([(c, r["id"]) for r in rows for c in r["cves"]], [])
        store.sources.write_raw([(source.id, f.key, h, f.row["stix_modified"], f.raw)
                                 for f, h in zip(items, hashes, strict=True)])
    return c1 - c0, cpu() - c2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=30000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    body = big_jvn_feed(args.items)
    source = Source(id="jvndb", kind="jvn", name="JVN")
    cores = len(os.sched_getaffinity(0))
    budget = cores / 5000 * 1000
    with paused_gc(), tempfile.TemporaryDirectory() as tmp:
        measured = {"now (STIX objects and their versions at ingest)": now_path(body, source, tmp),
                    "facts only (no STIX at ingest)": facts_path(body, source, tmp)}
    per = lambda s: s / args.items * 1000  # noqa: E731
    lines = ["| ingest keeps | read + normalize CPU ms/advisory | store CPU ms/advisory | total CPU ms/advisory "
             "| × the 5,000/s budget | one process, advisories/s | all cores, no overhead, advisories/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for label, (read, write) in measured.items():
        total = per(read + write)
        lines.append(f"| {label} | {per(read):.3f} | {per(write):.3f} | {total:.3f} | {total / budget:.2f} | "
                     f"{1000 / total:,.0f} | {cores * 1000 / total:,.0f} |")
    text = "\n".join(lines) + (
        f"\n\n{args.items:,} JVN items, one process, CPU time (user + system). The budget: {cores} cores at "
        f"5,000 advisories/s leave {budget:.2f} CPU ms per advisory for everything. \"All cores, no overhead\" "
        "is the ceiling if reading and storing split perfectly over every core (the hub's normalizing "
        "processes cost about a third more CPU than one process doing the same).")
    print(text)
    if not args.no_write:
        write_section("Ingest: what keeping facts only would allow",
                      f"python bench/ingest_bound.py --items {args.items}", text)


if __name__ == "__main__":
    main()
