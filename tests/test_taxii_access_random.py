"""Randomized: whatever the members, grants, clearances and published objects, nothing is served
beyond a member's grant or TLP clearance (in-process app over a real store, on the run's engine)."""

from __future__ import annotations

import base64
import itertools
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ceptoar.core.model import TLP_BY_ID, TLP_ORDER
from ceptoar.publishing import triage
from ceptoar.sharing import members
from ceptoar.sharing.taxii.app import create_app
from ceptoar.store import Store
from tests.conftest import DATA, Hub, close_pools, copied, new_db

TLPS = ["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]
COLLECTIONS = ["medical", "critical-high", "kev", "jma-amber", "jda-amber"]
TAXII = "application/taxii+json;version=2.1"
EXAMPLES = int(os.environ.get("CEPTOAR_TAXII_EXAMPLES", "20"))  # CI's count; set it higher for a longer run
CASES = itertools.count()


def build(folder):
    """Once per test process: the KEV sample and five CSAF medical-device advisories ingested."""
    hub = Hub(new_db(folder))
    (folder / "none.toml").write_text("")
    hub.run("init", "--sources", str(folder / "none.toml"))
    hub.run("sources", "add", "kev", "https://feeds.example/kev", "--kind", "kev")
    hub.run("ingest", str(DATA / "cisa_kev/vulsdata_kev_2022-08-18_partial.json"), "--source", "kev")
    hub.run("sources", "add", "csaf", "https://feeds.example/csaf", "--kind", "csaf")
    for name in ["icsma-24-200-01", "icsma-24-060-01", "icsma-23-248-01", "icsma-22-174-01", "icsma-22-263-01"]:
        hub.run("ingest", str(DATA / f"cisa_icsma/cisagov_CSAF_{name}.json"), "--source", "csaf")
    return hub.db


advisory_plan = st.lists(st.tuples(st.sampled_from(TLPS), st.sampled_from(["jma", "jda", "none"]),
                                   st.booleans()), min_size=6, max_size=6)
member_plan = st.lists(st.tuples(st.sampled_from(TLPS),
                                 st.lists(st.tuples(st.sampled_from(COLLECTIONS), st.booleans(), st.booleans()),
                                          max_size=4)), min_size=1, max_size=3)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(advisories=advisory_plan, people=member_plan)
def test_nothing_beyond_grant_or_clearance(tmp_path, advisories, people):
    case = tmp_path / f"case-{next(CASES)}"  # each example a database of its own (tmp_path is shared)
    case.mkdir()
    close_pools()  # the previous example's connections (PostgreSQL: a pool per database)
    db = copied("taxii-access-random", case, build)
    store = Store(db)
    ids = [r["id"] for r in store.advisories.list(status="all")]
    for aid, (tlp, tag, severe) in zip(ids, advisories, strict=False):
        triage.triage(store, aid, "t", tlp=tlp, medical=True, severity="high" if severe else "low")
        if tag != "none":
            triage.retag(store, [aid], [tag], [], "t")
        triage.publish(store, [aid], "t")
    secrets = {}
    for i, (clearance, grants) in enumerate(people):
        mid = f"m{i}"
        members.add(store, mid, mid, clearance)
        for cid, r, w in grants:
            if r or w:
                members.grant(store, mid, cid, r, w)
        secrets[mid] = members.new_secret(store, mid)
    uuids = {c["id"]: c["uuid"] for c in store.collections.list()}
    client = create_app(str(db)).test_client()
    for i, (clearance, _) in enumerate(people):
        mid = f"m{i}"
        granted = store.members.grants_of(mid)
        auth = {"Authorization": "Basic " + base64.b64encode(f"{mid}:{secrets[mid]}".encode()).decode(),
                "Accept": TAXII}
        listed = client.get("/ceptoar/collections/", headers=auth).get_json().get("collections", [])
        assert {c["alias"] for c in listed} == set(granted)
        rank = TLP_ORDER.index(clearance)
        for cid in COLLECTIONS:
            r = client.get(f"/ceptoar/collections/{uuids[cid]}/objects/?match[version]=all", headers=auth)
            if cid not in granted:
                assert r.status_code == 404
                continue
            if not granted[cid][0]:
                assert r.status_code == 403
                continue
            objects = r.get_json().get("objects", [])
            visible_refs = set()
            for o in objects:
                marks = [TLP_ORDER.index(TLP_BY_ID[m]) for m in o.get("object_marking_refs", []) if m in TLP_BY_ID]
                if marks:
                    assert max(marks) <= rank, (mid, clearance, cid, o["id"])
                if o["type"] == "report":
                    assert marks, "reports are always marked"
                    visible_refs.update(o.get("object_refs", []) + [o.get("created_by_ref")]
                                        + o.get("object_marking_refs", []))
            for o in objects:
                if o["type"] != "report" and not o.get("object_marking_refs") and o["type"] != "marking-definition":
                    assert o["id"] in visible_refs  # unmarked objects travel only with a visible report
            # The manifest and single-object endpoints obey the same rule.
            manifest = client.get(f"/ceptoar/collections/{uuids[cid]}/manifest/?match[version]=all",
                                  headers=auth).get_json().get("objects", [])
            assert sorted(m["id"] for m in manifest) == sorted(o["id"] for o in objects)
            for aid in ids:
                one = client.get(f"/ceptoar/collections/{uuids[cid]}/objects/{aid}/", headers=auth)
                if one.status_code == 200:
                    for o in one.get_json()["objects"]:
                        marks = [TLP_ORDER.index(TLP_BY_ID[m]) for m in o["object_marking_refs"]]
                        assert max(marks) <= rank
