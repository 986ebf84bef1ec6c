"""Two processes at once, a full disk, odd requests (issue 15): the hub stays exact."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from ceptoar.clinics.digest.delivery import LOG_BATCH
from ceptoar.core.model import vulnerability_id
from ceptoar.store import Store
from tests.conftest import DATA, ROOT
from tests.taxii_fixtures import TAXII, ServerProcess
from tests.test_digest import world  # noqa: F401  (the published hub the digest tests use)
from tests.trust_helpers import Reader, report, write_bundle


def many_subscribers(w, tmp_path, n: int) -> None:
    lines = ["email,name,member,frequency,clearance,lang"] + [
        f"clinic{i:04d}@example.jp,診療所 {i},assoc-green,daily,GREEN,ja" for i in range(n)]
    (tmp_path / "many.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    w.hub.run("subscribers", "import", str(tmp_path / "many.csv"))


def send_cmd(w, controller, *extra) -> list[str]:
    return [sys.executable, "-m", "ceptoar.cli", "--db", str(w.db), "digest", "send", "--frequency", "daily",
            "--smtp-host", "127.0.0.1", "--smtp-port", str(controller.port), "--base-url", "https://hub.example.jp",
            *extra]


def test_two_digest_runs_at_once_send_each_message_once(world, tmp_path, smtp):  # noqa: F811
    controller, sink = smtp
    many_subscribers(world, tmp_path, 120)
    first = subprocess.Popen(send_cmd(world, controller, "--rate", "100"), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    second = subprocess.run(send_cmd(world, controller), cwd=ROOT, capture_output=True, text=True, timeout=60)
    waiting = subprocess.Popen(send_cmd(world, controller, "--wait", "60", "--format", "json"), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert second.returncode == 1 and "already running" in second.stderr and "Traceback" not in second.stderr
    w_out, w_err = waiting.communicate(timeout=90)
    assert waiting.returncode == 0, w_err
    assert json.loads(w_out)[0]["sent"] == 0  # it waited, then found everything sent
    recipients = [r for rcpt, _ in sink.messages for r in rcpt]
    assert len(recipients) == len(set(recipients)) == 120  # each recipient exactly one message


def test_a_lease_left_elsewhere_expires_and_is_taken_over(world, tmp_path, smtp, monkeypatch):  # noqa: F811
    controller, sink = smtp
    many_subscribers(world, tmp_path, 5)
    store = Store(world.db)
    run_id = f"daily-{time.strftime('%Y-%m-%d', time.gmtime(time.time() + 9 * 3600))}"  # the run of today (JST)
    assert store.leases.acquire(f"digest:{run_id}", "another-host:1|abcd", "digest run", 2) is None
    held = subprocess.run(send_cmd(world, controller), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert held.returncode == 1 and "another-host:1" in held.stderr and sink.messages == []
    time.sleep(2.2)
    done = subprocess.run(send_cmd(world, controller), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    recipients = [r for rcpt, _ in sink.messages for r in rcpt]
    assert len(recipients) == len(set(recipients)) == 5


def test_the_same_source_is_never_fetched_twice_at_once(hub, feed_server):
    feed_server.route("/slow.rdf", (DATA / "jvn/vulsdata_jvndb_2022.rdf").read_bytes(), delay=2)
    hub.run("sources", "add", "slow", feed_server.url("/slow.rdf"), "--kind", "jvn")
    cmd = [sys.executable, "-m", "ceptoar.cli", "--db", str(hub.db), "fetch", "slow", "--format", "json"]
    a = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.7)
    b = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    a_out, _ = a.communicate(timeout=60)
    assert json.loads(a_out)[0]["new"] == 3
    assert b.returncode == 1 and "already running" in json.loads(b.stdout)[0]["error"]
    assert len(hub.json("advisories", "list", "--source", "slow")) == 3


# --- odd requests: client errors, never a 500 -------------------------------------------------------------
@pytest.fixture(scope="module")
def gunicorn_hub(tmp_path_factory):
    from tests.conftest import Hub, new_db
    tmp = tmp_path_factory.mktemp("odd")
    hub = Hub(new_db(tmp))
    (tmp / "none.toml").write_text("")
    hub.run("init", "--sources", str(tmp / "none.toml"))
    reader = Reader(hub.db, "writer", "GREEN", ["medical"])
    Store(hub.db).members.set_grant("writer", "medical", True, True)
    server = ServerProcess(hub.db, gunicorn=True, workers=2).start()
    yield server, reader
    server.stop()


def taxii_body(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == TAXII
    body = r.json()
    assert body["http_status"] == str(status) and body["title"]
    return body


@pytest.mark.parametrize(("method", "path", "params", "status"), [
    ("HEAD", "objects/", {}, 405),
    ("GET", "objects/", {"added_after": "9999-12-31T23:59:59-14:00"}, 400),
    ("GET", "objects/", {"match[version]": "0001-01-01T00:00:00+14:00"}, 400),
    ("GET", "manifest/", {"added_after": "0001-01-01T00:00:00+14:00"}, 400),
])
def test_odd_reads_are_client_errors(gunicorn_hub, method, path, params, status):
    server, reader = gunicorn_hub
    url = f"{server.base}/ceptoar/collections/{reader.uuids['medical']}/{path}"
    r = requests.request(method, url, params=params, headers=reader.headers)
    if method == "HEAD":
        assert r.status_code == 405 and r.headers["Content-Type"] == TAXII and "GET" in r.headers["Allow"]
    else:
        taxii_body(r, status)


@pytest.mark.parametrize("objects", [
    [report("x", [], object_refs=5)],
    [report("x", [], tlp=None, object_marking_refs=7)],
    [report("x", [], external_references=["not an object"])],
    [report("x", [], labels=[1, 2])],
])
def test_malformed_submissions_are_400(gunicorn_hub, objects):
    server, reader = gunicorn_hub
    url = f"{server.base}/ceptoar/collections/{reader.uuids['medical']}/objects/"
    body = taxii_body(requests.post(url, json={"objects": objects}, headers=reader.headers | {"Content-Type": TAXII}),
                      400)
    assert "objects[0]" in body["description"]


def test_surrogates_nesting_slashes_and_options(gunicorn_hub):
    server, reader = gunicorn_hub
    url = f"{server.base}/ceptoar/collections/{reader.uuids['medical']}/objects/"
    headers = reader.headers | {"Content-Type": TAXII}
    lone = b'{"objects": [{"type": "indicator", "id": "indicator--6f5e7f3a-1b1e-4b8e-9d5c-1a2b3c4d5e6f", "name": "\\ud800"}]}'
    assert "surrogate" in taxii_body(requests.post(url, data=lone, headers=headers), 400)["description"]
    deep = b'{"objects": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    taxii_body(requests.post(url, data=deep, headers=headers), 400)
    r = requests.get(url.rstrip("/"), headers=reader.headers, allow_redirects=False)
    assert r.status_code == 200 and r.headers["Content-Type"] == TAXII  # no HTML 308
    r = requests.options(url, headers=reader.headers)
    assert r.status_code == 200 and r.headers["Content-Type"] == TAXII and r.json() == {} and "GET" in r.headers["Allow"]


# --- upstream bodies held in bounded memory ----------------------------------------------------------------
def peak_rss_mb(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    """Run a command in a wrapper whose only child it is; the child's peak resident memory."""
    wrapper = ("import resource, subprocess, sys, json; r = subprocess.run(json.loads(sys.argv[1]), "
               "capture_output=True, text=True); print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN)"
               ".ru_maxrss, r.returncode, r.stdout, r.stderr]))")
    out = subprocess.run([sys.executable, "-c", wrapper, json.dumps(cmd)], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    rss, code, stdout, stderr = json.loads(out.stdout)
    return rss / 1024, subprocess.CompletedProcess(cmd, code, stdout, stderr)


def test_a_gzip_bomb_and_a_huge_body_stop_at_the_cap(hub, tmp_path):
    bomb = gzip.compress(b"\0" * (1 << 30), compresslevel=9)  # 1 GiB of zeros in about 1 MB
    app = Flask("bomb")
    cid = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"

    @app.route(f"/api1/collections/{cid}/")
    def collection():
        return app.response_class(json.dumps({"id": cid, "title": "t", "can_read": True, "can_write": False}),
                                  mimetype=TAXII)

    @app.route(f"/api1/collections/{cid}/objects/")
    def objects():
        return app.response_class(bomb, mimetype=TAXII, headers={"Content-Encoding": "gzip"})

    @app.route("/huge.rdf")
    def huge():
        def chunks():
            for _ in range(200):
                yield b" " * (1 << 20)
        return app.response_class(chunks(), mimetype="application/rdf+xml")  # streamed: no Content-Length

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        hub.run("sources", "add", "bomb", f"{base}/api1/collections/{cid}/", "--kind", "taxii")
        hub.run("sources", "add", "huge", f"{base}/huge.rdf", "--kind", "jvn")
        cli = [sys.executable, "-m", "ceptoar.cli", "--db", str(hub.db), "fetch", "--format", "json"]
        rss, r = peak_rss_mb([*cli, "bomb"])
        assert r.returncode == 1 and "exceeds" in json.loads(r.stdout)[0]["error"] and rss < 300, (rss, r.stdout)
        rss, r = peak_rss_mb([*cli, "huge", "--max-bytes", str(150 << 20)])
        assert r.returncode == 1 and "cap" in json.loads(r.stdout)[0]["error"] and rss < 300, (rss, r.stdout)
    finally:
        server.shutdown()


# --- what a feed says twice, or claims, or cannot say ---------------------------------------------------------
def test_the_newest_version_in_a_bundle_wins(hub, tmp_path):
    rid = "report--84e4d88f-44ea-4bcd-bbf3-b2c1c320bcb3"
    copies = [report("newest A", [], rid=rid, modified="2026-11-03T00:00:00.000Z"),
              report("newest B", [], rid=rid, modified="2026-11-03T00:00:00.000Z"),
              report("older", [], rid=rid, modified="2026-11-01T00:00:00.000Z")]
    hub.run("sources", "add", "p", "https://p.example/", "--kind", "stix")
    out = json.loads(hub.run("ingest", str(write_bundle(tmp_path / "b.json", copies)), "--source", "p",
                             "--format", "json").stdout)[0]
    assert any("two different versions" in w for w in out["warnings"])
    (row,) = hub.json("advisories", "list", "--source", "p")
    assert row["title"] == "newest A" and row["stix_modified"] == "2026-11-03T00:00:00.000Z"


def test_a_304_to_an_unconditional_request_is_an_error(hub, feed_server):
    hub.run("sources", "add", "lying", feed_server.route("/lying.rdf", b"", status=304), "--kind", "jvn")
    out = json.loads(hub.run("fetch", "--format", "json", ok=None).stdout)[0]
    assert out["status"] == "error" and "unconditional" in out["error"]
    (src,) = hub.json("sources", "list")
    assert src["last_status"] == "error"  # not "not-modified": the source is tried for real next time


def test_only_well_formed_cve_ids_are_cves(hub, tmp_path):
    bad = ["CVE-XXXX-ABC", "CVE-2024-1", "CVE-2024-1234' OR 1=1 --", "CVE-2024-" + "1" * 100000]
    refs = "".join(f'<sec:references source="CVE" id="{c}">https://x.example/</sec:references>' for c in bad)
    refs += ('<sec:references source="JVN" id="Related: CVE-2023-46805 and CVE-2024-21887 in one '
             'title">https://jvn.example/</sec:references>')
    text = (DATA / "jvn/vulsdata_jvndb_2023.rdf").read_text(encoding="utf-8")
    at = text.index("<sec:references")
    path = tmp_path / "jvn.rdf"
    path.write_text(text[:at] + refs + text[at:], encoding="utf-8")
    hub.run("sources", "add", "jvn", "https://jvn.example/", "--kind", "jvn")
    hub.run("ingest", str(path), "--source", "jvn")
    rows = hub.json("advisories", "list", "--source", "jvn")
    cves = {c for r in rows for c in r["cves"]}
    assert {"CVE-2023-46805", "CVE-2024-21887"} <= cves
    assert all(len(c) < 30 and c.count("-") == 2 and c.split("-")[2].isdigit() for c in cves)
    (named,) = [r for r in rows if "CVE-2023-46805" in r["cves"]]
    shown = json.loads(hub.run("advisories", "show", named["id"], "--format", "source").stdout)
    names = {o["name"] for o in shown["objects"] if o["type"] == "vulnerability"}
    assert all(n.startswith("CVE-") and " " not in n for n in names)
    assert vulnerability_id("CVE-2024-21887") in {o["id"] for o in shown["objects"]}


@pytest.mark.sqlite_only
def test_a_disk_filling_up_during_a_digest_run(world, tmp_path, smtp):  # noqa: F811
    if os.getuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    controller, sink = smtp
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        many_subscribers(world, tmp_path, 40)
        Store(world.db).execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db = mnt / "hub.db"
        subprocess.run(["cp", str(world.db), str(db)], check=True)
        original = sink.handle_DATA

        async def fill_after_five(server, session, envelope):
            answer = await original(server, session, envelope)
            if len(sink.messages) == 5:
                subprocess.run(["dd", "if=/dev/zero", f"of={mnt / 'fill'}", "bs=64k"], capture_output=True)
            return answer

        sink.handle_DATA = fill_after_five
        r = subprocess.run([sys.executable, "-m", "ceptoar.cli", "--db", str(db), "digest", "send", "--frequency",
                            "daily", "--smtp-host", "127.0.0.1", "--smtp-port", str(controller.port), "--base-url",
                            "https://hub.example.jp"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "disk full" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) <= 2  # the notice and the one error line
        sent = len(sink.messages)
        marked = Store(db).scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'sent'")
        # Nothing marked sent that was not accepted; what was accepted since the delivery log's last
        # batch was written is not marked (a rerun sends it again, with the same Message-ID).
        assert marked <= sent and sent - marked <= LOG_BATCH
        listed = subprocess.run([sys.executable, "-m", "ceptoar.cli", "--db", str(db), "advisories", "list",
                                 "--status", "published", "--format", "json"], cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert listed.returncode == 0 and json.loads(listed.stdout)  # reading still works on a full disk
    finally:
        subprocess.run(["umount", "-l", str(mnt)])
