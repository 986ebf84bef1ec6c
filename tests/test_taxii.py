"""The TAXII 2.1 server as members see it: a real server process, queried with taxii2-client
and raw HTTP, row by row of ../shared/TAXII-CHECKLIST.md."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from taxii2client.v21 import ApiRoot, Collection, Server, as_pages

from ceptoar.core.model import TLP_IDS
from ceptoar.publishing.collections import collection_uuid
from ceptoar.store import Store
from tests.taxii_fixtures import TAXII, ServerProcess, build_world

TS_RE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("taxii"))


@pytest.fixture(scope="module")
def server(world):
    s = ServerProcess(world.db).start()
    yield s
    s.stop()


def coll_url(server, world, cid):
    return f"{server.base}/ceptoar/collections/{world.uuids[cid]}/"


def collection(server, world, cid, member) -> Collection:
    return Collection(coll_url(server, world, cid), user=member, password=world.secrets[member])


def get(server, world, path, member="assoc-green", accept=TAXII, **kw):
    auth = world.auth(member) if member else None
    url = path if path.startswith("http") else server.base + path
    return requests.get(url, auth=auth, headers={"Accept": accept}, **kw)


def all_pages(coll, per_request=100, **filters):
    envelopes = list(as_pages(coll.get_objects, per_request=per_request, **filters))
    return envelopes, [o for e in envelopes for o in e.get("objects", [])]


def test_discovery_and_api_root(server, world):
    s = Server(server.base + "/taxii2/", user="assoc-green", password=world.secrets["assoc-green"])
    assert s.default.url == server.base + "/ceptoar/"
    assert [r.url for r in s.api_roots] == [server.base + "/ceptoar/"]
    root = ApiRoot(server.base + "/ceptoar/", user="assoc-green", password=world.secrets["assoc-green"])
    assert root.versions == [TAXII] and root.max_content_length > 0


def test_members_see_only_their_collections_with_their_flags(server, world):
    for member, expected in [("assoc-green", {"kev": (True, False), "medical": (True, False), "jma-amber": (True, False)}),
                             ("assoc-amber", {"jma-amber": (True, False), "medical": (True, True)}),
                             ("writer", {"medical": (False, True)})]:
        root = ApiRoot(server.base + "/ceptoar/", user=member, password=world.secrets[member])
        seen = {c._raw["alias"]: (c.can_read, c.can_write) for c in root.collections}
        assert seen == expected, member
        for c in root.collections:
            assert c.id == collection_uuid(c._raw["alias"])
    r = get(server, world, "/ceptoar/collections/")
    ids = [c["id"] for c in r.json()["collections"]]
    assert ids == [world.uuids[c] for c in sorted(["jma-amber", "kev", "medical"])]  # stable order


def test_as_pages_walks_every_object_once(server, world):
    coll = collection(server, world, "kev", "assoc-green")
    envelopes, objects = all_pages(coll, per_request=100)
    assert len(envelopes) >= 5
    for e in envelopes[:-1]:
        assert e["more"] is True and e["next"] and len(e["objects"]) == 100
    assert envelopes[-1]["more"] is False and "next" not in envelopes[-1]
    keys = [(o["id"], o.get("modified")) for o in objects]
    assert len(keys) == len(set(keys))
    store = Store(world.db)
    published = store.advisories.list(source="kev", status="published")
    reports = [o for o in objects if o["type"] == "report"]
    assert len(reports) == len(published)
    assert {o["type"] for o in objects} == {"report", "vulnerability", "identity", "marking-definition", "extension-definition"}
    manifest = [m for e in as_pages(coll.get_manifest, per_request=100) for m in e.get("objects", [])]
    assert [(m["id"], m["version"]) for m in manifest] == [(o["id"], o.get("modified") or o["created"]) for o in objects]
    dates = [m["date_added"] for m in manifest]
    assert dates == sorted(dates)
    assert all(m["media_type"] == "application/stix+json;version=2.1" for m in manifest)


def test_filters(server, world):
    coll = collection(server, world, "kev", "assoc-green")
    _, vulns = all_pages(coll, type="vulnerability")
    assert vulns and {o["type"] for o in vulns} == {"vulnerability"}
    _, two = all_pages(coll, type=["report", "identity"])
    assert {o["type"] for o in two} == {"report", "identity"}
    one_id = vulns[0]["id"]
    assert [o["id"] for o in coll.get_objects(id=one_id)["objects"]] == [one_id]
    assert coll.get_objects(spec_version="2.1")["objects"]
    r = get(server, world, coll.url + "objects/?match[spec_version]=2.0")
    assert r.status_code == 200 and r.json() == {}
    # added_after: the X-TAXII-Date-Added headers make a cursor
    first = get(server, world, coll.url + "objects/?limit=10")
    assert first.headers["X-TAXII-Date-Added-First"] <= first.headers["X-TAXII-Date-Added-Last"]
    after = get(server, world, coll.url + "objects/", params={"added_after": first.headers["X-TAXII-Date-Added-Last"]})
    def versions(objects):
        return {(o["id"], o.get("modified", o.get("created"))) for o in objects}

    assert after.json()["objects"] and not versions(first.json()["objects"]) & versions(after.json()["objects"])
    assert all(m["date_added"] > first.headers["X-TAXII-Date-Added-Last"]
               for m in get(server, world, coll.url + "manifest/", params={
                   "added_after": first.headers["X-TAXII-Date-Added-Last"]}).json().get("objects", []))


def test_versions_first_last_all_and_exact(server, world):
    green = world.green_report
    coll = collection(server, world, "medical", "assoc-green")
    versions = coll.object_versions(green)["versions"]
    assert len(versions) == 2 and versions == sorted(versions)
    last = coll.get_object(green)["objects"]
    assert [o["modified"] for o in last] == [versions[-1]] and "jma" in last[0]["labels"]
    first = coll.get_object(green, version="first")["objects"]
    assert [o["modified"] for o in first] == [versions[0]]
    every = coll.get_object(green, version="all")["objects"]
    assert [o["modified"] for o in every] == versions
    exact = coll.get_object(green, version=versions[0])["objects"]
    assert [o["modified"] for o in exact] == [versions[0]]
    both = coll.get_objects(id=green, version=["first", "last"])["objects"]
    assert sorted(o["modified"] for o in both) == versions
    r = get(server, world, coll.url + f"objects/{green}/")
    assert r.headers["X-TAXII-Date-Added-First"] and r.headers["X-TAXII-Date-Added-Last"]


def test_tlp_clearance_is_enforced_on_every_endpoint(server, world):
    amber = world.amber_report
    for member, sees in [("assoc-green", False), ("assoc-amber", True)]:
        coll = collection(server, world, "jma-amber", member)
        _, objects = all_pages(coll, version="all")
        assert (amber in {o["id"] for o in objects}) is sees, member
        manifest = [m["id"] for e in as_pages(coll.get_manifest, per_request=50) for m in e.get("objects", [])]
        assert (amber in manifest) is sees
        r = get(server, world, coll.url + f"objects/{amber}/", member=member)
        assert r.status_code == (200 if sees else 404)
        r = get(server, world, coll.url + f"objects/{amber}/versions/", member=member)
        assert r.status_code == (200 if sees else 404)
    # The GREEN member still gets what it may see in that collection: the GREEN report tagged jma
    # and public CVE objects, nothing marked above GREEN.
    _, objects = all_pages(collection(server, world, "jma-amber", "assoc-green"), version="all")
    allowed = {TLP_IDS["CLEAR"], TLP_IDS["GREEN"]}
    assert world.green_report in {o["id"] for o in objects}
    assert all(set(o.get("object_marking_refs", [])) <= allowed for o in objects)
    # A CLEAR member never sees the GREEN report in `medical`.
    _, clear = all_pages(collection(server, world, "medical", "assoc-clear"))
    assert world.green_report not in {o["id"] for o in clear}


def test_empty_results_still_carry_headers_and_no_empty_lists(server, world):
    coll = collection(server, world, "kev", "assoc-green")
    r = get(server, world, coll.url + "objects/", params={"match[type]": "malware"})
    assert r.status_code == 200 and r.json() == {}
    assert r.headers["X-TAXII-Date-Added-First"] and r.headers["X-TAXII-Date-Added-Last"]
    r = get(server, world, coll.url + "manifest/", params={"added_after": "2999-01-01T00:00:00Z"})
    assert r.json() == {} and r.headers["X-TAXII-Date-Added-Last"] == "2999-01-01T00:00:00.000000Z"


@pytest.mark.parametrize("query", [
    "added_after=yesterday", "added_after=2024-13-01T00:00:00Z", "limit=0", "limit=abc", "limit=-1",
    "match[type]=report&match[type]=identity", "match[version]=all,first", "match[version]=sometime",
    "match[id]=not-an-id", "match[spec_version]=3.0", "match[foo]=bar", "next=garbage", "match[type]=", "next=",
])
def test_bad_parameters_are_taxii_400(server, world, query):
    r = get(server, world, coll_url(server, world, "kev", ) + "objects/?" + query)
    assert r.status_code == 400, (query, r.text)
    assert r.headers["Content-Type"] == TAXII
    body = r.json()
    assert body["http_status"] == "400" and body["title"]


def test_next_carries_its_query_and_survives_restart(world, tmp_path):
    s = ServerProcess(world.db).start()
    try:
        url = coll_url(s, world, "kev") + "objects/"
        page1 = get(s, world, url + "?limit=50").json()
        token = page1["next"]
        # The token's query governs whatever filters come with it (OpenCTI's connector drops
        # added_after and keeps other parameters as they were).
        with_other_filters = get(s, world, url, params={"limit": 50, "next": token, "match[type]": "malware",
                                                         "added_after": "2999-01-01T00:00:00Z"})
        assert with_other_filters.status_code == 200 and len(with_other_filters.json()["objects"]) == 50
        tampered = get(s, world, url, params={"limit": 50, "next": token[:-2] + "00"})
        assert tampered.status_code == 400 and "not valid" in tampered.json()["description"]
        # A token of another collection is ignored: the request is served as if it had none.
        other = coll_url(s, world, "medical") + "objects/"
        fresh = get(s, world, other, params={"limit": 5}).json()
        stale = get(s, world, other, params={"limit": 5, "next": token}).json()
        assert [o["id"] for o in stale["objects"]] == [o["id"] for o in fresh["objects"]]
        other_member = get(s, world, coll_url(s, world, "kev") + "objects/", member="gone", params={"next": token})
        assert other_member.status_code == 401  # disabled member
    finally:
        s.stop()
    s2 = ServerProcess(world.db).start()  # a new process: the token still works
    try:
        url = coll_url(s2, world, "kev") + "objects/"
        page2 = get(s2, world, url, params={"limit": 50, "next": token}).json()
        ids1 = {(o["id"], o.get("modified")) for o in page1["objects"]}
        ids2 = {(o["id"], o.get("modified")) for o in page2["objects"]}
        assert len(page2["objects"]) == 50 and not ids1 & ids2
    finally:
        s2.stop()


def test_authentication_and_authorization(server, world):
    kev = coll_url(server, world, "kev")
    for auth in [None, ("assoc-green", "wrong"), ("nobody", "x"), ("gone", world.secrets["gone"])]:
        r = requests.get(kev + "objects/", auth=auth, headers={"Accept": TAXII})
        assert r.status_code == 401 and r.headers["Content-Type"] == TAXII and r.json()["http_status"] == "401"
    bearer = requests.get(kev + "objects/?limit=1", headers={"Accept": TAXII,
                                                              "Authorization": f"Bearer {world.secrets['assoc-green']}"})
    assert bearer.status_code == 200
    bad_bearer = requests.get(kev + "objects/", headers={"Accept": TAXII, "Authorization": "Bearer ctx_000000000000_x"})
    assert bad_bearer.status_code == 401
    # not granted → 404 everywhere; granted without read → 403 on reads
    assert get(server, world, kev, member="assoc-amber").status_code == 404
    assert get(server, world, kev + "objects/", member="assoc-amber").status_code == 404
    medical = coll_url(server, world, "medical")
    for path in ["objects/", "manifest/", f"objects/{world.green_report}/", f"objects/{world.green_report}/versions/"]:
        r = get(server, world, medical + path, member="writer")
        assert r.status_code == 403 and r.json()["http_status"] == "403", path
    unknown = f"{server.base}/ceptoar/collections/{uuid.uuid4()}/"
    assert get(server, world, unknown).status_code == 404
    assert get(server, world, kev + "objects/vulnerability--00000000-0000-4000-8000-000000000000/").status_code == 404
    assert get(server, world, "/nosuchroot/").status_code == 404
    assert get(server, world, "/taxii2/", accept="text/html").status_code == 406
    assert get(server, world, "/taxii2/", accept="text/html").headers["Content-Type"] == TAXII


def test_plain_media_type_is_accepted(server, world):
    r = get(server, world, "/taxii2/", accept="application/taxii+json")
    assert r.status_code == 200 and r.headers["Content-Type"] == TAXII
    r = get(server, world, "/taxii2/", accept="application/taxii+json;version=2.0")
    assert r.status_code == 406 and r.json()["http_status"] == "406"
    # curl's default, a browser's, a wildcard, none at all: TAXII 2.1 JSON, never a 406.
    for accept in ("*/*", "application/*", "", "text/html, application/xhtml+xml;q=0.9, */*;q=0.8",
                   "application/taxii+json;version=2.1;q=0.9"):
        r = get(server, world, "/taxii2/", accept=accept)
        assert r.status_code == 200 and r.headers["Content-Type"] == TAXII and r.json()["api_roots"], accept
    assert get(server, world, "/taxii2/", accept="text/html, */*;q=0").status_code == 406


def bundle(n=2, prefix="demo"):
    objs = []
    for i in range(n):
        oid = f"indicator--{uuid.uuid5(uuid.NAMESPACE_URL, f'{prefix}{i}')}"
        objs.append({"type": "indicator", "spec_version": "2.1", "id": oid, "created": "2026-11-01T00:00:00.000Z",
                     "modified": "2026-11-01T00:00:00.000Z", "name": f"{prefix} {i}", "pattern_type": "stix",
                     "pattern": "[ipv4-addr:value = '192.0.2.1']", "valid_from": "2026-11-01T00:00:00Z"})
    return {"objects": objs}


def test_add_objects_enter_triage_and_status_persists(server, world):
    medical = coll_url(server, world, "medical")
    coll = Collection(medical, user="writer", password=world.secrets["writer"])
    status = coll.add_objects(json.dumps(bundle(3, "w")), wait_for_completion=False)
    assert status.status == "complete" and status.success_count == 3 and status.failure_count == 0
    again = requests.get(f"{server.base}/ceptoar/status/{status.id}/", auth=world.auth("writer"),
                         headers={"Accept": TAXII})
    assert again.status_code == 200 and again.json()["success_count"] == 3
    assert requests.get(f"{server.base}/ceptoar/status/{status.id}/", auth=world.auth("assoc-green"),
                        headers={"Accept": TAXII}).status_code == 404
    assert requests.get(f"{server.base}/ceptoar/status/{uuid.uuid4()}/", auth=world.auth("writer"),
                        headers={"Accept": TAXII}).status_code == 404
    # An exact duplicate is not a failure.
    dup = coll.add_objects(json.dumps(bundle(3, "w")), wait_for_completion=False)
    assert dup.success_count == 3 and dup.failure_count == 0
    rows = world.hub.json("advisories", "list", "--source", "member-writer")
    assert len(rows) == 1 and rows[0]["status"] == "new" and rows[0]["tlp"] == "AMBER"
    assert rows[0]["collections"] == []  # never straight into a published collection
    # plain Content-Type, chunked body, invalid objects
    body = json.dumps({"objects": [bundle(1, "c")["objects"][0], {"type": "x"}]}).encode()
    r = requests.post(medical + "objects/", data=iter([body[:10], body[10:]]), auth=world.auth("writer"),
                      headers={"Accept": "application/taxii+json", "Content-Type": "application/taxii+json"})
    assert r.status_code == 202, r.text
    assert r.json()["success_count"] == 1 and r.json()["failure_count"] == 1
    # no write grant → 403; too large → 413
    r = requests.post(coll_url(server, world, "kev") + "objects/", json=bundle(1), auth=world.auth("assoc-green"),
                      headers={"Accept": TAXII, "Content-Type": TAXII})
    assert r.status_code == 403
    huge = b'{"objects": [' + b" " * (11 * 1024 * 1024) + b"]}"
    r = requests.post(medical + "objects/", data=huge, auth=world.auth("writer"),
                      headers={"Accept": TAXII, "Content-Type": TAXII})
    assert r.status_code == 413 and r.json()["http_status"] == "413"
    r = requests.delete(medical + f"objects/{world.green_report}/", auth=world.auth("assoc-amber"),
                        headers={"Accept": TAXII})
    assert r.status_code == 403
    r = requests.delete(coll_url(server, world, "kev") + f"objects/{world.green_report}/",
                        auth=world.auth("assoc-amber"), headers={"Accept": TAXII})
    assert r.status_code == 404  # neither read nor write there


def test_every_request_is_audited(server, world):
    get(server, world, coll_url(server, world, "kev") + "objects/?limit=7")
    requests.get(server.base + "/taxii2/", auth=("intruder", "nope"), headers={"Accept": TAXII})
    rows = world.hub.json("audit", "list", "--member", "assoc-green")
    mine = [r for r in rows if r["path"] and r["path"].endswith("/objects/") and r["objects"] == 7]
    assert mine and mine[-1]["http_status"] == 200 and mine[-1]["method"] == "GET"
    assert mine[-1]["collection"] == world.uuids["kev"] and mine[-1]["address"] == "127.0.0.1"
    failed = world.hub.json("audit", "list", "--member", "(not a member)")
    assert failed[-1]["http_status"] == 401 and failed[-1]["action"] == "taxii-denied"
    assert "intruder" not in world.hub.run("audit", "list", "--format", "json").stdout  # maybe a mistyped secret


def test_repeated_failures_are_refused_at_once(tmp_path):
    world = build_world(tmp_path)  # a fresh audit log: no earlier failures from this address
    server = ServerProcess(world.db).start()
    try:
        _refused_at_once(server, world)
    finally:
        server.stop()


def _refused_at_once(server, world):
    for _ in range(5):
        r = requests.get(server.base + "/taxii2/", auth=("assoc-green", "wrong"), headers={"Accept": TAXII})
        assert r.status_code == 401
    t = time.perf_counter()
    r = requests.get(server.base + "/taxii2/", auth=("assoc-green", "wrong"), headers={"Accept": TAXII})
    assert r.status_code == 429 and r.json()["http_status"] == "429" and time.perf_counter() - t < 0.5
    wait = int(r.headers["Retry-After"])
    assert 1 <= wait <= 2
    assert get(server, world, "/taxii2/", member="assoc-amber").status_code == 200  # other members are not held
    time.sleep(wait + 0.2)
    assert get(server, world, "/taxii2/").status_code == 200  # the right secret works again
