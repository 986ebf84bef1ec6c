"""Several front ends, one database (issue 34): two gunicorn instances serving TAXII from one
PostgreSQL, as a secretariat that outgrew one machine runs them, with a worker beside them. Pages,
`next` tokens and `added_after` give the same answers from either front end; what is published (or
submitted) through one is served by the other at once; the worker's lease holds against a second
worker on another host; the audit log holds every request from both. And each TAXII page, whatever
its size, is a fixed number of statements, on both engines."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from ceptoar.publishing import triage
from ceptoar.sharing.taxii.app import create_app
from ceptoar.store import Store
from tests.conftest import ENGINE, ROOT, postgres_server
from tests.taxii_fixtures import ServerProcess, build_world

TAXII = "application/taxii+json;version=2.1"


def auth(member: str, secret: str) -> dict:
    return {"Accept": TAXII, "Authorization": "Basic " + base64.b64encode(f"{member}:{secret}".encode()).decode()}


def test_a_taxii_page_is_a_fixed_number_of_statements(tmp_path, monkeypatch):
    """Which: the member with its grants and its recent failed logins (lockout), the collection with
    whether it holds STIX 2.0 versions, the page itself (objects joined in), and the audit entry."""
    w = build_world(tmp_path)
    client = create_app(str(w.db)).test_client()
    head = auth("assoc-green", w.secrets["assoc-green"])
    kev = w.uuids["kev"]
    client.get(f"/ceptoar/collections/{kev}/objects/?limit=1", headers=head)  # warm: first-use lookups
    seen: list[str] = []
    for name in ("execute", "executemany"):
        real = getattr(Store, name)
        monkeypatch.setattr(Store, name, lambda self, sql, args=(), real=real: seen.append(sql) or real(self, sql, args))
    counts = {}
    for label, url in (("1", "objects/?limit=1"), ("10", "objects/?limit=10"), ("100", "objects/?limit=100"),
                       ("manifest 100", "manifest/?limit=100")):
        seen.clear()
        r = client.get(f"/ceptoar/collections/{kev}/{url}", headers=head)
        assert r.status_code == 200
        counts[label] = len(seen)
    first = client.get(f"/ceptoar/collections/{kev}/objects/?limit=10", headers=head).get_json()
    assert len(first["objects"]) == 10 and first["next"]
    seen.clear()
    deep = client.get(f"/ceptoar/collections/{kev}/objects/?limit=10&next={first['next']}", headers=head)
    assert deep.status_code == 200 and len(deep.get_json()["objects"]) == 10
    counts["next page"] = len(seen)
    assert set(counts.values()) == {4}, counts
    assert sum(s.lstrip().upper().startswith("INSERT INTO AUDIT") for s in seen) == 1


@pytest.fixture
def two_fronts(tmp_path):
    if ENGINE != "postgresql":
        pytest.skip("several front ends share one PostgreSQL (CEPTOAR_TEST_ENGINE=postgresql)")
    w = build_world(tmp_path)
    a = ServerProcess(w.db, gunicorn=True, workers=2).start()
    b = ServerProcess(w.db, gunicorn=True, workers=2).start()
    yield w, a, b
    a.stop()
    b.stop()


def pages(base: str, url: str, head: dict, limit: int = 7) -> list[list[str]]:
    out, token = [], None
    while True:
        r = requests.get(base + url, params={"limit": limit, **({"next": token} if token else {})}, headers=head,
                         timeout=20)
        assert r.status_code == 200, r.text
        body = r.json()
        out.append([o["id"] + "@" + o.get("modified", o.get("created", "")) for o in body.get("objects", [])])
        token = body.get("next")
        if not token:
            return out


def test_two_front_ends_and_a_worker_on_one_postgresql(two_fronts, tmp_path):
    w, a, b = two_fronts
    store = Store(w.db)
    head = auth("assoc-green", w.secrets["assoc-green"])
    url = f"/ceptoar/collections/{w.uuids['kev']}/objects/"
    before = store.scalar("SELECT COUNT(*) FROM audit WHERE path LIKE '/ceptoar/%'")
    requests_made = 0
    on_a, on_b = pages(a.base, url, head), pages(b.base, url, head)
    requests_made += len(on_a) + len(on_b)
    assert on_a == on_b and len(on_a) > 2
    # A token from one front end opens the next page on the other.
    first = requests.get(a.base + url, params={"limit": 7}, headers=head, timeout=20).json()
    second = requests.get(b.base + url, params={"limit": 7, "next": first["next"]}, headers=head, timeout=20).json()
    requests_made += 2
    assert [o["id"] for o in second["objects"]] == [x.split("@")[0] for x in on_a[1]]
    # added_after from one front end's header, asked of the other.
    r = requests.get(a.base + url, params={"limit": 7}, headers=head, timeout=20)
    last = r.headers["X-TAXII-Date-Added-Last"]
    after_a = requests.get(a.base + url, params={"added_after": last}, headers=head, timeout=20).json()
    after_b = requests.get(b.base + url, params={"added_after": last}, headers=head, timeout=20).json()
    requests_made += 3
    assert after_a == after_b and after_a["objects"]
    # A publication is served by both at once; a submission through one has its status on the other.
    new = [x["id"] for x in store.advisories.list(source="kev", status="new", limit=3)]
    triage.publish(store, new, "analyst")
    grown_a, grown_b = pages(a.base, url, head, 100), pages(b.base, url, head, 100)
    requests_made += len(grown_a) + len(grown_b)
    assert grown_a == grown_b and sum(map(len, grown_a)) > sum(map(len, on_a))
    assert {i.split("@")[0] for p in grown_b for i in p} >= set(new)
    writer = auth("writer", w.secrets["writer"]) | {"Content-Type": TAXII}
    bundle = {"objects": [{"type": "indicator", "spec_version": "2.1",
                           "id": "indicator--6b2c6ab8-5c2e-4c0e-9a43-5b1c1d1e1f10", "created": "2026-12-01T00:00:00.000Z",
                           "modified": "2026-12-01T00:00:00.000Z", "name": "from front end A", "pattern_type": "stix",
                           "pattern": "[ipv4-addr:value = '203.0.113.7']", "valid_from": "2026-12-01T00:00:00Z"}]}
    posted = requests.post(f"{a.base}/ceptoar/collections/{w.uuids['medical']}/objects/", json=bundle,
                           headers=writer, timeout=20)
    assert posted.status_code == 202, posted.text
    status = requests.get(f"{b.base}/ceptoar/status/{posted.json()['id']}/", headers=writer, timeout=20)
    requests_made += 2
    assert status.status_code == 200 and status.json()["id"] == posted.json()["id"]
    # The audit log holds every request from both.
    after = store.scalar("SELECT COUNT(*) FROM audit WHERE path LIKE '/ceptoar/%'")
    assert after - before == requests_made
    # The worker's lease holds against a second worker on another host.
    env = dict(os.environ, CEPTOAR_DB=w.db)
    first_worker = subprocess.Popen([sys.executable, "-m", "ceptoar.cli", "--db", w.db, "run", "--every", "60"],
                                    cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while store.leases.get("worker") is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.leases.get("worker") is not None
        other_host = ("import socket; socket.gethostname = lambda: 'front-end-b'\n"
                      "from ceptoar.cli import main; main()")
        second = subprocess.run([sys.executable, "-c", other_host, "--db", w.db, "run", "--once"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode != 0 and "is already running" in second.stderr, second.stderr
        assert store.leases.get("worker")["holder"].split(":")[0] != "front-end-b"
    finally:
        first_worker.send_signal(signal.SIGTERM)
        first_worker.wait(30)


def test_a_front_end_reads_from_a_hot_standby(tmp_path):
    """Streaming replication set up here (pg_basebackup): a gunicorn front end reads its pages from
    the standby (`taxii_read_db`); its audit entries, and a member's submission, go to the primary."""
    if ENGINE != "postgresql":
        pytest.skip("a hot standby is PostgreSQL's (CEPTOAR_TEST_ENGINE=postgresql)")
    w = build_world(tmp_path)
    primary = postgres_server()
    standby = primary.standby()
    read_url = w.db.replace(f":{primary.port}/", f":{standby.port}/")
    store, replica = Store(w.db), Store(read_url)
    front = None
    try:
        def caught_up(check, seconds: float = 30) -> None:
            deadline = time.monotonic() + seconds
            while not check():
                assert time.monotonic() < deadline, "the standby did not catch up"
                time.sleep(0.1)

        caught_up(lambda: replica.scalar("SELECT COUNT(*) FROM membership") == store.scalar(
            "SELECT COUNT(*) FROM membership"))
        assert replica.scalar("SELECT pg_is_in_recovery()") is True
        front = ServerProcess(w.db, gunicorn=True, workers=2)
        os.environ["CEPTOAR_TAXII_READ_DB"] = read_url
        try:
            front.start()
        finally:
            del os.environ["CEPTOAR_TAXII_READ_DB"]
        head = auth("assoc-green", w.secrets["assoc-green"])
        url = f"/ceptoar/collections/{w.uuids['kev']}/objects/"
        served = pages(front.base, url, head, 100)
        assert sum(map(len, served)) == store.scalar(
            "SELECT COUNT(*) FROM membership WHERE collection = 'kev' AND tlp_rank <= 1")
        # Reads come from the standby: a row the standby does not have yet is not served. Pause its
        # replay, publish on the primary, and the front end serves the standby's view until replay resumes.
        replica.execute("SELECT pg_wal_replay_pause()")
        caught_up(lambda: replica.scalar("SELECT pg_get_wal_replay_pause_state()") == "paused")
        new = [x["id"] for x in store.advisories.list(source="kev", status="new", limit=2)]
        triage.publish(store, new, "analyst")
        during = {i.split("@")[0] for p in pages(front.base, url, head, 100) for i in p}
        assert not during & set(new)  # the standby's view, not the primary's
        replica.execute("SELECT pg_wal_replay_resume()")
        caught_up(lambda: replica.scalar("SELECT COUNT(*) FROM publications WHERE advisory = ?", (new[0],)) == 1)
        after = {i.split("@")[0] for p in pages(front.base, url, head, 100) for i in p}
        assert set(new) <= after
        # Audit entries (and a submission) were written to the primary.
        audited = store.scalar("SELECT COUNT(*) FROM audit WHERE path LIKE ?", (url + "%",))
        assert audited >= 3
        writer = auth("writer", w.secrets["writer"]) | {"Content-Type": TAXII}
        bundle = {"objects": [{"type": "indicator", "spec_version": "2.1",
                               "id": "indicator--0c7b5b2a-1d4e-4f8a-9b3c-2e1f0a9b8c7d",
                               "created": "2026-12-01T00:00:00.000Z", "modified": "2026-12-01T00:00:00.000Z",
                               "name": "to the primary", "pattern_type": "stix",
                               "pattern": "[ipv4-addr:value = '203.0.113.9']", "valid_from": "2026-12-01T00:00:00Z"}]}
        posted = requests.post(f"{front.base}/ceptoar/collections/{w.uuids['medical']}/objects/", json=bundle,
                               headers=writer, timeout=20)
        assert posted.status_code == 202, posted.text
        assert store.scalar("SELECT COUNT(*) FROM taxii_status WHERE id = ?", (posted.json()["id"],)) == 1
    finally:
        if front:
            front.stop()
        replica.close()
        standby.stop()
