"""SQLite and PostgreSQL side by side, in one run on one machine: ingest, search (Japanese too),
publish, TAXII pages under gunicorn, and a digest run to a local SMTP sink.

PostgreSQL: a server started from Debian's package in a temporary folder (as the tests do), or
`--pg-url postgresql://…` for one of your own. Writes the "Engines side by side" section of
BENCHMARKS.md unless --no-write.

    .venv/bin/python -m bench.engines [--advisories 10000] [--subscribers 2000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, median_ms, write_section  # noqa: E402
from bench.digest import SINK  # noqa: E402
from bench.ingest import big_jvn_feed  # noqa: E402
from ceptoar.clinics.digest.delivery import SmtpConfig, run_digest  # noqa: E402
from ceptoar.core.model import Source  # noqa: E402
from ceptoar.pipeline import ingest_bytes  # noqa: E402
from ceptoar.publishing import collections as colls  # noqa: E402
from ceptoar.publishing import triage  # noqa: E402
from ceptoar.sharing import members  # noqa: E402
from ceptoar.store import Store  # noqa: E402
from tests.postgres import PostgresServer, binaries, free_port  # noqa: E402

SEARCHES = [("rare Japanese word", "コレガ"), ("product name", "WP All Import"), ("CVE id", "CVE-2099-1000400"),
            ("common Japanese word", "クロスサイト"), ("two characters (no trigram)", "脆弱")]
TAXII = "application/taxii+json;version=2.1"


def measure(target: str, n: int, subscribers: int, repeat: int) -> dict[str, float]:
    out: dict[str, float] = {}
    store = Store(target)
    store.migrate()
    store.sources.upsert({"id": "jvndb", "kind": "jvn", "url": "https://jvndb.example/", "name": "JVN"})
    source = Source(id="jvndb", kind="jvn", name="JVN iPedia")
    feed = big_jvn_feed(n)
    t = time.perf_counter()
    res = ingest_bytes(store, source, feed)
    out["ingest (advisories/s)"] = res.new / (time.perf_counter() - t)
    t = time.perf_counter()
    again = ingest_bytes(store, source, feed)
    out["re-ingest, nothing new (advisories/s)"] = again.unchanged / (time.perf_counter() - t)
    for label, q in SEARCHES:
        out[f"search: {label} (ms)"] = median_ms(
            lambda q=q: store.advisories.list(search=q, status="all", limit=50), repeat)
    colls.add(store, "all", "All", "tlp <= RED")
    ids = [a["id"] for a in store.advisories.list(status="new", limit=2000)]
    t = time.perf_counter()
    triage.publish(store, ids, "bench")
    out["publish (advisories/s)"] = len(ids) / (time.perf_counter() - t)
    store.checkpoint()  # as after a large ingest (PostgreSQL: VACUUM (ANALYZE), as autovacuum soon would)
    members.add(store, "bench", "bench", "RED")
    members.grant(store, "bench", "all", True, False)
    secret = members.new_secret(store, "bench")
    out.update(taxii_pages(target, store, secret, repeat))
    out.update(digest(target, store, subscribers))
    out.update(matching(store, ids[:200], repeat))
    store.close()
    return out


def matching(store: Store, published: list[str], repeat: int, facilities: int = 2000) -> dict[str, float]:
    """Registers matched against the published advisories: 2,000 facilities × 20 rows loaded in bulk
    (bench.digest's loader), then matching one advisory, importing one register, reading one
    facility's matches."""
    import statistics

    from bench.digest import registers_for
    from ceptoar.facilities import registers

    registers_for(store, published, facilities)
    out = {}
    times = []
    for aid in published[:repeat * 3]:
        t = time.perf_counter()
        with store.transaction():
            registers.match_advisory(store, aid)
        times.append((time.perf_counter() - t) * 1000)
    out["matching: one advisory against every register (ms)"] = statistics.median(times)
    csv = "category,vendor,product,version\n" + "".join(f"その他,Vendor{i:03d},Product {i:04d},1.0\n"
                                                         for i in range(20))
    out["matching: inventory import of a 20-row register (ms)"] = median_ms(
        lambda: registers.import_register(store, "f000001", csv, "bench"), repeat)
    out["matching: one facility's matches read (ms)"] = median_ms(
        lambda: store.facilities.matches(facility="f000002"), repeat)
    return out


def taxii_pages(target: str, store: Store, secret: str, repeat: int) -> dict[str, float]:
    port = free_port()
    env = dict(os.environ, CEPTOAR_DB=target, CEPTOAR_TAXII_BIND=f"127.0.0.1:{port}", CEPTOAR_TAXII_WORKERS="2")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c",
                             str(ROOT / "taxii_server/gunicorn.conf.py")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    session = requests.Session()
    session.headers.update({"Accept": TAXII, "Authorization": "Basic " + base64.b64encode(
        f"bench:{secret}".encode()).decode()})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                session.get(base + "/taxii2/", timeout=5)
                break
            except (requests.ConnectionError, requests.Timeout):  # still starting (a busy machine)
                time.sleep(0.1)
        uuid = store.collections.get("all")["uuid"]
        url = f"{base}/ceptoar/collections/{uuid}/objects/"
        first = session.get(url, params={"limit": 100}).json()
        token = first.get("next")
        for _ in range(5):
            token = session.get(url, params={"limit": 100, "next": token}).json().get("next") or token
        return {"TAXII first page of 100 (ms)": median_ms(lambda: session.get(url, params={"limit": 100}), repeat),
                "TAXII 7th page of 100 (ms)": median_ms(
                    lambda: session.get(url, params={"limit": 100, "next": token}), repeat),
                "TAXII manifest page of 100 (ms)": median_ms(
                    lambda: session.get(url.replace("objects/", "manifest/"), params={"limit": 100}), repeat)}
    finally:
        proc.terminate()
        proc.wait(10)


def digest(target: str, store: Store, subscribers: int) -> dict[str, float]:
    with store.transaction():
        for i in range(subscribers):
            store.subscribers.upsert({"email": f"clinic{i:06d}@assoc.example.jp", "name": f"診療所 {i}",
                                      "member": "bench", "frequency": "daily", "clearance": "RED",
                                      "lang": "ja", "token": None})
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert sink.stdout.readline().strip() == "ready"
    try:
        t = time.perf_counter()
        res = run_digest(store, "daily", smtp=SmtpConfig("127.0.0.1", port))
        elapsed = time.perf_counter() - t
    finally:
        sink.communicate("", timeout=30)
    assert res.sent == subscribers, res
    return {"digest (messages/s)": res.sent / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--advisories", type=int, default=10000)
    ap.add_argument("--subscribers", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--pg-url", help="a PostgreSQL database of your own (default: a server started here)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    server = None
    if args.pg_url:
        pg = args.pg_url
    else:
        bindir = binaries()
        if bindir is None:
            sys.exit("PostgreSQL server binaries not found: install Debian's postgresql, or give --pg-url")
        server = PostgresServer(bindir).start()
        pg = server.database()
    try:
        import psycopg

        with psycopg.connect(pg) as conn:
            version = "PostgreSQL " + conn.execute("SHOW server_version").fetchone()[0].split()[0]
        with tempfile.TemporaryDirectory() as tmp:
            results = {}
            for engine, target in (("SQLite", str(Path(tmp) / "bench.db")), ("PostgreSQL", pg)):
                print(f"{engine}…", file=sys.stderr)
                results[engine] = measure(target, args.advisories, args.subscribers, args.repeat)
    finally:
        if server:
            server.stop()
    rows = ["| measure | SQLite | PostgreSQL | PostgreSQL / SQLite |", "|---|---:|---:|---:|"]
    for key in results["SQLite"]:
        a, b = results["SQLite"][key], results["PostgreSQL"][key]
        rows.append(f"| {key} | {a:,.1f} | {b:,.1f} | {b / a:.2f}× |")
    body = (f"{args.advisories:,} JVN advisories (2,000 of them published: each digest message lists all "
            f"2,000, which is why it is slow on both), {args.subscribers:,} subscribers, medians of {args.repeat}; "
            f"{version} on the same machine (fsync off when started here, as in the tests: a server of your own "
            "with durable commits writes slower). Search on PostgreSQL: a pg_trgm GIN index (pg_bigm and "
            "PGroonga are not in Debian's packages).\n\n" + "\n".join(rows))
    print(body)
    if not args.no_write:
        write_section("Engines side by side", f"python -m bench.engines --advisories {args.advisories} "
                      f"--subscribers {args.subscribers} --repeat {args.repeat}", body)


if __name__ == "__main__":
    main()
