"""Bulk publish: 5,000 advisories published at once (a backfill: a year of JVN, the KEV catalogue),
with their collections (the default ones), pins and register matches in a world of 1,000 facilities
with 20-row registers, one row in twenty naming a product the advisories affect.

    .venv/bin/python -m bench.publish [--advisories 5000] [--facilities 1000] [--sqlite-only] [--profile]

Reports, on SQLite and on PostgreSQL (a server started from Debian's package in a temporary folder,
as the tests do), advisories/s and the peak of memory the publish allocated (tracemalloc) for two
sizes of publish, so that memory flat in the size shows; writes the "Bulk publish" section of
BENCHMARKS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_section  # noqa: E402
from bench.ingest import big_jvn_feed  # noqa: E402
from ceptoar.core.model import Source, source_origin  # noqa: E402
from ceptoar.core.paths import project_file  # noqa: E402
from ceptoar.facilities import matching, registers  # noqa: E402
from ceptoar.pipeline import ingest_bytes  # noqa: E402
from ceptoar.publishing import collections as colls  # noqa: E402
from ceptoar.publishing import triage  # noqa: E402
from ceptoar.store import Store  # noqa: E402
from tests.postgres import PostgresServer, binaries  # noqa: E402


def world(target: str, n: int, facilities: int) -> tuple[Store, list[str]]:
    store = Store(target)
    store.migrate()
    for c in colls.load_defaults(project_file("taxii_server/collections.toml")):
        colls.add(store, c["id"], c["title"], c["filter"], description=c.get("description"))
    store.execute("INSERT INTO members (id, name, clearance, created) VALUES ('jma', 'JMA', 'GREEN', '2026-12-01') "
                  "ON CONFLICT DO NOTHING")
    store.sources.upsert({"id": "jvndb", "kind": "jvn", "url": "https://jvndb.example/", "name": "JVN"})
    ingest_bytes(store, Source(id="jvndb", kind="jvn", name="JVN iPedia"), big_jvn_feed(n))
    ids = [a["id"] for a in store.advisories.list(status="new", limit=n)]
    origin = source_origin("jvndb")
    named = []
    for a in store.advisories.list(status="new", limit=n)[:500]:
        v = store.objects.latest([a["source_report"]], origin)[a["source_report"]]
        named += [(x.vendor or "", x.product, "") for x in matching.affected_of(v.obj)][:2]
    rng = random.Random(7)
    text = "facility_id,name,facility_type,prefecture,member\n" + "".join(
        f"f{i:05d},診療所{i},clinic,東京都,jma\n" for i in range(facilities))
    registers.import_facilities(store, text, "bench")
    for i in range(facilities):
        rows = []
        for _ in range(20):
            vendor, product, version = rng.choice(named) if rng.random() < 0.05 else (
                f"Vendor{rng.randrange(300):03d}", f"Product {rng.randrange(3000):04d}", "1.0")
            rows.append(f"その他,{vendor},{product},{version}")
        registers.import_register(store, f"f{i:05d}", "category,vendor,product,version\n" + "\n".join(rows) + "\n",
                                  "bench")
    return store, ids


def run(target: str, n: int, facilities: int, profile: bool) -> dict[str, float]:
    store, ids = world(target, n, facilities)
    tracemalloc.start()
    prof = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if prof:
        prof.enable()
    triage.publish(store, ids, "bench")
    if prof:
        prof.disable()
    elapsed = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
    matches = store.scalar("SELECT COUNT(*) FROM matches")
    placed = store.scalar("SELECT COUNT(*) FROM membership")
    store.close()
    return {"advisories/s": n / elapsed, "seconds": elapsed, "peak MiB": peak / 2 ** 20, "matches": matches,
            "placements": placed}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--advisories", type=int, default=5000)
    ap.add_argument("--facilities", type=int, default=1000)
    ap.add_argument("--sqlite-only", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    server = None
    if not args.sqlite_only:
        bindir = binaries()
        if bindir is None:
            sys.exit("PostgreSQL server binaries not found: install Debian's postgresql, or give --sqlite-only")
        server = PostgresServer(bindir).start()
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for engine in ("SQLite", "PostgreSQL") if server else ("SQLite",):
                for n in (args.advisories // 5, args.advisories):
                    target = server.database() if engine == "PostgreSQL" else str(Path(tmp) / f"publish-{n}.db")
                    results[(engine, n)] = run(target, n, args.facilities, args.profile and n == args.advisories)
                    print(engine, n, results[(engine, n)], file=sys.stderr)
    finally:
        if server:
            server.stop()
    rows = ["| engine | advisories published at once | advisories/s | seconds | peak MiB (tracemalloc) | matches "
            "| placements |", "|---|---:|---:|---:|---:|---:|---:|"]
    rows += [f"| {e} | {n:,} | {r['advisories/s']:,.0f} | {r['seconds']:.2f} | {r['peak MiB']:.1f} | "
             f"{r['matches']:,} | {r['placements']:,} |" for (e, n), r in results.items()]
    body = (f"The default collections, {args.facilities:,} facilities × 20 register rows (one in twenty naming a "
            "product the advisories affect); JVN advisories ingested first, then all published by one "
            "`triage.publish` (batches of 500, one transaction each). PostgreSQL 15 on the same machine, fsync "
            "off as in the tests.\n\n" + "\n".join(rows))
    print(body)
    if not args.no_write:
        write_section("Bulk publish", f"python -m bench.publish --advisories {args.advisories} "
                      f"--facilities {args.facilities}", body)


if __name__ == "__main__":
    main()
