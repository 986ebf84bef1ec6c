"""Matching advisories against facilities' registers at the scale of the sector: 120,000 facilities
× 20 rows against 200,000 advisories, on the embedded default (SQLite).

    python -m bench.matching [--facilities 120000] [--rows 20] [--advisories 200000] [--published 20000]

Registers are loaded in bulk (rows and product keys as `inventory import` writes them); `--published`
advisories are real (a KEV-format catalog ingested and published through the hub, which matches
each as it publishes), the rest are product keys in the index only (what a register import searches).
Products come from a vocabulary of 4,000 vendor/product pairs with a long tail: a few are in most
registers (an operating system), most in few. Measured, each on the full data:

- publishing: advisories/s through `triage.publish` (matching included), and `match_advisory`
  alone per advisory (p50/p95), for typical products and for the most widespread one;
- importing one facility's register (`inventory import`, matching included): p50/p95.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_section  # noqa: E402
from ceptoar.facilities import registers  # noqa: E402
from ceptoar.pipeline import ingest_bytes, source_of  # noqa: E402
from ceptoar.publishing import triage  # noqa: E402
from ceptoar.sharing import members  # noqa: E402
from ceptoar.store import Store  # noqa: E402
from ceptoar.store.registers import signature  # noqa: E402

VOCABULARY = 4000
CATEGORIES = ["電子カルテ", "PACS", "レセコン", "VPN装置", "ルータ", "ファイアウォール", "サーバOS", "端末OS",
              "医療機器"]


def vocabulary(rng: random.Random) -> list[tuple[str, str]]:
    vendors = [f"Vendor{v:03d}" for v in range(400)]
    return [(vendors[i % 400], f"Product {i:04d} {rng.choice(['Server', 'Viewer', 'Gateway', 'Suite'])}")
            for i in range(VOCABULARY)]


def pick(rng: random.Random, n: int) -> int:
    """A long tail: product i is chosen with weight ~ 1/(i+1)."""
    return min(int(n ** rng.random()) - 1, n - 1)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def load_registers(store: Store, facilities: int, rows: int, rng: random.Random, vocab: list[tuple[str, str]],
                   member: str = "jma") -> int:
    """`facilities` facilities of `member` with `rows` register rows each, in bulk (rows, profiles
    and product keys as `inventory import` writes them), inside the caller's transaction. Returns
    the number of profiles."""
    store.executemany("INSERT INTO facilities (id, name, facility_type, prefecture, member, phone, created, "
                      "updated) VALUES (?, ?, 'clinic', '東京都', ?, NULL, '2026-11-22', '2026-11-22')",
                      [(f"f{i:06d}", f"診療所{i}", member) for i in range(facilities)])
    batch_rows, profiles, profile_keys = [], {}, []
    for i in range(facilities):
        fid = f"f{i:06d}"
        for n in range(1, rows + 1):
            vendor, product = vocab[pick(rng, VOCABULARY)]
            row = {"n": n, "category": rng.choice(CATEGORIES), "vendor": vendor, "product": product,
                   "version": f"{rng.randint(1, 9)}.{rng.randint(0, 9)}", "cpe": None, "aliases": None,
                   "internet_exposed": rng.random() < 0.05, "remote_maintenance": rng.random() < 0.2}
            sig = signature(row)
            if sig not in profiles:  # what `inventory import` does, in bulk
                profiles[sig] = len(profiles) + 1
                profile_keys.extend((k, profiles[sig]) for k in registers.row_keys(row))
            batch_rows.append((fid, n, row["category"], vendor, product, row["version"],
                               int(row["internet_exposed"]), int(row["remote_maintenance"]), profiles[sig]))
        if len(batch_rows) >= 200000 or i == facilities - 1:
            store.executemany("INSERT INTO register_rows (facility, n, category, vendor, product, version, "
                              "internet_exposed, remote_maintenance, profile, added) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '2026-11-22')", batch_rows)
            batch_rows = []
    store.executemany("INSERT INTO row_profiles (seq, signature, vendor, product, version) VALUES (?, ?, ?, ?, ?)",
                      [(pid, sig, *json.loads(sig)[:3]) for sig, pid in profiles.items()])
    store.executemany("INSERT INTO profile_keys (product_key, profile) VALUES (?, ?) ON CONFLICT DO NOTHING",
                      profile_keys)
    return len(profiles)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--facilities", type=int, default=120000)
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--advisories", type=int, default=200000)
    ap.add_argument("--published", type=int, default=20000)
    ap.add_argument("--write", action="store_true", help="Write the figures into BENCHMARKS.md.")
    args = ap.parse_args()
    rng = random.Random(7)
    vocab = vocabulary(rng)
    tmp = Path(tempfile.mkdtemp(prefix="ceptoar-bench-matching-"))
    store = Store(tmp / "hub.db")
    store.migrate()
    members.add(store, "jma", "日本医師会", "GREEN")

    t = time.perf_counter()
    with store.transaction():
        n_profiles = load_registers(store, args.facilities, args.rows, rng, vocab)
        # The index of the advisories that are not published here (their keys only).
        extra, affected = [], []
        for a in range(args.advisories - args.published):
            vendor, product = vocab[pick(rng, VOCABULARY)]
            extra.append((f"report--bench-{a:06d}", registers.matching.product_key(product, vendor)))
            affected.append((f"report--bench-{a:06d}", json.dumps([{"vendor": vendor, "product": product,
                                                                     "ranges": None, "via": "kev"}])))
        store.executemany("INSERT INTO advisory_products (advisory, product_key) VALUES (?, ?) "
                          "ON CONFLICT DO NOTHING", extra)
        store.executemany("INSERT INTO advisory_affected (advisory, affected) VALUES (?, ?)", affected)
    load_s = time.perf_counter() - t
    print(f"loaded {args.facilities} registers × {args.rows} rows and {len(extra)} advisory keys in {load_s:.0f} s",
          flush=True)

    # Real advisories: a KEV-format catalog, ingested, then published (each matched as it is).
    catalog = {"vulnerabilities": []}
    for a in range(args.published + 2000):
        vendor, product = vocab[pick(rng, VOCABULARY)]
        catalog["vulnerabilities"].append({
            "cveID": f"CVE-2099-{a + 10000}", "vendorProject": vendor, "product": product,
            "vulnerabilityName": f"{vendor} {product} Vulnerability", "dateAdded": "2026-11-01",
            "shortDescription": "bench", "requiredAction": "Apply updates per vendor instructions.",
            "dueDate": "2026-12-01", "knownRansomwareCampaignUse": "Unknown", "notes": "", "cwes": []})
    store.sources.upsert({"id": "kev", "kind": "kev", "url": "https://example.invalid/kev", "name": "KEV",
                          "tlp": "CLEAR", "lang": "en", "enabled": True})
    ingest_bytes(store, source_of(store.sources.get("kev")), json.dumps(catalog).encode())
    ids = [a for (a,) in store.execute("SELECT id FROM advisories ORDER BY entry_key")]
    t = time.perf_counter()
    for i in range(0, args.published, 500):
        triage.publish(store, ids[i:i + 500], "bench")
    publish_s = time.perf_counter() - t
    print(f"published {args.published} advisories (matching included) in {publish_s:.0f} s", flush=True)

    # Publishing one more advisory: matching alone, typical products and the most widespread one.
    later = ids[args.published:]
    t = time.perf_counter()
    triage.publish(store, later[:1000], "bench")
    publish_more_s = time.perf_counter() - t
    per_match = []
    for aid in later[:1000]:
        t = time.perf_counter()
        with store.transaction():
            registers.match_advisory(store, aid)
        per_match.append((time.perf_counter() - t) * 1000)
    vendor, product = vocab[0]
    facilities_with = store.scalar("SELECT COUNT(DISTINCT r.facility) FROM profile_keys k JOIN register_rows r "
                                   "ON r.profile = k.profile WHERE k.product_key = ?",
                                   (registers.matching.product_key(product, vendor),))

    # The targeted alerts of urgent advisories: their facilities are found when the alerts are sent,
    # not when the advisory is published. Every advisory here is KEV-listed (urgent), far more than a
    # day brings: the alerts of 200 of them are found (the rest of the queue set aside).
    queued = store.count("alert_queue")
    store.execute("DELETE FROM alert_queue WHERE advisory NOT IN "
                  "(SELECT advisory FROM alert_queue ORDER BY queued, advisory LIMIT 200)")
    t = time.perf_counter()
    with store.transaction():
        expanded = store.facilities.expand_targeted()
    expand_s = time.perf_counter() - t
    alerts = store.count("targeted_alerts")

    # One facility's register imported (matching included), against the whole index.
    imports = []
    for i in range(200):
        rows = ["category,vendor,product,version,internet_exposed,remote_maintenance"]
        for _n in range(args.rows):
            v, p = vocab[pick(rng, VOCABULARY)]
            rows.append(f"PACS,{v},{p},{rng.randint(1, 9)}.{rng.randint(0, 9)},no,no")
        t = time.perf_counter()
        registers.import_register(store, f"f{i:06d}", "\n".join(rows) + "\n", "bench")
        imports.append((time.perf_counter() - t) * 1000)
    # (facility, advisory, row) triples the stored matches stand for: each profile's match counts
    # once per register row of that profile (a DISTINCT over facilities would take minutes here).
    matches = store.scalar("SELECT SUM(r.c) FROM matches m JOIN (SELECT profile, COUNT(*) AS c FROM register_rows "
                           "GROUP BY profile) r ON r.profile = m.profile")
    stored = store.count("matches")
    widest_id = max(later[:1000], key=lambda a: store.facilities.count_matches(advisory=a))
    t = time.perf_counter()
    widest = store.facilities.matches(advisory=widest_id)
    read_widest_ms = (time.perf_counter() - t) * 1000
    reads = []
    for i in range(200, 400):
        t = time.perf_counter()
        store.facilities.matches(facility=f"f{i:06d}")
        reads.append((time.perf_counter() - t) * 1000)
    body = f"""
{args.facilities:,} facilities × {args.rows} rows ({args.facilities * args.rows:,} register rows) against
{args.advisories:,} advisories ({args.published + 1000:,} published through the hub, the rest in the
matching index only: their product keys and products); products from {VOCABULARY:,} vendor/product pairs
with a long tail (the most widespread is in {facilities_with:,} registers), each row at one of 90 versions.
{n_profiles:,} profiles (distinct rows as matching sees them: vendor, product, version, CPE, aliases);
{stored:,} stored (profile, advisory) matches standing for {matches:,} (facility, advisory, row) matches.

| operation (full data) | figure |
|---|---:|
| publish with matching, first {args.published:,} advisories | {args.published / publish_s:,.0f} advisories/s |
| publish with matching, 1,000 more | {1000 / publish_more_s:,.0f} advisories/s |
| `match_advisory` alone, p50 / p95 | {statistics.median(per_match):.1f} / {percentile(per_match, 0.95):.1f} ms |
| `match_advisory` alone, slowest (a widespread product) | {max(per_match):.0f} ms |
| `inventory import` of a {args.rows}-row register, p50 / p95 | {statistics.median(imports):.1f} / \
{percentile(imports, 0.95):.1f} ms |
| a facility's matches read (its digest block, `matches list --facility`), p50 / p95 | \
{statistics.median(reads):.1f} / {percentile(reads, 0.95):.1f} ms |
| targeted alerts found at sending time: {alerts:,} (facility, advisory) alerts of {expanded:,} advisories \
(of {queued:,} queued) | {expand_s:.1f} s ({alerts / expand_s:,.0f} alerts/s) |
| the widest advisory's matches read ({len(widest):,} facility rows: a summary) | {read_widest_ms:.0f} ms |

Both directions are incremental and follow distinct rows, not facilities: publishing matches that
advisory against the profiles having its product keys; importing a register matches only the profiles
no register had before (a row like another facility's is matched already). A facility's matches are
its rows' profiles' matches, joined when read. Every published advisory here is KEV-listed and 25 % of
rows are internet-exposed or remotely maintained, so most advisories owe alerts to thousands of
facilities: publishing queues the advisory (one row); the facilities are found when the alerts are
sent, at the pace of the mail they become.
Bulk load of the registers (setup, not a hub path): {load_s:.0f} s.
"""
    print(body)
    if args.write:
        write_section("Matching registers", "python -m bench.matching " + " ".join(sys.argv[1:]), body)


if __name__ == "__main__":
    main()
