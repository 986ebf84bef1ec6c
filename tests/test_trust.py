"""The trust model, case by case (issue 9): members and clinics receive exactly what the analyst
published, at the TLP the analyst set, whatever feeds, members and upstream hubs do afterwards."""

from __future__ import annotations

import json
import shutil

from ceptoar.core.extensions import ADVISORY, HUB_IDENTITY, props
from ceptoar.core.model import TLP2_EXTENSION, marking_definition, vulnerability_id
from ceptoar.publishing.publication import REVOKED_NAME
from ceptoar.store import Store
from ceptoar.store.schema import SCHEMA_VERSION
from tests.conftest import DATA
from tests.trust_helpers import TLP, Reader, indicator, report, sid, write_bundle

CSAF = DATA / "cisa_icsma" / "cisagov_CSAF_icsma-24-060-01.json"


def csaf_version(tmp_path, title: str, when: str):
    """The real ICSMA document as its publisher would revise it: a new title and release date."""
    doc = json.loads(CSAF.read_text(encoding="utf-8"))
    doc["document"]["title"] = title
    doc["document"]["tracking"]["current_release_date"] = when
    path = tmp_path / f"csaf-{when[:10]}.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def only(hub, source):
    (row,) = hub.json("advisories", "list", "--source", source, "--status", "all")
    return row


def digest_text(hub, member, clearance):
    return hub.run("digest", "preview", "--member", member, "--clearance", clearance).output


def test_1_upstream_change_keeps_the_analysts_decisions(hub, tmp_path):
    hub.run("sources", "add", "csaf", "https://feeds.example/csaf", "--kind", "csaf", "--auto-publish", "medical")
    hub.run("ingest", str(csaf_version(tmp_path, "Baxter Welch Allyn v1", "2024-02-27T07:00:00Z")), "--source", "csaf")
    aid = only(hub, "csaf")["id"]  # auto-published at CLEAR on arrival
    hub.run("advisories", "triage", aid, "--tlp", "AMBER", "--severity", "critical")
    hub.run("advisories", "tag", aid, "jma")
    Reader(hub.db, "assoc-clear", "CLEAR", ["medical", "jma-amber"])
    amber = Reader(hub.db, "assoc-amber", "AMBER", ["medical", "jma-amber"])
    clear = Reader(hub.db, "assoc-clear2", "CLEAR", ["medical", "jma-amber"])
    # The publisher revises the document: the analyst's TLP, severity and tags stay.
    hub.run("ingest", str(csaf_version(tmp_path, "Baxter Welch Allyn v2", "2024-03-10T07:00:00Z")), "--source", "csaf")
    row = only(hub, "csaf")
    assert (row["tlp"], row["source_tlp"], row["analyst_tlp"]) == ("AMBER", "CLEAR", "AMBER")
    assert row["severity"] == "critical" and "jma" in row["tags"] and row["status"] == "published"
    # Auto-publish republished the revision, at the analyst's TLP.
    assert row["title"] == "Baxter Welch Allyn v2" and row["pending_update"] is False
    for r in (clear, amber):
        for cid in ("medical", "jma-amber"):
            text = r.text(cid)
            assert (aid in text) is (r is amber), (cid, r)
    (last,) = amber.object("jma-amber", aid).get_json()["objects"]
    assert last["name"] == "Baxter Welch Allyn v2" and last["object_marking_refs"] == [TLP["AMBER"]]
    assert props(last)["severity"] == "critical" and "jma" in last["labels"]
    # Later decisions republish at the same TLP; nothing reaches CLEAR readers or subscribers.
    hub.run("advisories", "tag", aid, "vpn")
    hub.run("members", "add", "m", "--name", "M", "--clearance", "AMBER")
    hub.run("members", "grant", "m", "medical")
    hub.run("members", "grant", "m", "jma-amber")
    assert "Baxter" not in digest_text(hub, "m", "CLEAR")
    assert "Baxter Welch Allyn v2" in digest_text(hub, "m", "AMBER") and "TLP:AMBER" in digest_text(hub, "m", "AMBER")
    assert aid not in clear.text("jma-amber")
    tlp_audit = hub.json("audit", "list", "--action", "tlp")
    assert [(a["details"]["from"], a["details"]["to"], a["details"]["by"]) for a in tlp_audit] == [
        ("CLEAR", "AMBER", "analyst")]


def test_1_a_source_that_changes_its_tlp_is_audited_and_applied(hub, tmp_path):
    hub.run("sources", "add", "partner", "https://partner.example/stix", "--kind", "stix")
    rep = report("Partner report", [sid("indicator", "p1")])
    hub.run("ingest", str(write_bundle(tmp_path / "v1.json", [rep, indicator("p1")])), "--source", "partner")
    aid = only(hub, "partner")["id"]
    hub.run("advisories", "triage", aid, "--medical")
    hub.run("advisories", "publish", aid)
    green = Reader(hub.db, "g", "CLEAR", ["medical"])
    assert aid in green.text("medical")
    # Upstream marks the report AMBER in a later version: the effective TLP follows at once.
    later = report("Partner report", [sid("indicator", "p1")], tlp="AMBER", modified="2026-11-02T00:00:00.000Z")
    hub.run("ingest", str(write_bundle(tmp_path / "v2.json", [later, indicator("p1")])), "--source", "partner")
    row = only(hub, "partner")
    assert row["tlp"] == "AMBER" and row["pending_update"] is True
    assert aid not in green.text("medical") and green.object("medical", aid).status_code == 404
    (entry,) = hub.json("audit", "list", "--action", "tlp")
    assert entry["details"] == {"from": "CLEAR", "to": "AMBER", "by": "source"} and entry["actor"] == "ingest:partner"


def kev_catalog(tmp_path, cve: str, name: str):
    doc = {"title": "KEV", "catalogVersion": "1", "dateReleased": "2026-11-01T00:00:00Z", "count": 1,
           "vulnerabilities": [{"cveID": cve, "vendorProject": "Ivanti", "product": "Connect Secure",
                                "vulnerabilityName": name, "dateAdded": "2026-11-01",
                                "shortDescription": "public description", "requiredAction": "Apply updates.",
                                "dueDate": "2026-11-22", "knownRansomwareCampaignUse": "Known", "notes": ""}]}
    path = tmp_path / "kev.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_2_shared_ids_never_carry_another_origins_version(hub, tmp_path):
    cve = "CVE-2024-21887"
    shared = sid("indicator", "shared")
    hub.run("sources", "add", "open", "https://open.example/stix", "--kind", "stix")
    hub.run("sources", "add", "closed", "https://closed.example/stix", "--kind", "stix", "--tlp", "AMBER")
    hub.run("sources", "add", "kev", "https://kev.example/kev.json", "--kind", "kev")
    public = [report("Open report", [shared]), indicator("public indicator", oid=shared)]
    secret_vuln = {"type": "vulnerability", "spec_version": "2.1", "id": vulnerability_id(cve),
                   "created": "2026-11-01T00:00:00.000Z", "modified": "2030-01-01T00:00:00.000Z", "name": cve,
                   "description": "SECRET-AMBER-VULN", "x_ceptoar_cvss": [{"version": "3.1", "score": 1.0,
                                                                            "vector": "SECRET-VECTOR"}]}
    restricted = [report("Closed report", [shared, vulnerability_id(cve)], tlp=None),
                  indicator("SECRET-AMBER-INDICATOR", oid=shared, modified="2030-01-01T00:00:00.000Z"), secret_vuln]
    hub.run("ingest", str(write_bundle(tmp_path / "open.json", public)), "--source", "open")
    hub.run("ingest", str(write_bundle(tmp_path / "closed.json", restricted)), "--source", "closed")
    hub.run("ingest", str(kev_catalog(tmp_path, cve, "Ivanti command injection")), "--source", "kev")
    hub.run("collections", "add", "everything", "--title", "All", "--filter", "tlp <= RED")
    for source in ("open", "closed", "kev"):
        hub.run("advisories", "publish", only(hub, source)["id"])
    clear = Reader(hub.db, "c", "CLEAR", ["everything"])
    text = clear.text("everything")
    assert "SECRET" not in text and "public indicator" in text
    served = [o for o in clear.objects("everything", **{"match[version]": "all"}) if o["id"] == shared]
    assert {o["name"] for o in served} == {"public indicator"}
    # The hub's vulnerability object has only the public KEV facts.
    store = Store(hub.db)
    hub_vuln = store.objects.latest([vulnerability_id(cve)], "hub")[vulnerability_id(cve)].obj
    assert "SECRET" not in json.dumps(hub_vuln) and props(hub_vuln)["kev"]["product"] == "Connect Secure"
    # The restricted copies are stored, apart, under their own origin.
    apart = {(v.id, v.origin) for v in store.objects.versions(shared) + store.objects.versions(vulnerability_id(cve))
             if v.kept_apart}
    assert apart == {(shared, "source:closed"), (vulnerability_id(cve), "source:closed")}
    amber = Reader(hub.db, "a", "AMBER", ["everything"])
    assert "SECRET" not in amber.text("everything")  # never served as the open source's or the hub's object


def test_2_first_holder_keeps_the_id_either_way(hub, tmp_path):
    shared = sid("indicator", "shared")
    hub.run("sources", "add", "open", "https://open.example/stix", "--kind", "stix")
    hub.run("sources", "add", "closed", "https://closed.example/stix", "--kind", "stix", "--tlp", "AMBER")
    restricted = [report("Closed report", [shared], tlp=None), indicator("SECRET-AMBER-INDICATOR", oid=shared)]
    public = [report("Open report", [shared]), indicator("public indicator", oid=shared,
                                                         modified="2030-01-01T00:00:00.000Z")]
    hub.run("ingest", str(write_bundle(tmp_path / "closed.json", restricted)), "--source", "closed")
    hub.run("ingest", str(write_bundle(tmp_path / "open.json", public)), "--source", "open")
    hub.run("collections", "add", "everything", "--title", "All", "--filter", "tlp <= RED")
    for source in ("open", "closed"):
        hub.run("advisories", "publish", only(hub, source)["id"])
    clear = Reader(hub.db, "c", "CLEAR", ["everything"])
    assert "SECRET" not in clear.text("everything")
    amber = Reader(hub.db, "a", "AMBER", ["everything"])
    served = [o for o in amber.objects("everything", **{"match[version]": "all"}) if o["id"] == shared]
    assert {o["name"] for o in served} == {"SECRET-AMBER-INDICATOR"}  # the first holder's, at AMBER only


def test_3_member_writes_never_rewrite_the_hub(hub, tmp_path):
    hub.run("sources", "add", "csaf", "https://feeds.example/csaf", "--kind", "csaf")
    hub.run("ingest", str(CSAF), "--source", "csaf")
    hub.run("sources", "add", "kev", "https://kev.example/kev.json", "--kind", "kev")
    hub.run("ingest", str(kev_catalog(tmp_path, "CVE-2024-21887", "Ivanti")), "--source", "kev")
    aid, red = only(hub, "csaf")["id"], only(hub, "kev")["id"]
    hub.run("advisories", "publish", aid)
    hub.run("advisories", "triage", red, "--tlp", "RED")
    hub.run("advisories", "publish", red)
    cve = only(hub, "csaf")["cves"][0]
    writer = Reader(hub.db, "writer", "GREEN", [])
    Store(hub.db).members.set_grant("writer", "medical", False, True)
    evil_green = {"type": "marking-definition", "spec_version": "2.1", "id": TLP["GREEN"],
                  "created": "2022-10-01T00:00:00.000Z", "name": "TLP:GREEN",
                  "extensions": {TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": "clear"}}}
    evil = [report("EVIL TITLE", [vulnerability_id(cve)], rid=aid, external_references=[
                {"source_name": "evil", "url": "https://evil.example/"}]),
            report("EVIL RED", [vulnerability_id(cve)], rid=red, tlp="AMBER"),
            evil_green,
            {"type": "vulnerability", "spec_version": "2.1", "id": vulnerability_id(cve),
             "created": "2026-11-01T00:00:00.000Z", "modified": "2031-01-01T00:00:00.000Z", "name": cve,
             "description": "EVIL VULN"}]
    r = writer.client.post(f"/ceptoar/collections/{writer.uuids['medical']}/objects/", json={"objects": evil},
                           headers=writer.headers | {"Content-Type": "application/taxii+json;version=2.1"})
    assert r.status_code == 202, r.get_data(as_text=True)
    status = r.get_json()
    assert status["success_count"] == 4
    assert {s["id"] for s in status["successes"] if "kept apart" in s.get("message", "")} == {
        aid, red, TLP["GREEN"], vulnerability_id(cve)}
    hub.run("advisories", "tag", aid, "jma")  # a routine decision republishes the advisory
    row = only(hub, "csaf")
    assert "EVIL" not in json.dumps(row) and row["url"] != "https://evil.example/"
    assert only(hub, "kev")["tlp"] == "RED"
    (mine,) = hub.json("advisories", "list", "--source", "member-writer", "--search", "EVIL TITLE")
    assert mine["id"] != aid and mine["status"] == "new"  # the member's own advisory, for triage
    hub.run("members", "add", "m", "--name", "M", "--clearance", "AMBER")
    hub.run("members", "grant", "m", "medical")
    assert "EVIL" not in digest_text(hub, "m", "AMBER")
    for clearance in ("CLEAR", "AMBER", "RED"):
        reader = Reader(hub.db, f"r-{clearance.lower()}", clearance, ["medical", "jma-amber"])
        for cid in ("medical", "jma-amber"):
            objects = reader.objects(cid, **{"match[version]": "all"})
            assert "EVIL" not in json.dumps(objects)
            for m in (o for o in objects if o["type"] == "marking-definition"):
                name = m["name"].removeprefix("TLP:")
                assert m == marking_definition(name)  # the fixed OASIS objects, never redefined


def test_4_a_revocation_reaches_everyone_who_received_a_version(hub, tmp_path):
    hub.run("sources", "add", "csaf", "https://feeds.example/csaf", "--kind", "csaf")
    hub.run("ingest", str(CSAF), "--source", "csaf")
    aid = only(hub, "csaf")["id"]
    hub.run("advisories", "triage", aid, "--tlp", "GREEN", "--medical")
    hub.run("advisories", "tag", aid, "jma")
    hub.run("advisories", "publish", aid)
    green = Reader(hub.db, "g", "GREEN", ["medical", "jma-amber"])
    amber = Reader(hub.db, "a", "AMBER", ["medical", "jma-amber"])
    assert aid in green.text("medical") and aid in green.text("jma-amber")
    hub.run("advisories", "triage", aid, "--tlp", "AMBER")
    for cid in ("medical", "jma-amber"):  # from that moment, nothing of it at GREEN, on any endpoint
        assert aid not in green.text(cid)
        assert green.object(cid, aid).status_code == 404
        assert green.get(f"/ceptoar/collections/{green.uuids[cid]}/objects/{aid}/versions/").status_code == 404
        manifest = green.get(f"/ceptoar/collections/{green.uuids[cid]}/manifest/").get_json()
        assert aid not in json.dumps(manifest)
    hub.run("advisories", "revoke", aid, "--reason", "withdrawn by the vendor")
    for reader in (green, amber):
        for cid in ("medical", "jma-amber"):
            (last,) = reader.object(cid, aid).get_json()["objects"]
            assert last["revoked"] is True and last["name"] == REVOKED_NAME
            assert "description" not in last and "external_references" not in last and last["labels"] == ["revoked"]
            assert last["object_marking_refs"] == [TLP["GREEN"]]
    for r in (green, amber):  # the pages carry it too, and the GREEN reader gets nothing else of it
        assert any(o.get("revoked") for o in r.objects("medical") if o["id"] == aid)
    assert "Baxter" not in green.text("jma-amber")
    bundle = json.loads(hub.run("export", "bundle", "--status", "all", "--clearance", "GREEN").stdout)
    (revoked,) = [o for o in bundle["objects"] if o["id"] == aid]
    assert revoked["revoked"] is True and "Baxter" not in json.dumps(bundle)
    hub.run("members", "add", "m", "--name", "M", "--clearance", "AMBER")
    hub.run("members", "grant", "m", "medical")
    assert "Baxter" not in digest_text(hub, "m", "AMBER")


def test_5_incidents_never_leave_by_reference(hub, tmp_path):
    hub.run("members", "add", "jma", "--name", "JMA", "--clearance", "RED")
    inc = hub.json("incidents", "report", "--facility", "さくら診療所", "--facility-type", "clinic",
                   "--prefecture", "東京都", "--member", "jma", "--summary", "身代金要求画面が表示された")
    hub.run("sources", "add", "partner", "https://partner.example/stix", "--kind", "stix")
    forged = {"type": "incident", "spec_version": "2.1", "id": inc["stix_id"], "created": "2026-11-01T00:00:00.000Z",
              "modified": "2031-01-01T00:00:00.000Z", "name": "FORGED"}
    bundle = [report("Lesson", [inc["stix_id"], inc["report_id"], sid("indicator", "x")]), indicator("x"), forged]
    hub.run("ingest", str(write_bundle(tmp_path / "b.json", bundle)), "--source", "partner")
    hub.run("collections", "add", "everything", "--title", "All", "--filter", "tlp <= RED")
    hub.run("advisories", "publish", only(hub, "partner")["id"])
    red = Reader(hub.db, "r", "RED", ["everything"])
    served = red.text("everything")
    for secret in (inc["stix_id"], inc["report_id"], "さくら", "FORGED", "身代金"):
        if secret.startswith(("incident--", "report--")):
            assert not [o for o in red.objects("everything") if o["id"] == secret]
        else:
            assert secret not in served
    exported = hub.run("export", "bundle", "--status", "all").stdout
    assert inc["stix_id"] not in [o["id"] for o in json.loads(exported)["objects"]] and "さくら" not in exported


def test_6_digests_and_both_exports_read_what_was_published(hub, tmp_path):
    hub.run("sources", "add", "csaf", "https://feeds.example/csaf", "--kind", "csaf")
    hub.run("ingest", str(csaf_version(tmp_path, "As published", "2024-02-27T07:00:00Z")), "--source", "csaf")
    aid = only(hub, "csaf")["id"]
    hub.run("advisories", "triage", aid, "--medical", "--tlp", "GREEN")
    hub.run("advisories", "publish", aid)
    hub.run("ingest", str(csaf_version(tmp_path, "Changed upstream", "2024-03-01T07:00:00Z")), "--source", "csaf")
    row = only(hub, "csaf")
    assert row["title"] == "Changed upstream" and row["pending_update"] is True
    hub.run("members", "add", "m", "--name", "M", "--clearance", "GREEN")
    hub.run("members", "grant", "m", "medical")
    text = digest_text(hub, "m", "GREEN")
    assert "As published" in text and "Changed upstream" not in text
    rows = hub.run("export", "csv").stdout
    bundle = json.loads(hub.run("export", "bundle").stdout)
    (rep,) = [o for o in bundle["objects"] if o["id"] == aid]
    assert rep["name"] == "As published" and "As published" in rows and "Changed upstream" not in rows
    assert "Changed upstream" not in json.dumps(bundle)
    assert "GREEN" in rows.splitlines()[1]
    # Published again, every reader moves on together.
    hub.run("advisories", "publish", aid)
    assert "Changed upstream" in digest_text(hub, "m", "GREEN") and "Changed upstream" in hub.run("export", "csv").stdout


def test_7_opt_outs_stick(hub, tmp_path):
    hub.run("members", "add", "jma", "--name", "JMA", "--clearance", "GREEN")
    csv = tmp_path / "subs.csv"
    csv.write_text("email,name,member\na@clinic.example.jp,A,jma\nb@clinic.example.jp,B,jma\n", encoding="utf-8")
    hub.run("subscribers", "import", str(csv))
    token = Store(hub.db).subscribers.get("b@clinic.example.jp")["token"]
    hub.run("unsubscribe", token)
    out = hub.run("subscribers", "import", str(csv)).output
    assert "1 skipped: unsubscribed" in out and "1 updated" in out
    out = hub.run("subscribers", "add", "B@clinic.example.jp", "--member", "jma").output
    assert "1 skipped: unsubscribed" in out
    (b,) = [s for s in hub.json("subscribers", "list") if s["email"] == "b@clinic.example.jp"]
    assert b["unsubscribed"]
    assert hub.run("subscribers", "resubscribe", "b@clinic.example.jp", ok=None).exit_code == 2  # --reason required
    hub.run("--actor", "secretariat", "subscribers", "resubscribe", "b@clinic.example.jp", "--reason",
            "本人から電話で再開の依頼 (2026-11-22)")
    (b,) = [s for s in hub.json("subscribers", "list") if s["email"] == "b@clinic.example.jp"]
    assert b["unsubscribed"] is None
    (entry,) = hub.json("audit", "list", "--action", "resubscribe")
    assert entry["actor"] == "secretariat" and "依頼" in entry["details"]["reason"]


def test_unsubscribe_tokens_stay_out_of_the_access_log(hub, tmp_path):
    import requests

    from tests.taxii_fixtures import ServerProcess
    hub.run("members", "add", "jma", "--name", "JMA", "--clearance", "GREEN")
    hub.run("subscribers", "add", "a@clinic.example.jp", "--member", "jma")
    token = Store(hub.db).subscribers.get("a@clinic.example.jp")["token"]
    for gunicorn in (True, False):
        server = ServerProcess(hub.db, gunicorn=gunicorn, workers=1).start()
        try:
            assert requests.get(f"{server.base}/unsubscribe/{token}", timeout=10).status_code == 200
        finally:
            server.stop()
        log = server.log()
        assert "/unsubscribe/" in log and token not in log, log


def test_migrates_a_database_made_by_the_released_hub(tmp_path):
    from tests.conftest import ROOT, Hub
    db = tmp_path / "hub.db"
    shutil.copy(ROOT / "tests" / "fixtures" / "released-schema6.db", db)
    hub = Hub(db)
    stale = hub.run("advisories", "list", ok=None)
    assert stale.exit_code == 1 and "ceptoar init" in stale.output
    (tmp_path / "none.toml").write_text("")
    out = hub.run("init", "--sources", str(tmp_path / "none.toml")).output
    assert f"from schema 6 to {SCHEMA_VERSION}" in out and (tmp_path / "hub.db.before-schema-6").exists()
    rows = {r["source"]: r for r in hub.json("advisories", "list", "--status", "all")}
    assert (rows["icsma"]["tlp"], rows["icsma"]["analyst_tlp"], rows["icsma"]["source_tlp"]) == (
        "AMBER", "AMBER", "CLEAR")
    assert rows["icsma"]["status"] == "published" and "jma" in rows["icsma"]["tags"]
    assert {r["status"] for r in hub.json("advisories", "list", "--status", "revoked")} == {"revoked"}
    store = Store(db)
    assert store.meta("schema_version") == str(SCHEMA_VERSION)
    # The hub's custom properties are its extensions now, in every stored version.
    assert store.execute("SELECT count(*) FROM objects WHERE json LIKE '%x_ceptoar_%'").fetchone()[0] == 0
    assert store.publications.latest([rows["icsma"]["id"]])[rows["icsma"]["id"]].tlp == "AMBER"
    # What members were served is still served, the marking definitions now the OASIS ones.
    reader = Reader(db, "reader", "AMBER", ["jma-amber", "medical", "kev"])
    amber = reader.objects("jma-amber")
    assert rows["icsma"]["id"] in {o["id"] for o in amber}
    assert all(m == marking_definition(m["name"][4:]) for m in amber if m["type"] == "marking-definition")
    (icsma,) = [o for o in amber if o["id"] == rows["icsma"]["id"]]
    assert props(icsma)["source"] == "icsma" and props(icsma)["cvss"]
    assert {o["id"] for o in amber} >= {ADVISORY, HUB_IDENTITY}  # served with what uses them
    (b,) = [s for s in hub.json("subscribers", "list") if s["email"] == "b@clinic.example.jp"]
    assert b["unsubscribed"]
    assert "schema-upgrade" in {a["action"] for a in hub.json("audit", "list")}
    assert len(hub.json("audit", "list")) > 20  # the old log is kept
    assert "upgraded" not in hub.run("init", "--sources", str(tmp_path / "none.toml")).output  # idempotent
    store.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    newer = hub.run("advisories", "list", ok=None)
    assert newer.exit_code == 1 and "newer" in newer.output
    assert hub.run("init", "--sources", str(tmp_path / "none.toml"), ok=None).exit_code == 1


def test_a_shared_object_newer_above_a_readers_clearance_leaves_it_the_older_version(hub, tmp_path):
    """An indicator published at CLEAR by one report and again, newer, by an AMBER report: a CLEAR
    reader's latest version is the older one, an AMBER reader's the newer; the same after the
    upgrade (schema 15) that keeps each row's lowest newer rank is run on such a collection."""
    hub.run("sources", "add", "partner", "https://partner.example/stix", "--kind", "stix")
    old = indicator("p1", description="first")
    new = indicator("p1", description="second", modified="2026-11-05T00:00:00.000Z")
    a = report("Partner A", [old["id"]])
    b = report("Partner B", [new["id"]], tlp="AMBER")
    for name, bundle in (("a", [a, old]), ("b", [b, new])):  # each published before the next arrives
        hub.run("ingest", str(write_bundle(tmp_path / f"{name}.json", bundle)), "--source", "partner")
        (row,) = [r for r in hub.json("advisories", "list", "--source", "partner") if r["status"] == "new"]
        hub.run("advisories", "tag", row["id"], "jma")
        hub.run("advisories", "publish", row["id"])
    readers = {t: Reader(hub.db, f"r-{t.lower()}", t, ["jma-amber"]) for t in ("CLEAR", "AMBER")}

    def seen():
        return {t: [o.get("description") for o in r.objects("jma-amber") if o["id"] == old["id"]]
                for t, r in readers.items()}

    assert seen() == {"CLEAR": ["first"], "AMBER": ["second"]}
    store = Store(hub.db)
    store.execute("UPDATE membership SET newer_rank = NULL")
    store.execute("UPDATE meta SET value = '14' WHERE key = 'schema_version'")
    (tmp_path / "none.toml").write_text("")
    assert "from schema 14 to" in hub.run("init", "--sources", str(tmp_path / "none.toml")).output
    assert seen() == {"CLEAR": ["first"], "AMBER": ["second"]}
