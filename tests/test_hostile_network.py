"""Hostile peers (issue 10): feeds and upstream hubs that stall, loop, lie or point elsewhere;
strangers at the login; a proxy in front. All through real sockets on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import pytest
import requests
from flask import Flask, request
from werkzeug.serving import make_server

from ceptoar.core.model import Source
from ceptoar.fetch.rolie import url_policy
from ceptoar.normalize import FeedError, jvn, xmlsafe
from ceptoar.sharing import members
from ceptoar.store import Store
from tests.conftest import DATA
from tests.nginx_proxy import Nginx, nginx, self_signed
from tests.taxii_fixtures import TAXII, ServerProcess, free_port
from tests.trust_helpers import Reader, report, write_bundle


# --- servers that misbehave at the socket level ------------------------------------------------------
class RawServer:
    """Accepts connections and hands each socket to `behave(conn)` in a thread of its own."""

    def __init__(self, behave):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, args=(behave,), daemon=True).start()

    def _serve(self, behave):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(behave, conn), daemon=True).start()

    def _one(self, behave, conn):
        try:
            conn.recv(65536)
            behave(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


def drip_headers(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not stop.is_set():
        conn.sendall(b"a")
        time.sleep(0.05)


def continue_flood(conn, stop):
    while not stop.is_set():
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(0.05)


def drip_body(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    while not stop.is_set():
        conn.sendall(b" ")
        time.sleep(0.05)


@pytest.mark.parametrize(("behave", "kind"), [(drip_headers, "jvn"), (continue_flood, "kev"), (drip_body, "kev"),
                                              (drip_body, "taxii")])
def test_a_stalling_server_is_cut_off_at_the_deadline(hub, behave, kind):
    server = RawServer(behave)
    try:
        url = server.url + ("/api1/collections/91a7b528-80eb-42ed-a74d-c6fbd5a26116/" if kind == "taxii" else "/f")
        hub.run("sources", "add", "slow", url, "--kind", kind)
        t = time.monotonic()
        r = hub.run("fetch", "--format", "json", "--timeout", "2", ok=None)
        elapsed = time.monotonic() - t
    finally:
        server.close()
    out = json.loads(r.stdout)[0]
    assert r.exit_code == 1 and out["status"] == "error" and "timed out" in out["error"], out
    assert elapsed < 15, elapsed  # a per-read timeout alone would wait forever


# --- an upstream TAXII server that never ends ------------------------------------------------------------
class FakeTaxii:
    """One collection whose objects endpoint answers as `page(n, args)` says."""

    def __init__(self, page):
        self.requests: list[dict] = []
        app = Flask("fake")
        cid = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"

        @app.route(f"/api1/collections/{cid}/")
        def collection():
            return app.response_class(json.dumps({"id": cid, "title": "t", "can_read": True, "can_write": False,
                                                  "media_types": ["application/stix+json;version=2.1"]}),
                                      mimetype=TAXII)

        @app.route(f"/api1/collections/{cid}/objects/")
        def objects():
            self.requests.append(dict(request.args))
            body, added = page(len(self.requests), request.args)
            return app.response_class(json.dumps(body), mimetype=TAXII, headers={
                "X-TAXII-Date-Added-First": added, "X-TAXII-Date-Added-Last": added})

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/api1/collections/{cid}/"

    def close(self):
        self.server.shutdown()


def indicator(n: int) -> dict:
    return {"type": "indicator", "spec_version": "2.1", "id": f"indicator--00000000-0000-4000-8000-{n:012d}",
            "created": "2026-11-01T00:00:00.000Z", "modified": "2026-11-01T00:00:00.000Z", "name": f"i{n}",
            "pattern_type": "stix", "pattern": "[ipv4-addr:value = '192.0.2.1']", "valid_from": "2026-11-01T00:00:00Z"}


def added(n: int) -> str:
    return f"2026-11-01T00:{n // 60:02d}:{n % 60:02d}.000000Z"


@pytest.mark.parametrize(("name", "page", "reason", "kept"), [
    ("endless", lambda n, a: ({"more": True, "next": f"t{n}", "objects": [indicator(n)]}, added(n)), "stopped after 5",
     True),
    ("empty", lambda n, a: ({"more": True, "next": f"t{n}"}, added(n)), "a page with nothing new while saying more", False),
    ("repeat", lambda n, a: ({"more": True, "next": "same", "objects": [indicator(1)]}, added(1)),
     "upstream TAXII repeats its next token", True),
])
def test_an_upstream_that_never_ends_is_bounded_and_resumed(hub, name, page, reason, kept):
    """A budget reached is a run cut short (ok, the rest next run); an upstream paging without
    progress fails the source, saying what it did, and what it sent before is kept."""
    fake = FakeTaxii(page)
    try:
        hub.run("sources", "add", "up", fake.url, "--kind", "taxii", "--option", "max_pages=5")
        r = hub.run("fetch", "--format", "json", ok=None)
        out = json.loads(r.stdout)[0]
        (src,) = hub.json("sources", "list")
        if name == "endless":
            assert out["status"] == "ok" and reason in out["note"] and reason in src["last_note"], out
        else:
            assert r.exit_code == 1 and out["status"] == "error" and reason in out["error"], out
            assert src["last_status"] == "error" and reason in src["last_error"]
        assert bool(out["new"]) is kept and bool(hub.json("advisories", "list", "--status", "all")) is kept
        first_run = len(fake.requests)
        assert first_run <= 5
        hub.run("fetch", "--format", "json", ok=None)
        if name == "endless":  # the next run starts from the cursor it reached, less the overlap
            assert fake.requests[first_run]["added_after"] == "2026-11-01T00:00:04.000000Z"
    finally:
        fake.close()


# --- content that costs CPU -------------------------------------------------------------------------------
def finishes(fn, seconds: float = 30):
    done = []
    t = threading.Thread(target=lambda: done.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert done, f"did not finish within {seconds} s"
    return done[0]


def test_crafted_text_takes_linear_time():
    source = Source(id="jvndb", kind="jvn")
    crafted = ("<item " * 60000).replace("<", "&lt;")
    body = (DATA / "jvn/vulsdata_jvndb_2023.rdf").read_text(encoding="utf-8").replace(
        "<description>", f"<description><![CDATA[{'<item ' * 60000}]]>{crafted}", 1).encode()
    entries = finishes(lambda: jvn.parse(body, source))
    assert len(entries) == 2
    assert finishes(lambda: xmlsafe.looks_like_html("<!-- x -->" * 100000 + "<!--" * 100000)) is False


# --- malformed fields: dropped or skipped, named, the rest kept --------------------------------------------
def test_bad_fields_are_dropped_and_bad_items_skipped(hub, tmp_path):
    text = (DATA / "jvn/vulsdata_jvndb_2022.rdf").read_text(encoding="utf-8")
    text = text.replace('score="7.8"', 'score="abc"', 1).replace('score="4.6"', 'score="NaN"', 1)
    first = text.index("<dcterms:issued>")
    text = (text[:first] + "<dcterms:issued>0001-01-01T00:00+09:00</dcterms:issued>"
            + text[text.index("</dcterms:issued>", first) + len("</dcterms:issued>"):])
    second = text.index("<dcterms:issued>", text.index("</item>"))
    text = (text[:second] + "<dcterms:issued>9999-12-31T23:59-14:00</dcterms:issued>"
            + text[text.index("</dcterms:issued>", second) + len("</dcterms:issued>"):])
    path = tmp_path / "jvn.rdf"
    path.write_text(text, encoding="utf-8")
    hub.run("sources", "add", "jvn", "https://jvn.example/", "--kind", "jvn")
    r = hub.run("ingest", str(path), "--source", "jvn", "--format", "json")
    out = json.loads(r.stdout)[0]
    assert out["new"] == 3 and out["skipped"] == 0
    assert any("CVSS score 'abc'" in w for w in out["warnings"]) and any("'NaN'" in w for w in out["warnings"])
    assert any("0001-01-01" in w and "date" in w for w in out["warnings"])
    assert any("9999-12-31" in w and "date" in w for w in out["warnings"])
    listed = hub.run("advisories", "list", "--format", "json").stdout
    json.loads(listed, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))  # strict JSON
    rep = report("x", [], labels="not-a-list", external_references=7, object_refs=5)
    odd = {"type": "indicator", "spec_version": "2.1", "id": "indicator--6f5e7f3a-1b1e-4b8e-9d5c-1a2b3c4d5e6f",
           "created": "2026-11-01T00:00:00.000Z", "modified": "2026-11-01T00:00:00.000Z",
           "object_marking_refs": 7, "pattern": "[x:y = 1]", "pattern_type": "stix", "valid_from": "2026-11-01T00:00:00Z"}
    hub.run("sources", "add", "stix", "https://s.example/", "--kind", "stix")
    bundle = write_bundle(tmp_path / "b.json", [rep, odd, {"type": "x", "id": "../../etc"}, {"id": 5}])
    out = json.loads(hub.run("ingest", str(bundle), "--source", "stix", "--format", "json").stdout)[0]
    assert out["status"] == "ok" and out["new"] == 2, out  # the report, and a wrapper for the indicator
    assert any("object_refs is not a list" in w for w in out["warnings"])
    assert any("without a STIX type and a valid id" in w for w in out["warnings"])


def test_rolie_entries_of_the_wrong_shape_are_left_out(hub, feed_server):
    doc = {"feed": {"entry": ["text", {"content": 5}, {"link": "x", "id": "ICSMA-0"},
                              {"id": "ICSMA-24-060-01", "updated": "2024-02-27T00:00:00Z",
                               "content": {"src": feed_server.url("/cisa_icsma/cisagov_CSAF_icsma-24-060-01.json")}}]}}
    hub.run("sources", "add", "csaf", feed_server.route("/rolie.json", json.dumps(doc)), "--kind", "csaf")
    out = json.loads(hub.run("fetch", "--format", "json").stdout)[0]
    assert out["status"] == "ok" and out["new"] == 1


def test_keyless_items_stay_apart_and_mislabelled_charsets_are_refused(hub, feed_server):
    items = "".join(f"<item><title>通知 {i}</title><description>本文 {i}</description></item>" for i in range(5))
    rss = f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>t</title>{items}</channel></rss>'
    hub.run("sources", "add", "mhlw", feed_server.route("/mhlw.xml", rss.encode()), "--kind", "rss")
    latin = feed_server.route("/latin.rdf", (DATA / "jvn/vulsdata_jvndb_2023.rdf").read_bytes(),
                              headers={"Content-Type": "application/rdf+xml; charset=ISO-8859-1"})
    hub.run("sources", "add", "latin", latin, "--kind", "jvn")
    out = {r["source"]: r for r in json.loads(hub.run("fetch", "--format", "json", ok=None).stdout)}
    assert out["mhlw"]["new"] == 5
    assert out["latin"]["status"] == "error" and "control characters" in out["latin"]["error"]
    assert "ISO-8859-1" in out["latin"]["error"].upper().replace("ISO8859-1", "ISO-8859-1") or \
        "iso8859-1" in out["latin"]["error"]
    assert "XML declaration says" in out["latin"]["error"]


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_utf8_mojibake_is_refused_at_its_character_offset(bom):
    """Japanese read once as ISO-8859-1 and saved again as UTF-8 (C1 controls in UTF-8 bytes) is
    refused, the offset counted in characters as for any other charset."""
    good = "<?xml version='1.0' encoding='UTF-8'?><rdf:RDF><title>脆弱性 é</title>"
    assert xmlsafe.decode(bom + good.encode() + b"</rdf:RDF>").endswith("é</title></rdf:RDF>")
    garbled = "脆弱性".encode().decode("latin-1")
    body = bom + (good + garbled + "</rdf:RDF>").encode()
    with pytest.raises(FeedError, match=rf"\(at offset {len(good) + 1}\)"):  # 脆 is E8 84 86: \x84 is 2nd
        xmlsafe.decode(body)


@pytest.mark.sqlite_only
def test_a_full_disk_is_named_in_one_line(tmp_path):
    from tests.conftest import Hub
    if os.getuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    # Room for an empty hub (103 pages of 16 KiB, and its WAL while `init` writes), not for the KEV catalog.
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6000k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        hub = Hub(mnt / "hub.db")
        (tmp_path / "none.toml").write_text("")
        hub.run("init", "--sources", str(tmp_path / "none.toml"))
        hub.run("sources", "add", "kev", "https://kev.example/", "--kind", "kev")
        r = hub.run("ingest", str(DATA / "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json"),
                    "--source", "kev", ok=None)
        assert r.exit_code == 1 and "disk full" in r.output and str(mnt) in r.output
        assert "Traceback" not in r.output and "rollback" not in r.output
        assert hub.json("advisories", "list") == []  # nothing partial, and reading still works
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


# --- ROLIE following does not reach where it should not -----------------------------------------------------
def test_a_rolie_index_cannot_reach_other_services(hub, feed_server):
    internal = []
    app = Flask("internal")

    @app.route("/<path:p>")
    def anything(p):
        internal.append(p)
        return "secret"

    svc = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=svc.serve_forever, daemon=True).start()
    try:
        other = f"http://127.0.0.1:{svc.server_port}"
        feed_server.route("/redirect.json", b"", status=302, headers={"Location": f"{other}/via-redirect"})
        entries = [{"id": f"ICSMA-{i}", "updated": f"2024-0{i}-01T00:00:00Z", "content": {"src": url}}
                   for i, url in enumerate([f"{other}/admin", "file:///etc/passwd", feed_server.url("/redirect.json"),
                                            f"http://localhost:{feed_server.base.rsplit(':', 1)[1]}/x"], 1)]
        hub.run("sources", "add", "csaf", feed_server.route("/rolie.json", json.dumps({"feed": {"entry": entries}})),
                "--kind", "csaf")
        out = json.loads(hub.run("fetch", "--format", "json", ok=None).stdout)[0]
        assert out["status"] == "error" and "not allowed for this source" in out["error"]
        assert internal == []  # nothing reached the other service, directly or by redirect
    finally:
        svc.shutdown()


def test_the_url_policy():
    public = Source(id="cisa", kind="csaf", url="https://www.cisa.gov/feed.json",
                    options={"url_map": {"https://www.cisa.gov/": "https://mirror.example.jp/cisa/"}})
    allowed = url_policy(public)
    assert allowed("https://www.cisa.gov/a.json") and allowed("https://mirror.example.jp/cisa/a.json")
    assert not allowed("https://www.cisa.gov:8443/a.json") and not allowed("http://evil.example/a")
    assert not allowed("ftp://www.cisa.gov/a") and not allowed("https://www.cisa.gov@evil.example/")
    local = Source(id="x", kind="csaf", url="https://www.cisa.gov/f", options={"allow_hosts": ["127.0.0.1"]})
    assert not url_policy(local)("http://127.0.0.1/a")  # listed, but loopback while the source is not


# --- strangers at the door ---------------------------------------------------------------------------------
def test_unknown_ids_cost_a_hash_check_and_are_never_logged(hub, monkeypatch):
    import base64
    import hashlib
    reader = Reader(hub.db, "jma", "GREEN", [])
    calls = []
    real = hashlib.scrypt
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: calls.append(1) or real(*a, **k))
    for user in ("jma", "ctx_0123456789ab_SeCrEtTyPeDiNtOtHeUsErNaMe"):
        calls.clear()
        auth = base64.b64encode(f"{user}:wrong".encode()).decode()
        r = reader.client.get("/taxii2/", headers={"Accept": TAXII, "Authorization": f"Basic {auth}"})
        assert r.status_code == 401 and len(calls) == 1, user
    log = hub.run("audit", "list", "--format", "json").stdout
    assert "SeCrEt" not in log and '"member": "(not a member)"' in log


def test_rotating_forwarded_for_does_not_escape_the_counter(hub):
    reader = Reader(hub.db, "jma", "GREEN", [])
    codes = []
    for i in range(21):
        r = reader.client.get("/taxii2/", headers={"Accept": TAXII, "X-Forwarded-For": f"203.0.113.{i}",
                                                   "Authorization": "Basic " + _b64(f"nobody{i}:x")})
        codes.append(r.status_code)
    assert codes[:20] == [401] * 20 and codes[20] == 429


def _b64(text: str) -> str:
    import base64
    return base64.b64encode(text.encode()).decode()


def test_locked_attackers_never_hold_a_worker(hub):
    Reader(hub.db, "jma", "GREEN", [])
    Reader(hub.db, "other", "GREEN", [])
    store = Store(hub.db)
    good = members.new_secret(store, "other")
    server = ServerProcess(hub.db, gunicorn=True, workers=2).start()
    try:
        for _ in range(6):
            requests.get(server.base + "/taxii2/", auth=("jma", "wrong"), headers={"Accept": TAXII})
        results = []
        attackers = [threading.Thread(target=lambda: results.append(requests.get(
            server.base + "/taxii2/", auth=("jma", "wrong"), headers={"Accept": TAXII}).status_code))
            for _ in range(4)]
        for t in attackers:
            t.start()
        t0 = time.monotonic()
        ok = requests.get(server.base + "/taxii2/", auth=("other", good), headers={"Accept": TAXII})
        waited = time.monotonic() - t0
        for t in attackers:
            t.join()
    finally:
        server.stop()
    assert ok.status_code == 200 and waited < 2, waited
    assert results == [429] * 4


def test_member_submissions_are_capped_and_shown_in_triage(hub):
    from ceptoar.sharing.taxii.app import create_app
    writer = Reader(hub.db, "writer", "GREEN", [])
    Store(hub.db).members.set_grant("writer", "medical", False, True)
    client = create_app(str(hub.db), max_objects=3, max_objects_per_day=5).test_client()
    url = f"/ceptoar/collections/{writer.uuids['medical']}/objects/"
    headers = writer.headers | {"Content-Type": TAXII}
    first = client.post(url, json={"objects": [indicator(i) for i in range(5)]}, headers=headers).get_json()
    assert first["success_count"] == 3 and first["failure_count"] == 2
    assert all("over the cap" in f["message"] for f in first["failures"])
    second = client.post(url, json={"objects": [indicator(i) for i in range(10, 15)]}, headers=headers).get_json()
    assert second["success_count"] == 2 and second["failure_count"] == 3  # 5 a day
    rows = hub.json("advisories", "list", "--source", "member-writer")
    assert rows and {r["submitted_by"] for r in rows} == {"writer"}
    assert "writer" in hub.run("advisories", "list").output


def test_nesting_and_missing_lengths_are_refused_cleanly(hub):
    deep = hub.run("collections", "add", "deep", "--title", "x", "--filter", "(" * 60 + "medical" + ")" * 60, ok=None)
    assert deep.exit_code == 1 and "nested more than 50 levels" in deep.output and "Traceback" not in deep.output
    writer = Reader(hub.db, "writer", "GREEN", [])
    Store(hub.db).members.set_grant("writer", "medical", False, True)
    body = b'{"objects": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    r = writer.client.post(f"/ceptoar/collections/{writer.uuids['medical']}/objects/", data=body,
                           headers=writer.headers | {"Content-Type": TAXII})
    assert r.status_code == 400 and r.get_json()["http_status"] == "400" and "nested" in r.get_json()["description"]
    server = ServerProcess(hub.db).start()  # `ceptoar serve`
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"POST /ceptoar/collections/x/objects/ HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      b"application/taxii+json\r\n\r\n")
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 411") and b"application/taxii+json" in answer
    finally:
        server.stop()


# --- the public URL, and a real TLS proxy in front ------------------------------------------------------------
def test_discovery_and_redirects_never_follow_the_host_header(hub):
    from ceptoar.sharing.taxii.app import create_app
    reader = Reader(hub.db, "jma", "GREEN", [])
    client = create_app(str(hub.db), public_url="https://taxii.example.jp").test_client()
    r = client.get("/taxii2/", headers=reader.headers | {"Host": "evil.example"})
    assert r.get_json()["api_roots"] == ["https://taxii.example.jp/ceptoar/"]
    r = client.get("/taxii2", headers=reader.headers | {"Host": "evil.example"})
    assert r.status_code == 200 and "Location" not in r.headers


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # our own self-signed test cert
def test_behind_nginx_with_tls(hub, tmp_path, monkeypatch):
    nginx()
    Reader(hub.db, "jma", "GREEN", [])
    secret = members.new_secret(Store(hub.db), "jma")
    server = self_signed(tmp_path, "server", "/CN=taxii.example.jp")
    port = free_port()
    public = f"https://taxii.example.jp:{port}"
    monkeypatch.setenv("CEPTOAR_TAXII_PROXIES", "1")
    monkeypatch.setenv("CEPTOAR_PUBLIC_URL", public)
    upstream = ServerProcess(hub.db, gunicorn=True, workers=1).start()
    try:
        with Nginx(tmp_path, upstream.base, server=server, members_ca=server[0], port=port) as proxy:
            base = proxy.base
            r = requests.get(base + "/taxii2/", auth=("jma", secret), verify=False,
                             headers={"Accept": TAXII, "Host": "evil.example", "X-Forwarded-For": "203.0.113.99"})
            assert r.status_code == 200 and r.json()["api_roots"] == [f"{public}/ceptoar/"]
            entry = [a for a in Store(hub.db).audit.list(member="jma") if a["path"] == "/taxii2/"][-1]
            assert entry["address"] == "127.0.0.1"  # the proxy's view of the client, not the client's claim
            assert requests.get(base + "/taxii2", verify=False, headers={"Accept": TAXII}).status_code == 401
    finally:
        upstream.stop()
