"""Triage at scale: search latency over 200,000 advisories, and publish throughput into the
default collections.

    python bench/triage.py [--advisories 200000] [--publish 5000]

The database is built once (cached under /tmp) through the normal ingest path from JVN items of
the real format; each search runs 20 times, p50 and p95 reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_section  # noqa: E402
from bench.ingest import big_jvn_feed  # noqa: E402
from ceptoar.core.model import Source  # noqa: E402
from ceptoar.core.paths import project_file  # noqa: E402
from ceptoar.pipeline import ingest_bytes  # noqa: E402
from ceptoar.publishing import collections as colls  # noqa: E402
from ceptoar.publishing import triage  # noqa: E402
from ceptoar.store import Store  # noqa: E402

QUERIES = [
    ("rare Japanese word", "コレガ"),
    ("product name", "WP All Import"),
    ("CVE id", "CVE-2099-1000400"),
    ("JVNDB id", "JVNDB-2099-123456"),
    ("common Japanese word", "クロスサイト"),
    ("two characters (no trigram: scan)", "脆弱"),
]


def build(path: Path, n: int) -> Store:
    store = Store(path)
    store.migrate()
    if store.count("advisories") >= n:
        return store
    step = 25000
    done = store.count("advisories")
    source = Source(id="jvndb", kind="jvn", name="JVN iPedia")
    store.sources.upsert({"id": "jvndb", "kind": "jvn", "url": "https://jvndb.example/", "name": "JVN"})
    for start in range(done, n, step):
        feed = big_jvn_feed(min(step, n - start), offset=start)
        ingest_bytes(store, source, feed)
        print(f"  built {start + step:,} advisories", file=sys.stderr)
    for c in colls.load_defaults(project_file("taxii_server/collections.toml")):
        with store.transaction():
            store.collections.upsert(c)
    return store


def timed(fn, repeat: int = 20) -> tuple[float, float, int]:
    times, n = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = len(fn())
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--advisories", type=int, default=200_000)
    ap.add_argument("--publish", type=int, default=5000)
    ap.add_argument("--db", default=str(Path(tempfile.gettempdir()) / "ceptoar-bench-triage.db"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    store = build(Path(args.db), args.advisories)
    total = store.count("advisories")
    lines = [f"Search over {total:,} advisories (`advisories list --search TEXT --limit 50`, newest first):", "",
             "| query | text | matches returned | p50 ms | p95 ms |", "|---|---|---:|---:|---:|"]
    for label, text in QUERIES:
        p50, p95, n = timed(lambda text=text: store.advisories.list(search=text, status="all", limit=50))
        lines.append(f"| {label} | `{text}` | {n} | {p50:.1f} | {p95:.1f} |")
    p50, p95, n = timed(lambda: store.advisories.list(status="new", limit=50))
    lines.append(f"| triage queue, no search | (status new) | {n} | {p50:.1f} | {p95:.1f} |")

    # Publish throughput: the next N unpublished advisories, one transaction per 500.
    ids = [r["id"] for r in store.advisories.list(status="new", limit=args.publish)]
    for i in range(0, len(ids), 500):  # give some a severity so several collections take them
        with store.transaction():
            for aid in ids[i:i + 500:3]:
                store.advisories.decide(aid, severity="high")
    t = time.perf_counter()
    placed = 0
    for i in range(0, len(ids), 500):
        placed += sum(len(r["collections"]) for r in triage.publish(store, ids[i:i + 500], "bench"))
    elapsed = time.perf_counter() - t
    lines += ["", f"Publish: {len(ids):,} advisories into {len(store.collections.list(counts=False))} collections "
                  f"({placed:,} placements) in {elapsed:.1f} s: **{len(ids) / elapsed:,.0f} advisories/s**.",
              "", "Target: every query shape ≤ 10 ms p50 and ≤ 25 ms p95 over 200,000 advisories, newest first."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("Triage: search and publish",
                      f"python bench/triage.py --advisories {args.advisories} --publish {args.publish}", body)


if __name__ == "__main__":
    main()
