"""Upstream TAXII pulls (source kind `taxii`): from the hub's own server, and from medallion's
memory backend as an independent peer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from taxii2client.v21 import Collection

from ceptoar.publishing import triage
from ceptoar.store import Store
from tests.conftest import DATA, Hub
from tests.taxii_fixtures import ServerProcess, build_world, free_port, wait_for


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    world = build_world(tmp_path_factory.mktemp("upstream"))
    server = ServerProcess(world.db).start()
    yield world, server
    server.stop()


@pytest.fixture
def downstream(tmp_path, monkeypatch, upstream):
    world, _ = upstream
    monkeypatch.setenv("UPSTREAM_USER", "assoc-green")
    monkeypatch.setenv("UPSTREAM_SECRET", world.secrets["assoc-green"])
    hub = Hub(tmp_path / "downstream.db")
    (tmp_path / "none.toml").write_text("")
    hub.run("init", "--sources", str(tmp_path / "none.toml"))
    return hub


def fetch(hub, ok=True):
    r = hub.run("fetch", "--format", "json", ok=None)
    assert (r.exit_code == 0) is ok, r.output
    return {x["source"]: x for x in json.loads(r.stdout)}


def test_hub_to_hub_pull_follows_next_and_keeps_a_cursor(upstream, downstream):
    world, server = upstream
    url = f"{server.base}/ceptoar/collections/{world.uuids['kev']}/"
    downstream.run("sources", "add", "peer", url, "--kind", "taxii", "--tlp", "GREEN",
                   "--option", "user_env=UPSTREAM_USER", "--option", "password_env=UPSTREAM_SECRET",
                   "--option", "page_size=40")
    published = len(Store(world.db).advisories.list(source="kev", status="published"))
    first = fetch(downstream)["peer"]
    assert first["status"] == "ok" and first["new"] == published  # one advisory per upstream report
    rows = downstream.json("advisories", "list", "--source", "peer")
    assert all(r["tlp"] == "GREEN" and r["status"] == "new" for r in rows)
    assert fetch(downstream)["peer"]["new"] == 0  # the cursor (with its overlap) re-reads nothing new
    # Upstream publishes more, in one transaction: all of them share one date_added.
    up = Store(world.db)
    more = [r["id"] for r in up.advisories.list(source="kev", search="Adobe", status="new")]
    triage.publish(up, more, "test")
    second = fetch(downstream)["peer"]
    assert second["new"] == len(more) > 3


def test_pull_from_an_api_root_reads_every_readable_collection(upstream, downstream):
    world, server = upstream
    downstream.run("sources", "add", "peer-root", f"{server.base}/ceptoar/", "--kind", "taxii",
                   "--option", "user_env=UPSTREAM_USER", "--option", "password_env=UPSTREAM_SECRET",
                   "--option", "match_type=report")
    out = fetch(downstream)["peer-root"]
    assert out["status"] == "ok" and out["new"] > 0
    titles = {r["title"] for r in downstream.json("advisories", "list", "--source", "peer-root")}
    store = Store(world.db)
    assert store.advisories.list(ids=[world.green_report])[0]["title"] in titles
    assert store.advisories.list(ids=[world.amber_report])[0]["title"] not in titles  # above GREEN clearance


def test_bad_credentials_and_missing_env_fail_that_source_alone(upstream, downstream, monkeypatch):
    world, server = upstream
    url = f"{server.base}/ceptoar/collections/{world.uuids['kev']}/"
    downstream.run("sources", "add", "nokey", url, "--kind", "taxii", "--option", "password_env=NOT_SET_ANYWHERE")
    monkeypatch.setenv("WRONG_SECRET", "ctx_000000000000_" + "x" * 40)
    downstream.run("sources", "add", "wrong", url, "--kind", "taxii", "--option", "user_env=UPSTREAM_USER",
                   "--option", "password_env=WRONG_SECRET")
    out = fetch(downstream, ok=False)
    assert "NOT_SET_ANYWHERE" in out["nokey"]["error"]
    assert "HTTP 401" in out["wrong"]["error"]
    r = downstream.run("sources", "add", "x", url, "--kind", "taxii", "--option", "password=hunter2", ok=None)
    assert r.exit_code == 1 and "environment variables" in r.output


@pytest.fixture
def medallion_peer(tmp_path):
    port = free_port()
    cid = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
    data = {
        "/discovery": {"title": "peer", "default": f"http://127.0.0.1:{port}/api1/",
                       "api_roots": [f"http://127.0.0.1:{port}/api1/"]},
        "api1": {"information": {"title": "api1", "versions": ["application/taxii+json;version=2.1"],
                                 "max_content_length": 10485760},
                 "status": [],
                 "collections": [{"id": cid, "title": "peer collection", "can_read": True, "can_write": True,
                                  "media_types": ["application/stix+json;version=2.1"], "objects": [],
                                  "manifest": []}]},
    }
    (tmp_path / "data.json").write_text(json.dumps(data))
    config = {"backend": {"module": "medallion.backends.memory_backend", "module_class": "MemoryBackend",
                          "filename": str(tmp_path / "data.json")},
              "users": {"peer": "peer-secret"}, "taxii": {"max_page_size": 10}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    medallion = Path(sys.executable).parent / "medallion"
    proc = subprocess.Popen([str(medallion), "--port", str(port), str(tmp_path / "config.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/taxii2/", proc)
        url = f"http://127.0.0.1:{port}/api1/collections/{cid}/"
        coll = Collection(url, user="peer", password="peer-secret")
        bundle = json.loads((DATA / "stix/elastic_labs_cisa_ais_sample_stix.json").read_text())
        status = coll.add_objects(json.dumps({"objects": bundle["objects"]}), wait_for_completion=False)
        assert status.success_count == len(bundle["objects"])
        yield url, bundle
    finally:
        proc.terminate()
        proc.wait(10)


def test_pull_from_medallion_memory_backend(medallion_peer, downstream, monkeypatch):
    url, bundle = medallion_peer
    monkeypatch.setenv("PEER_USER", "peer")
    monkeypatch.setenv("PEER_PASSWORD", "peer-secret")
    downstream.run("sources", "add", "medallion", url, "--kind", "taxii", "--option", "user_env=PEER_USER",
                   "--option", "password_env=PEER_PASSWORD", "--option", "page_size=10")
    out = fetch(downstream)["medallion"]
    assert out["status"] == "ok" and out["new"] == 2, (out["note"], out["warnings"], out["unchanged"])  # the AIS report, and a wrapper for the unreferenced object
    ais = [r for r in downstream.json("advisories", "list", "--source", "medallion") if r["title"].startswith("AA23")]
    shown = json.loads(downstream.run("advisories", "show", ais[0]["id"], "--format", "stix").stdout)
    assert sum(o["type"] == "indicator" for o in shown["objects"]) == 18
    assert fetch(downstream)["medallion"]["new"] == 0
