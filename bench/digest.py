"""Digest fan-out: 250,000 subscribers across associations, a digest of 20 advisories, delivered
to a loopback SMTP sink (aiosmtpd in its own process), through the real `ceptoar digest send`.

    python bench/digest.py [--subscribers 250000] [--advisories 20] [--facilities 0]

With `--facilities N`, every subscriber belongs to one of N facilities (the same facility for
subscribers i, i+N, ...), each with a 20-row register (loaded in bulk as `inventory import` stores it)
in which, on average, one row names a product of the digest's advisories: each facility's block
("貴院の台帳に該当する可能性がある情報") is rendered once per segment and put in every message of its staff.

Reports wall time and the sender's peak memory (the `ceptoar` process's own VmHWM).
Targets: ≤ 90 s and ≤ 256 MB (plain); with facility blocks ≤ 5 minutes, ≤ 512 MB.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import DATA, run_peak, write_section  # noqa: E402
from ceptoar.pipeline import ingest_bytes, source_of  # noqa: E402
from ceptoar.publishing import triage  # noqa: E402
from ceptoar.publishing.collections import collection_uuid  # noqa: E402
from ceptoar.sharing import members  # noqa: E402
from ceptoar.store import Store  # noqa: E402
from tests.taxii_fixtures import free_port  # noqa: E402

ASSOCIATIONS = ["jma", "jda", "jpa", "jna", "hospitals"]
# A minimal SMTP sink: enough of RFC 5321 for smtplib (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT),
# reading each message in one read up to "<CRLF>.<CRLF>". aiosmtpd (used by the tests) parses DATA
# line by line and tops out near 450 messages/s here, so it would measure itself, not the hub.
SINK = textwrap.dedent("""
    import asyncio, sys
    count = size = 0
    async def session(reader, writer):
        global count, size
        writer.write(b"220 sink ESMTP\\r\\n")
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250-sink\\r\\n250-8BITMIME\\r\\n250-PIPELINING\\r\\n"
                             b"250-SMTPUTF8\\r\\n250 SIZE 52428800\\r\\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\\r\\n")
                await writer.drain()
                data = await reader.readuntil(b"\\r\\n.\\r\\n")
                count += 1
                size += len(data)
                writer.write(b"250 OK\\r\\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\\r\\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 OK\\r\\n")
            await writer.drain()
        writer.close()
    async def main():
        server = await asyncio.start_server(session, "127.0.0.1", int(sys.argv[1]), limit=2**24)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()
        print(count, size, flush=True)
    asyncio.run(main())
""")

def floor(port: int, size: int, n: int) -> float:
    """The floor: a raw sender of messages of the same size, pipelined as the hub sends (MAIL, RCPT
    and DATA in one write, then the message), waiting for the replies each message: messages/s."""
    import socket

    body = (b"Subject: floor\r\n\r\n" + b"x" * 76 + b"\r\n") * max(1, size // 98) + b".\r\n"
    sock = socket.create_connection(("127.0.0.1", port))
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(b"EHLO floor\r\n")
    while f.readline()[3:4] == b"-":
        pass
    t = time.perf_counter()
    for i in range(n):
        sock.sendall(b"MAIL FROM:<ceptoar@example.jp>\r\nRCPT TO:<c%d@example.jp>\r\nDATA\r\n" % i)
        for _ in range(3):
            f.readline()
        sock.sendall(body)
        f.readline()
    elapsed = time.perf_counter() - t
    sock.sendall(b"QUIT\r\n")
    sock.close()
    return n / elapsed


def registers_for(store: Store, ids: list[str], facilities: int) -> None:
    """N facilities with 20-row registers: mostly products no advisory names, on average one row
    naming a product of the digest's advisories (at one of three versions)."""
    import json
    import random

    from ceptoar.facilities import matching, registers
    from ceptoar.store.registers import signature

    rng = random.Random(5)
    named = [(a.vendor, a.product) for aid in ids for a in matching.affected_of(registers.published_report(store, aid))]
    filler = [(f"Vendor{i % 300:03d}", f"Product {i:04d}") for i in range(3000)]
    profiles: dict[str, int] = {}
    keys, rows = [], []
    with store.transaction():
        store.executemany("INSERT INTO facilities (id, name, facility_type, prefecture, member, phone, created, "
                          "updated) VALUES (?, ?, 'clinic', '東京都', ?, NULL, '2026-11-22', '2026-11-22')",
                          [(f"f{i:06d}", f"診療所{i}", ASSOCIATIONS[i % 5]) for i in range(facilities)])
        for i in range(facilities):
            for n in range(1, 21):
                vendor, product = rng.choice(named) if rng.random() < 0.05 else rng.choice(filler)
                row = {"vendor": vendor, "product": product, "version": f"{rng.randint(1, 3)}.0"}
                sig = signature(row)
                if sig not in profiles:
                    profiles[sig] = len(profiles) + 1
                    keys += [(k, profiles[sig]) for k in registers.row_keys(row)]
                rows.append((f"f{i:06d}", n, vendor, product, row["version"], int(rng.random() < 0.05),
                             profiles[sig]))
        store.executemany("INSERT INTO register_rows (facility, n, category, vendor, product, version, "
                          "internet_exposed, profile, added) VALUES (?, ?, 'その他', ?, ?, ?, ?, ?, '2026-11-22')",
                          rows)
        store.executemany("INSERT INTO row_profiles (seq, signature, vendor, product, version) VALUES (?, ?, ?, ?, ?)",
                          [(pid, sig, *json.loads(sig)[:3]) for sig, pid in profiles.items()])
        store.executemany("INSERT INTO profile_keys (product_key, profile) VALUES (?, ?) ON CONFLICT DO NOTHING", keys)
        for aid in ids:
            registers.match_advisory(store, aid)


def build(db: Path, subscribers: int, advisories: int, facilities: int = 0) -> None:
    store = Store(db)
    store.migrate()
    store.sources.upsert({"id": "kev", "kind": "kev", "url": "https://feeds.example/kev", "name": "CISA KEV"})
    body = (DATA / "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json").read_bytes()
    ingest_bytes(store, source_of(store.sources.get("kev")), body)
    with store.transaction():
        store.collections.upsert({"id": "kev", "uuid": collection_uuid("kev"), "title": "KEV", "filter": "kev"})
    ids = [r["id"] for r in store.advisories.list(source="kev", limit=advisories)]
    triage.publish(store, ids, "bench")
    if facilities:
        registers_for(store, ids, facilities)
    for m in ASSOCIATIONS:
        members.add(store, m, m, "GREEN")
        members.grant(store, m, "kev", True, False)
    with store.transaction():
        for i in range(subscribers):
            store.subscribers.upsert({"email": f"clinic{i:06d}@{ASSOCIATIONS[i % 5]}.example.jp",
                                     "name": f"診療所 {i}", "member": ASSOCIATIONS[i % 5], "frequency": "daily",
                                     "clearance": ["CLEAR", "GREEN"][i % 2], "lang": "ja" if i % 10 else "en",
                                     "facility": f"f{i % facilities:06d}" if facilities else None})
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subscribers", type=int, default=250_000)
    ap.add_argument("--advisories", type=int, default=20)
    ap.add_argument("--facilities", type=int, default=0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "digest.db"
        t = time.perf_counter()
        build(db, args.subscribers, args.advisories, args.facilities)
        matched = Store(db).facilities.count_matches() if args.facilities else 0
        print(f"  built in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        port = free_port()
        sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert sink.stdout.readline().strip() == "ready"
        t = time.perf_counter()
        sender, peak_mb = run_peak([sys.executable, "-m", "ceptoar.cli", "--db", str(db), "digest", "send",
                                    "--frequency", "daily", "--smtp-host", "127.0.0.1", "--smtp-port", str(port),
                                    "--base-url", "https://ceptoar.example.jp", "--format", "json"], cwd=ROOT)
        elapsed = time.perf_counter() - t
        received, size = map(int, sink.communicate("")[0].strip().splitlines()[-1].split())
        sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert sink.stdout.readline().strip() == "ready"
        floor_rate = floor(port, size // max(received, 1), min(received, 50000))
        sink.communicate("")
        if sender.returncode:
            raise SystemExit(sender.stdout + sender.stderr)
    with_facilities = (f" Each subscriber belongs to one of {args.facilities:,} facilities with a 20-row register "
                       f"({matched:,} (facility, advisory) matches among the digest's advisories): every message "
                       "carries its facility's block." if args.facilities else "")
    body = "\n".join([
        f"{args.subscribers:,} subscribers in {len(ASSOCIATIONS)} associations (half CLEAR, half GREEN; 10 % English), "
        f"a digest of {args.advisories} advisories, `ceptoar digest send` to an SMTP sink on loopback "
        f"(its own process; asyncio, reads each message whole).{with_facilities}", "",
        "| messages received | average size | wall time | messages/s | floor messages/s | × floor | sender peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {received:,} | {size / max(received, 1) / 1024:.1f} KB | {elapsed:.0f} s | {received / elapsed:,.0f} | "
        f"{floor_rate:,.0f} | {received / elapsed / floor_rate:.2f} | {peak_mb:.0f} MB |", "",
        "The floor: a raw sender of messages of the same size to the same sink, pipelined as the hub sends "
        "(one write for MAIL, RCPT and DATA, one for the message, waiting for the replies), measured in the "
        "same run.", "",
        ("Targets (facility registers): 250,000 recipients in ≤ 5 minutes with ≤ 512 MB; a facility's block "
         "is rendered once per segment and read a page of recipients at a time. " if args.facilities else
         "Targets: 250,000 recipients in ≤ 90 s (≥ 2,800 messages/s), ≤ 256 MB. ")
        + "Rendering happens once per "
        "segment (association × clearance × language), cut once where each recipient's parts go; each message "
        "is the segment's pieces, already dot-stuffed, with its own headers, unsubscribe link (and facility "
        "block), recorded in the delivery log in batches of 200 or a second."])
    print(body)
    if not args.no_write:
        write_section("Digest fan-out" + (" with facility blocks" if args.facilities else ""),
                      f"python bench/digest.py --subscribers {args.subscribers} --advisories {args.advisories}"
                      + (f" --facilities {args.facilities}" if args.facilities else ""), body)


if __name__ == "__main__":
    main()
