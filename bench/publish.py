"""Bulk publish: 5,000 advisories published at once (a backfill: a year of JVN, the KEV catalogue),
with their collections (the default ones), pins and register matches in a world of 1,000 facilities
with 20-row registers, one row in twenty naming a product the advisories affect.

    .venv/bin/python -m bench.publish [--advisories 5000] [--facilities 1000] [--repeat 3] [--sqlite-only] [--profile]

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
import shutil
import statistics
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
from ceptoar.store.engines import close_pools  # noqa: E402
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


def _publish(target: str, ids: list[str], trace: bool, profile: bool) -> tuple[float, float]:
    """One publish of every advisory on a freshly opened store (as `advisories publish` runs, in a
    process of its own after the ingest): seconds taken, and with `trace` the peak tracemalloc saw
    (tracemalloc slows Python's allocations about threefold, so a traced run is never timed)."""
    store = Store(target)
    if trace:
        tracemalloc.start()
    prof = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if prof:
        prof.enable()
    triage.publish(store, ids, "bench")
    if prof:
        prof.disable()
    elapsed = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    tracemalloc.stop()
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
    store.close()
    return elapsed, peak


def run(copy, n: int, facilities: int, repeat: int, profile: bool) -> dict[str, float]:
    """The world built once, then published `repeat` times, each on a fresh copy of it (`copy(k)`
    gives the copy's target), timed: the median counts. One more copy is published traced, for memory."""
    store, ids = world(copy(None), n, facilities)
    store.close()
    close_pools()  # PostgreSQL: the world becomes the template of each copy, and nobody may be connected to it
    times = [_publish(copy(k), ids, False, profile and k == 0)[0] for k in range(repeat)]
    target = copy(repeat)
    _, peak = _publish(target, ids, True, False)
    store = Store(target)
    matches = store.scalar("SELECT COUNT(*) FROM matches")
    placed = store.scalar("SELECT COUNT(*) FROM membership")
    store.close()
    elapsed = statistics.median(times)
    return {"advisories/s": n / elapsed, "seconds": elapsed, "slowest": max(times), "peak MiB": peak / 2 ** 20,
            "matches": matches, "placements": placed}


def copier(engine: str, server: PostgresServer | None, folder: str, n: int):
    """copy(None): the world's target; copy(k): a new copy of it (a file, or a database made from it
    as a template)."""
    if engine == "PostgreSQL":
        base = server.database()

        def copy(k):
            return base if k is None else server.database(template=base.rsplit("/", 1)[1])
    else:
        base = str(Path(folder) / f"publish-{n}.db")

        def copy(k):
            if k is None:
                return base
            shutil.copyfile(base, f"{base}-{k}")
            return f"{base}-{k}"
    return copy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--advisories", type=int, default=5000)
    ap.add_argument("--facilities", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
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
                    results[(engine, n)] = run(copier(engine, server, tmp, n), n, args.facilities, args.repeat,
                                               args.profile and n == args.advisories)
                    print(engine, n, results[(engine, n)], file=sys.stderr)
    finally:
        if server:
            server.stop()
    rows = ["| engine | advisories published at once | advisories/s | seconds (median) | slowest | peak MiB "
            "(tracemalloc) | matches | placements |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows += [f"| {e} | {n:,} | {r['advisories/s']:,.0f} | {r['seconds']:.2f} | {r['slowest']:.2f} | "
             f"{r['peak MiB']:.1f} | {r['matches']:,} | {r['placements']:,} |" for (e, n), r in results.items()]
    body = (f"The default collections, {args.facilities:,} facilities × 20 register rows (one in twenty naming a "
            "product the advisories affect); JVN advisories ingested first, then all published by one "
            "`triage.publish` (batches of 500, one transaction each) on a store opened afresh, as the command "
            f"runs, each time on a fresh copy of the same world: the median of {args.repeat}. Timed without "
            "tracemalloc (it slows allocation about threefold); the peak comes from one more, traced publish of a "
            "copy. PostgreSQL 15 on the same machine, fsync "
            "off as in the tests.\n\n" + "\n".join(rows))
    print(body)
    if not args.no_write:
        write_section("Bulk publish", f"python -m bench.publish --advisories {args.advisories} "
                      f"--facilities {args.facilities} --repeat {args.repeat}", body)


if __name__ == "__main__":
    main()
