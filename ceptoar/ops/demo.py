"""The offline demo: the sample feeds of feeds/samples served on loopback, run through the
normal pipeline (fetch → normalize → store), then read back."""

from __future__ import annotations

import email
import email.policy
import logging
import shutil
import threading
import tomllib
from pathlib import Path

import click
from taxii2client.v21 import ApiRoot, as_pages
from werkzeug.serving import make_server

from ceptoar.clinics.digest import subscribers
from ceptoar.clinics.digest.delivery import run_digest
from ceptoar.core.output import echo, emit
from ceptoar.core.paths import project_file
from ceptoar.incidents import reports as incidents
from ceptoar.incidents.poster import write_poster
from ceptoar.ops import catalogue
from ceptoar.ops.devserver import serve_directory
from ceptoar.pipeline import fetch_source
from ceptoar.publishing import collections as colls
from ceptoar.publishing import triage
from ceptoar.sharing import members
from ceptoar.sharing.taxii.app import create_app
from ceptoar.store import Store


def _demo_sources(base: str) -> list[dict]:
    text = project_file("feeds/samples/demo-sources.toml").read_text(encoding="utf-8").replace("{base}", base)
    return [catalogue.check_source(s, "demo-sources.toml") for s in tomllib.loads(text).get("source", [])]


def step(title: str) -> None:
    click.secho(f"\n== {title}", bold=True)


def serve_taxii(store: Store, db_path: Path) -> None:
    """A member association reads the `medical` collection with taxii2-client, as OpenCTI would."""
    step("TAXII 2.1: a member association pulls the `medical` collection (taxii2-client)")
    members.add(store, "jma", "日本医師会 (demo)", "GREEN")
    members.grant(store, "jma", "medical", True, False)
    secret = members.new_secret(store, "jma")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the demo prints its own lines
    server = make_server("127.0.0.1", 0, create_app(str(db_path)), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        root = ApiRoot(f"{base}/ceptoar/", user="jma", password=secret)
        for coll in root.collections:
            objects = [o for env in as_pages(coll.get_objects, per_request=10) for o in env.get("objects", [])]
            kinds = {}
            for o in objects:
                kinds[o["type"]] = kinds.get(o["type"], 0) + 1
            echo(f"{base}/ceptoar/collections/{coll.id}/ ({coll._raw['alias']}): "
                       f"{len(objects)} objects {kinds}")
        echo(f"TAXII: ceptoar --db {db_path} serve, then discovery at http://127.0.0.1:8000/taxii2/")
    finally:
        server.shutdown()


def run_demo(db_path: Path, port: int = 0, fresh: bool = True) -> int:
    if fresh and db_path.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(str(db_path) + suffix).unlink(missing_ok=True)
        shutil.rmtree(db_path.parent / "digests", ignore_errors=True)
    server, base = serve_directory(project_file("feeds/samples"), port)
    try:
        store = Store(db_path)
        store.migrate()
        step(f"Sample feeds served at {base}; database {db_path}")
        for s in _demo_sources(base):
            store.sources.upsert(s | {"defined_by": "demo"}, keep_enabled=False)
        failed = False
        for run in ("first fetch", "second fetch (conditional GET: nothing new)"):
            step(run)
            results = [fetch_source(store, row) for row in store.sources.list()]
            emit([r.as_dict() for r in results], "table", ["source", "status", "new", "updated", "unchanged", "error"])
            failed |= any(r.status == "error" for r in results)
        step("Advisories waiting for triage (ceptoar advisories list)")
        rows = store.advisories.list()
        emit(rows, "table", ["id", "source", "published", "tlp", "cves", "max_cvss", "tags", "title"],
             widths={"id": 20, "title": 40, "cves": 32, "tags": 26, "published": 25})
        echo(f"\n{len(rows)} advisories, {store.count('objects')} STIX object versions.")

        step("Triage: rate, confirm medical relevance, publish (every action audited)")
        with store.transaction():
            for c in colls.load_defaults(project_file("taxii_server/collections.toml")):
                store.collections.upsert(c | {"origin": "demo"})
        actor = "demo-analyst"
        emr = store.advisories.list(search="電子カルテ", source="demo-jvndb")[0]
        triage.triage(store, emr["id"], actor, severity="critical", medical=True,
                      note="診療所で広く使われる構成。ベンダー確認済み。")
        vpn = store.advisories.list(cve="CVE-2026-90002", source="demo-jvndb")[0]
        triage.triage(store, vpn["id"], actor, severity="critical", medical=True)
        triage.retag(store, [vpn["id"]], ["jma"], [], actor)
        chosen = [r["id"] for r in store.advisories.list(medical=True, status="new")]
        for r in triage.publish(store, chosen, actor):
            echo(f"published {r['id'][:20]}… → {', '.join(r['collections']) or '-'}")
        office = store.advisories.list(search="オフィス文書")[0]
        triage.reject(store, [office["id"]], "医療機関への影響が限定的", actor)
        emit(store.collections.list(), "table", ["id", "title", "filter", "advisories", "objects"],
             widths={"title": 34, "filter": 44})
        serve_taxii(store, db_path)
        step("Daily digest for the member's clinics, written as .eml (ceptoar digest send --out)")
        for addr, name, clearance, lang in [("yamada@clinic.example.jp", "山田 太郎", "GREEN", "ja"),
                                            ("smith@hospital.example.com", "John Smith", "CLEAR", "en")]:
            subscribers.add(store, {"email": addr, "name": name, "member": "jma", "frequency": "daily",
                                    "clearance": clearance, "lang": lang})
        out = db_path.parent / "digests"
        res = run_digest(store, "daily", smtp=None, out_dir=out)
        echo(f"{res.written} digests written to {out}/ ({res.rendered} renderings)")
        for eml in sorted(out.glob("*.eml")):
            msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
            echo(f"  {eml.name}: {msg['Subject']}")
        step("Incident at a clinic (TLP:RED, never shared as is) and the in-hospital poster")
        inc = incidents.report(store, actor, facility="さくら診療所 (demo)", facility_type="clinic",
                               prefecture="東京都", member="jma", summary="電子カルテ端末に身代金要求画面が表示された",
                               vendor="サンプル医療システム", vendor_phone="03-0000-1111", service_impact=True,
                               allow_examples=True)  # the demo's contacts are the shipped examples
        for line in incidents.next_steps(inc):
            echo(f"次に: {line}")
        echo("(a real hub refuses this incident until the example telephone numbers in contacts.toml and "
             "relay.toml are replaced: `ceptoar status` names them)")
        poster = db_path.parent / "poster.html"
        write_poster(poster, facility="さくら診療所 (demo)", vendor="サンプル医療システム",
                               vendor_phone="03-0000-1111", vendor_contact="佐藤")
        echo(f"poster: {poster}")
        echo(f"\naudit log: {len(store.audit.list())} entries "
                   f"(ceptoar --db {db_path} audit list)")
        echo(f"Explore: ceptoar --db {db_path} advisories list --status all --format json")
        return 1 if failed else 0
    finally:
        server.shutdown()
