"""TAXII page latency: first and deep 100-object pages at 10,000, 100,000 and 1,000,000 objects,
and the same client loop against medallion's memory backend on the same 1,000 and 3,000 objects.

    python bench/taxii.py [--sizes 1000,3000,10000,100000,1000000] [--repeat 30]

Objects are synthetic STIX indicators (TLP:CLEAR) placed straight into the store (the harness
writes SQL itself; building 1M objects through ingest would only measure ingest). The hub runs
under gunicorn (2 workers) from taxii_server/, medallion under its own `medallion` command; both
are queried over HTTP with `requests` by the same loop.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import median_ms, paired_ms, write_section  # noqa: E402
from ceptoar.core.model import TLP_IDS  # noqa: E402
from ceptoar.publishing.collections import collection_uuid  # noqa: E402
from ceptoar.sharing import members  # noqa: E402
from ceptoar.store import Store  # noqa: E402
from tests.taxii_fixtures import free_port, wait_for  # noqa: E402

TAXII = "application/taxii+json;version=2.1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def indicator(i: int) -> dict:
    ts = (T0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {"type": "indicator", "spec_version": "2.1", "id": f"indicator--{uuid.UUID(int=i + 1)}",
            "created": ts, "modified": ts, "name": f"bench indicator {i}", "pattern_type": "stix",
            "pattern": f"[ipv4-addr:value = '198.51.100.{i % 256}']", "valid_from": ts,
            "indicator_types": ["malicious-activity"], "object_marking_refs": [TLP_IDS["CLEAR"]]}


def build(db: Path, sizes: list[int]) -> tuple[Store, str]:
    store = Store(db)
    store.migrate()
    biggest = max(sizes)
    if store.count("objects") < biggest:
        rows = []
        for i in range(biggest):
            o = indicator(i)
            rows.append((o["id"], o["modified"], "indicator", "", json.dumps(o), 0, False))
            if len(rows) == 50000:
                with store.transaction():
                    store.objects.put(rows, "source:bench")
                rows = []
                print(f"  objects: {i + 1:,}", file=sys.stderr)
        if rows:
            with store.transaction():
                store.objects.put(rows, "source:bench")
    for n in sizes:
        cid = f"bench-{n}"
        if store.collections.get(cid) is None:
            with store.transaction():
                store.collections.upsert({"id": cid, "uuid": collection_uuid(cid), "title": cid, "filter": "tlp = RED"})
                # Served rows straight from the objects: the read path is what is measured here.
                store.execute(
                    "INSERT INTO membership (collection, object_id, modified, origin, date_added, type, "
                    "spec_version, tlp_rank) SELECT ?, id, modified, origin, "
                    "strftime('%Y-%m-%dT%H:%M:%f000Z', '2026-02-01', '+' || seq || ' seconds'), "
                    "'indicator', '2.1', 0 FROM objects WHERE type = 'indicator' ORDER BY seq LIMIT ?", (cid, n))
            print(f"  collection {cid}", file=sys.stderr)
    if store.members.get("bench") is None:
        members.add(store, "bench", "bench", "RED")
    for n in sizes:
        members.grant(store, "bench", f"bench-{n}", True, False)
    secret = members.new_secret(store, "bench")
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return store, secret


def page(session: requests.Session, url: str, **params) -> dict:
    r = session.get(url, params=params, headers={"Accept": TAXII})
    r.raise_for_status()
    body = r.json()
    assert len(body["objects"]) == 100, len(body.get("objects", []))
    return body


def fetch(session: requests.Session, url: str, **params) -> str:
    r = session.get(url, params=params, headers={"Accept": TAXII})
    r.raise_for_status()
    return r.text


def hub_pages(base: str, secret: str, sizes: list[int], repeat: int) -> tuple[dict, dict, dict[str, str]]:
    """(size, endpoint) → (first, deep) p50 ms for objects and manifest pages and one object's
    versions, each request paired with one to the floor server returning the same body (measured
    alternately); and the bodies. The floor server is started here, once the bodies are known."""
    session = requests.Session()
    session.auth = ("bench", secret)
    bodies, requests_ = {}, []
    for n in sizes:
        coll = f"{base}/ceptoar/collections/{collection_uuid(f'bench-{n}')}"
        # A deep page: the `next` of a page 80 % into the collection (stateless: reusable).
        deep_after = (datetime(2026, 2, 1, tzinfo=UTC) + timedelta(seconds=int(n * 0.8))).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")
        for endpoint in ("objects", "manifest"):
            url = f"{coll}/{endpoint}/"
            bodies[f"{endpoint}-{n}"] = fetch(session, url, limit=100)  # warm: credentials verified once per worker
            assert len(json.loads(bodies[f"{endpoint}-{n}"])["objects"]) == 100
            token = json.loads(fetch(session, url, limit=100, added_after=deep_after))["next"]
            requests_.append(((n, endpoint), f"{endpoint}-{n}", url, {"limit": 100},
                              {"limit": 100, "added_after": deep_after, "next": token}))
        url = f"{coll}/objects/{indicator(n // 2)['id']}/versions/"
        bodies[f"versions-{n}"] = fetch(session, url)
        requests_.append(((n, "versions"), f"versions-{n}", url, {}, None))
    out, floors = {}, {}
    with floor_server(bodies) as floor_base:
        plain = requests.Session()
        for key, name, url, first_params, deep_params in requests_:
            floor_url = f"{floor_base}/{name}/"
            fetch(plain, floor_url)
            first, f1 = paired_ms(lambda url=url, p=first_params: fetch(session, url, **p),
                                  lambda u=floor_url: fetch(plain, u), repeat)
            if deep_params:
                deep, f2 = paired_ms(lambda url=url, p=deep_params: fetch(session, url, **p),
                                     lambda u=floor_url: fetch(plain, u), repeat)
            else:
                deep, f2 = first, f1
            out[key] = (first, deep)
            floors[key] = (f1, f2)
            print(f"  hub {key[1]} {key[0]:>9,}: first {first:.1f} ms (floor {f1:.1f}), deep {deep:.1f} ms "
                  f"(floor {f2:.1f})", file=sys.stderr)
    return out, floors, bodies


@contextmanager
def floor_server(bodies: dict[str, str]):
    """A bare Flask app under the same gunicorn (2 workers) returning the same bodies."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bodies.json").write_text(json.dumps(bodies), encoding="utf-8")
        env = dict(os.environ, CEPTOAR_FLOOR_BODIES=str(Path(tmp) / "bodies.json"))
        proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}",
                                 "--access-logfile", "/dev/null", "bench.floor_app:app"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(f"http://127.0.0.1:{port}/{next(iter(bodies))}/", proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


def medallion_pages(tmp: Path, sizes: list[int], repeat: int) -> dict[int, float]:
    port = free_port()
    cols = []
    for n in sizes:
        objs = [indicator(i) for i in range(n)]
        manifest = [{"id": o["id"], "date_added": (T0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                     "version": o["modified"], "media_type": "application/stix+json;version=2.1"}
                    for i, o in enumerate(objs)]
        cols.append({"id": collection_uuid(f"medallion-{n}"), "title": f"medallion-{n}", "can_read": True,
                     "can_write": False, "media_types": ["application/stix+json;version=2.1"],
                     "objects": objs, "manifest": manifest})
    data = {"/discovery": {"title": "m", "default": f"http://127.0.0.1:{port}/api1/",
                           "api_roots": [f"http://127.0.0.1:{port}/api1/"]},
            "api1": {"information": {"title": "api1", "versions": [TAXII], "max_content_length": 10485760},
                     "status": [], "collections": cols}}
    (tmp / "medallion-data.json").write_text(json.dumps(data))
    (tmp / "medallion.json").write_text(json.dumps({
        "backend": {"module": "medallion.backends.memory_backend", "module_class": "MemoryBackend",
                    "filename": str(tmp / "medallion-data.json")},
        "users": {"bench": "bench"}, "taxii": {"max_page_size": 100}}))
    proc = subprocess.Popen([str(Path(sys.executable).parent / "medallion"), "--port", str(port),
                             str(tmp / "medallion.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {}
    try:
        wait_for(f"http://127.0.0.1:{port}/taxii2/", proc)
        session = requests.Session()
        session.auth = ("bench", "bench")
        for n in sizes:
            url = f"http://127.0.0.1:{port}/api1/collections/{collection_uuid(f'medallion-{n}')}/objects/"
            out[n] = median_ms(lambda url=url: page(session, url, limit=100), repeat)
            print(f"  medallion {n:>5,}: first {out[n]:.1f} ms", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,3000,10000,100000,1000000")
    ap.add_argument("--medallion-sizes", default="1000,3000")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--medallion-repeat", type=int, default=3)
    ap.add_argument("--db", default=str(Path(tempfile.gettempdir()) / "ceptoar-bench-taxii.db"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    msizes = [int(x) for x in args.medallion_sizes.split(",")]
    store, secret = build(Path(args.db), sizes)
    port = free_port()
    env = dict(os.environ, CEPTOAR_DB=args.db, CEPTOAR_TAXII_BIND=f"127.0.0.1:{port}", CEPTOAR_TAXII_WORKERS="2")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c",
                             str(ROOT / "taxii_server/gunicorn.conf.py"), "--access-logfile", "/dev/null"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/taxii2/", proc)
        hub, floor, bodies = hub_pages(f"http://127.0.0.1:{port}", secret, sizes, args.repeat)
    finally:
        proc.terminate()
        proc.wait(10)
    with tempfile.TemporaryDirectory() as tmp:
        med = medallion_pages(Path(tmp), msizes, args.medallion_repeat)
    lines = ["100-object pages over HTTP (p50 of the same `requests` loop; the hub under gunicorn, 2 workers, "
             "audit log written for every request):", "",
             "| objects in collection | hub first page ms | hub deep page ms (80 %) | medallion memory first page ms "
             "| medallion / hub |", "|---:|---:|---:|---:|---:|"]
    for n in sizes:
        first, deep = hub[(n, "objects")]
        m = med.get(n)
        lines.append(f"| {n:,} | {first:.1f} | {deep:.1f} | {f'{m:,.0f}' if m else '–'} | "
                     f"{f'{m / first:,.0f}×' if m else '–'} |")
    big, small = max(sizes), 10000 if 10000 in sizes else min(sizes)
    ratio = max(hub[(big, "objects")]) / max(hub[(small, "objects")])
    lines += ["", f"page@{big:,} / page@{small:,} (worse of first and deep): **{ratio:.2f}** (target ≤ 1.5); "
              f"p50 at {big:,}: first {hub[(big, 'objects')][0]:.1f} ms, deep {hub[(big, 'objects')][1]:.1f} ms "
              "(target ≤ 10 ms).", "",
              "Against the HTTP floor (a bare Flask app under the same gunicorn, 2 workers, returning a body of "
              "the same size; each hub request alternated with one to the floor, so both see the same machine); "
              "target ≤ 2× on every read endpoint:", "",
              "| objects | endpoint | body KB | floor ms | hub first ms | × floor | hub deep ms | × floor |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    worst = 0.0
    for n in sizes:
        for endpoint in ("objects", "manifest", "versions"):
            f1, f2 = floor[(n, endpoint)]
            first, deep = hub[(n, endpoint)]
            worst = max(worst, first / f1, deep / f2)
            lines.append(f"| {n:,} | {endpoint} | {len(bodies[f'{endpoint}-{n}'].encode()) / 1024:.1f} | {f1:.2f} | "
                         f"{first:.2f} | {first / f1:.2f} | {deep:.2f} | {deep / f2:.2f} |")
    lines += ["", f"Worst ratio to the floor: **{worst:.2f}×** (target ≤ 2×)."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("TAXII page latency", f"python bench/taxii.py --sizes {args.sizes} --repeat {args.repeat}", body)


if __name__ == "__main__":
    main()
