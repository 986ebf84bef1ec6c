"""The secretariats' own tools against a hub built from ../shared/data: OpenCTI's TAXII2 connector
(its request sequence, replayed with taxii2-client as it uses it), misp-stix's STIX 2.1 → MISP
import, stix2-validator in default and strict mode, a second hub pulling this one, STIX 2.0 objects
in a collection, and client certificates verified by a real nginx."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta

import pytest
import requests
from stix2validator import ValidationOptions, validate_instance
from taxii2client.common import TokenAuth
from taxii2client.v21 import Server, as_pages

from ceptoar.core.model import spec_version_of
from ceptoar.publishing import triage
from ceptoar.sharing import members
from ceptoar.store import Store
from tests.conftest import DATA, Hub, new_db
from tests.nginx_proxy import Nginx, issued, nginx, self_signed
from tests.taxii_fixtures import TAXII, ServerProcess

SOURCES = [
    ("kev", "kev", ["cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json"]),
    ("csaf", "csaf", ["cisa_icsma/cisagov_CSAF_icsma-24-200-01.json", "cisa_icsma/cisagov_CSAF_icsma-22-174-01.json"]),
    ("jvn", "jvn", ["jvn/vulsdata_jvndb_2022.rdf"]),
    ("stix", "stix", ["stix/oasis_threat-reports_poisonivy.json", "stix/elastic_labs_guloader_stix-bundle.json",
                      "stix/myjvn_np_getVulnDetailInfo_oka_JVNDB-2017-009608_jvnstix.json"]),
]
# Strict-mode findings stix2-validator may report on the hub's own objects, each deliberate (docs/members.md, "Interoperability").
DOCUMENTED = {"103",  # deterministic UUIDv5 ids (the same advisory, CVE or source always has the same id)
              "302",  # external references with a URL but no hash (CVE, CWE and advisory pages)
              "401"}  # only OpenCTI's x_opencti_* properties, which pycti reads and nothing else carries


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interop")
    hub = Hub(new_db(tmp))
    (tmp / "none.toml").write_text("")
    hub.run("init", "--sources", str(tmp / "none.toml"))
    for sid, kind, files in SOURCES:
        hub.run("sources", "add", sid, f"https://feeds.example/{sid}", "--kind", kind)
        for f in files:
            hub.run("ingest", str(DATA / f), "--source", sid)
    store = Store(hub.db)
    kev = [r["id"] for r in store.advisories.list(source="kev", search="Ivanti")]
    triage.triage(store, kev[0], "analyst", severity="critical", medical=True)
    triage.publish(store, kev, "analyst")
    for sid in ("csaf", "jvn", "stix"):
        triage.publish(store, [r["id"] for r in store.advisories.list(source=sid)], "analyst")
    hub.run("collections", "add", "everything", "--title", "All published. Every TLP", "--filter", "tlp <= RED")
    secrets = {}
    for mid, titles in (("octi", "title"), ("octi-names", "name")):
        hub.run("members", "add", mid, "--name", mid, "--clearance", "RED", "--collection-titles", titles)
        for c in store.collections.list(counts=False):
            members.grant(store, mid, c["id"], True, False)
        secrets[mid] = members.new_secret(store, mid)
    server = ServerProcess(hub.db).start()
    yield {"hub": hub, "store": store, "server": server, "secrets": secrets, "kev": kev, "tmp": tmp}
    server.stop()


def collection(world, title: str, member: str = "octi"):
    """As OpenCTI's connector finds it: api root by the URL's last path segment, collection by title."""
    server = Server(f"{world['server'].base}/taxii2/", auth=TokenAuth(world["secrets"][member]))
    (root,) = [r for r in server.api_roots if r.url.split("/")[-2] == "ceptoar"]
    (coll,) = [c for c in root.collections if c.title == title]
    return coll


def everything(coll, **filters) -> list[dict]:
    return [o for page in as_pages(coll.get_objects, per_request=100, **filters) for o in page.get("objects", [])]


def connector_poll(coll, filters: dict) -> list[dict]:
    """Taxii2.poll of OpenCTI-Platform/connectors external-import/taxii2 (client_taxii.py), as it is:
    on each further page it drops added_after, sets next, and keeps both in the shared filters."""
    objects = []
    response = coll.get_objects(**filters)
    if response and response.get("objects"):
        while True:
            objects.extend(response["objects"])
            if response.get("more") is not True:
                break
            if "next" in response:
                filters.pop("added_after", None)
                filters["next"] = response["next"]
                response = coll.get_objects(**filters)
    return objects


def keys(objects: list[dict]) -> set[tuple[str, str | None]]:
    return {(o["id"], o.get("modified")) for o in objects}


def test_opencti_connector_gets_every_page_and_survives_its_stale_next(world):
    store: Store = world["store"]
    titles = {c["id"]: c["title"] for c in store.collections.list(counts=False)}
    kev, medical = collection(world, titles["kev"]), collection(world, titles["medical"])
    assert len(everything(kev)) > 20
    # One run: TAXII2_COLLECTIONS=ceptoar.<kev title>,ceptoar.<medical title>, a small page limit, and
    # the initial history as the connector computes it (a naive datetime).
    filters = {"limit": 7, "added_after": datetime.now() - timedelta(hours=24 * 365 * 30)}
    got_kev = connector_poll(kev, filters)
    assert keys(got_kev) == keys(everything(kev))  # page 2 on without added_after: every object
    assert "added_after" not in filters and filters["next"]
    got_medical = connector_poll(medical, filters)  # with the kev collection's stale next
    assert keys(got_medical) == keys(everything(medical))
    # The next run: added_after is the last run, `next` still the previous collection's.
    last_run = datetime.now(tz=None) - timedelta(seconds=1)
    more = [r["id"] for r in store.advisories.list(source="kev", search="Microsoft Windows", status="new")][:3]
    triage.publish(store, more, "analyst")
    filters["added_after"] = last_run.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    second = connector_poll(kev, filters)
    names = {o.get("name") for o in second if o["type"] == "report"}
    assert {store.advisories.get(a)["title"] for a in more} <= names
    # Collections by name, for a member set to see names as titles: TAXII2_COLLECTIONS=ceptoar.kev
    by_name = collection(world, "kev", member="octi-names")
    assert keys(connector_poll(by_name, {"limit": 50})) == keys(everything(kev))
    assert titles["kev"] in by_name.description


def test_validator_default_mode_passes_every_served_object_and_export(world):
    store: Store = world["store"]
    coll = collection(world, "All published. Every TLP")
    served = everything(coll, version="all")
    assert {"report", "vulnerability", "extension-definition", "indicator", "identity"} <= {o["type"] for o in served}
    strict_findings = set()
    for o in served:
        version = spec_version_of(o)
        default = validate_instance(o, ValidationOptions(version=version))
        assert default.is_valid, (o["id"], [str(e) for e in default.errors])
        origins = {r[0] for r in store.execute("SELECT origin FROM objects WHERE id = ? AND modified = ?",
                                                (o["id"], o.get("modified") or o.get("created") or ""))}
        if origins == {"hub"}:
            strict = validate_instance(o, ValidationOptions(version=version, strict=True))
            for finding in [*strict.errors, *strict.warnings]:
                text = str(finding)
                code = re.search(r"\{(\d+)\}", text)
                strict_findings.add(code.group(1) if code else text)
                if code and code.group(1) == "401":
                    assert "'x_opencti_" in text, text
    assert strict_findings <= DOCUMENTED, strict_findings
    out = world["tmp"] / "export.json"
    world["hub"].run("export", "bundle", "-o", str(out))
    for o in json.loads(out.read_text())["objects"]:
        assert validate_instance(o, ValidationOptions(version=spec_version_of(o))).is_valid, o["id"]
    # The producer's object that is no valid STIX (MyJVN's VULDEF-Document property) is not sent on.
    assert not any(o["type"] == "jvn-jp-sdo" for o in served)


def test_misp_stix_import_keeps_what_the_readme_table_says(world):
    from misp_stix_converter import ExternalSTIX2toMISPParser
    from stix2.parsing import parse as stix_parse

    store: Store = world["store"]
    coll = collection(world, "All published. Every TLP")
    bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": everything(coll)}
    parser = ExternalSTIX2toMISPParser()
    parser.load_stix_bundle(stix_parse(json.dumps(bundle), allow_custom=True))
    parser.parse_stix_bundle(single_event=False)
    events = {e.uuid: json.loads(e.to_json()) for e in parser.misp_events}
    critical = store.advisories.get(world["kev"][0])
    event = events[critical["id"].split("--")[1]]
    assert event["info"] == critical["title"]
    tags = {t["name"] for t in event["Tag"]}
    assert 'ceptoar:severity="critical"' in tags and "kev" in tags and "tlp:clear" in tags
    (cluster,) = [c for g in event["Galaxy"] for c in g["GalaxyCluster"]]
    cve = critical["cves"][0]
    assert cluster["value"] == cve
    kev = store.objects.latest([critical["source_report"]], "source:kev")[critical["source_report"]].obj
    action = kev["extensions"][next(iter(kev["extensions"]))]["kev"]["required_action"]
    assert action in cluster["description"]
    assert "CISA Known Exploited Vulnerabilities" in cluster["description"]
    refs = cluster["meta"]["refs"]
    assert critical["url"] in refs and any("cwe.mitre.org" in r for r in refs)
    assert any(str(x).startswith("CWE-") for x in cluster["meta"]["external_id"])
    # CVSS: a CSAF advisory's scores arrive in its vulnerabilities' descriptions.
    csaf = store.advisories.list(source="csaf", status="published")[0]
    descriptions = [c["description"] for g in events[csaf["id"].split("--")[1]]["Galaxy"] for c in g["GalaxyCluster"]]
    assert any(re.search(r"CVSS 3\.\d: \d+\.\d (CRITICAL|HIGH|MEDIUM|LOW) \(CVSS:3", d) for d in descriptions)
    # Counted over every KEV advisory served: each required action and advisory URL arrives.
    kev_events = [events[a.split("--")[1]] for a in world["kev"]]
    clusters = [c for e in kev_events for g in e["Galaxy"] for c in g["GalaxyCluster"]]
    assert sum("Required action:" in c["description"] for c in clusters) == len(world["kev"])
    assert sum(store.advisories.get(a)["url"] in c["meta"]["refs"] for a, c in zip(world["kev"], clusters, strict=True)) \
        == len(world["kev"])


def test_opencti_reads_cvss_from_its_own_vulnerability_properties(world):
    coll = collection(world, "All published. Every TLP")
    vulns = [o for o in everything(coll, type="vulnerability") if "x_opencti_cvss_base_score" in o]
    assert vulns
    for v in vulns:
        assert 0 <= v["x_opencti_cvss_base_score"] <= 10
        assert v["x_opencti_cvss_base_severity"] in ("NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL")
        assert v["x_opencti_cvss_vector_string"].startswith("CVSS:3")
    kev_vulns = [o for o in everything(coll, type="vulnerability") if o.get("x_opencti_cisa_kev")]
    assert kev_vulns and all(o.get("x_opencti_cwe") is None or o["x_opencti_cwe"][0].startswith("CWE-")
                             for o in kev_vulns)


def test_a_second_hub_applies_revocations(world, tmp_path, monkeypatch):
    up: Store = world["store"]
    server = world["server"]
    coll_uuid = next(c["uuid"] for c in up.collections.list(counts=False) if c["id"] == "everything")
    monkeypatch.setenv("UP_TOKEN", world["secrets"]["octi"])
    monkeypatch.setenv("UP_USER", "octi")
    down = Hub(tmp_path / "down.db")
    (tmp_path / "none.toml").write_text("")
    down.run("init", "--sources", str(tmp_path / "none.toml"))
    down.run("sources", "add", "peer", f"{server.base}/ceptoar/collections/{coll_uuid}/", "--kind", "taxii",
             "--option", "user_env=UP_USER", "--option", "password_env=UP_TOKEN")
    down.run("fetch")
    rows = {r["title"]: r for r in down.json("advisories", "list", "--source", "peer")}
    jvn = [r for r in up.advisories.list(source="jvn", status="published")]
    live, pending = jvn[0], jvn[1]
    down.run("advisories", "publish", rows[live["title"]]["id"])
    # Upstream revokes both; a third is published and revoked before the second hub ever sees it.
    csaf_new = up.advisories.list(source="kev", search="Citrix", status="new")[0]
    triage.publish(up, [csaf_new["id"]], "analyst")
    triage.revoke(up, [live["id"], pending["id"], csaf_new["id"]], "withdrawn by the vendor", "analyst")
    down.run("fetch")
    after = {r["id"]: r for r in down.json("advisories", "list", "--source", "peer", "--status", "all")}
    assert after[rows[live["title"]]["id"]]["status"] == "revoked"
    assert after[rows[pending["title"]]["id"]]["status"] == "rejected"
    assert csaf_new["title"] not in {r["title"] for r in after.values()}
    refused = down.run("advisories", "publish", rows[pending["title"]]["id"], ok=None)
    assert refused.exit_code != 0 and "revoked by its source" in refused.output
    audit = [a for a in down.json("audit", "list") if a["action"] == "revoke"]
    assert audit and audit[-1]["actor"] == "ingest:peer"
    # The revocation reaches the second hub's consumers, in its export too.
    bundle = json.loads(down.run("export", "bundle", "--since", "2000-01-01").stdout)
    tomb = [o for o in bundle["objects"] if o["id"] == rows[live["title"]]["id"]]
    assert tomb and tomb[0]["revoked"] is True and tomb[0]["labels"] == ["revoked"]


def test_stix_2_0_objects_are_served_by_spec_version(tmp_path):
    hub = Hub(new_db(tmp_path))
    (tmp_path / "none.toml").write_text("")
    hub.run("init", "--sources", str(tmp_path / "none.toml"))
    hub.run("sources", "add", "old", "https://peer.example/stix", "--kind", "stix")
    ind = f"indicator--{uuid.uuid4()}"
    only20 = f"indicator--{uuid.uuid4()}"
    rid = f"report--{uuid.uuid4()}"

    def bundle(version: str, modified: str) -> str:
        common = {"created": "2020-01-01T00:00:00.000Z", "modified": modified}
        v21 = {"spec_version": "2.1"} if version == "2.1" else {}
        objects = [
            {"type": "indicator", "id": ind, **common, **v21, "name": f"indicator {version}",
             "pattern": "[ipv4-addr:value = '198.51.100.1']", "valid_from": "2020-01-01T00:00:00Z",
             **({"pattern_type": "stix"} if v21 else {"labels": ["malicious-activity"]})},
            {"type": "indicator", "id": only20, "created": "2020-01-01T00:00:00.000Z",
             "modified": "2020-01-01T00:00:00.000Z", "name": "only 2.0", "labels": ["malicious-activity"],
             "pattern": "[ipv4-addr:value = '198.51.100.2']", "valid_from": "2020-01-01T00:00:00Z"},
            {"type": "report", "id": rid, **common, **v21, "name": "A STIX 2.0 producer's report",
             "published": "2020-01-01T00:00:00Z", "object_refs": [ind, only20],
             **({} if v21 else {"labels": ["threat-report"]})},
        ]
        path = tmp_path / f"b{version}.json"
        path.write_text(json.dumps({"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}))
        return str(path)

    hub.run("collections", "add", "everything", "--title", "All", "--filter", "tlp <= RED")
    hub.run("ingest", bundle("2.0", "2020-01-01T00:00:00.000Z"), "--source", "old")
    hub.run("advisories", "publish", "--source", "old", "--yes")
    hub.run("ingest", bundle("2.1", "2021-01-01T00:00:00.000Z"), "--source", "old")
    hub.run("advisories", "publish", "--source", "old", "--status", "published", "--yes")
    store = Store(hub.db)
    members.add(store, "reader", "reader", "RED")
    members.grant(store, "reader", "everything", True, False)
    secret = members.new_secret(store, "reader")
    server = ServerProcess(hub.db).start()
    try:
        url = f"{server.base}/ceptoar/collections/{store.collections.get('everything')['uuid']}/"

        def get(path: str, **params) -> dict:
            r = requests.get(url + path, params=params, auth=("reader", secret), headers={"Accept": TAXII})
            assert r.status_code == 200, r.text
            return r.json()

        def versions_of(body: dict, oid: str) -> list[str]:
            return [o.get("spec_version", "2.0") for o in body.get("objects", []) if o["id"] == oid]

        assert versions_of(get("objects/"), ind) == ["2.1"]  # only the latest spec version
        assert versions_of(get("objects/", **{"match[version]": "all"}), ind) == ["2.1"]
        assert versions_of(get("objects/"), only20) == ["2.0"]  # its latest spec version is 2.0
        assert versions_of(get("objects/", **{"match[spec_version]": "2.0"}), ind) == ["2.0"]
        assert versions_of(get("objects/", **{"match[spec_version]": "2.0", "match[version]": "last"}), ind) == ["2.0"]
        both = get("objects/", **{"match[spec_version]": "2.0,2.1", "match[version]": "all"})
        assert sorted(versions_of(both, ind)) == ["2.0", "2.1"]
        manifest = get("manifest/", **{"match[spec_version]": "2.0,2.1", "match[version]": "all", "match[id]": ind})
        assert sorted(m["media_type"] for m in manifest["objects"]) == [
            "application/stix+json;version=2.0", "application/stix+json;version=2.1"]
    finally:
        server.stop()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # our own test CA
def test_client_certificates_verified_by_nginx(hub, tmp_path, monkeypatch):
    nginx()
    store = Store(hub.db)
    for mid in ("jma", "jda"):
        members.add(store, mid, mid, "GREEN")
    secret = members.new_secret(store, "jma")
    server = self_signed(tmp_path, "server", "/CN=taxii.example.jp")
    ca = self_signed(tmp_path, "ca", "/CN=CEPTOAR member CA")
    rogue_ca = self_signed(tmp_path, "rogue", "/CN=Someone else's CA")
    jma = issued(tmp_path, "jma", "/C=JP/O=Japan Medical Association/CN=jma-secretariat", ca)
    jda = issued(tmp_path, "jda", "/C=JP/O=Japan Dental Association/CN=jda-secretariat", ca)
    stranger = issued(tmp_path, "stranger", "/CN=not-a-member", ca)
    rogue = issued(tmp_path, "rogue-jma", "/C=JP/O=Japan Medical Association/CN=jma-secretariat", rogue_ca)
    hub.run("members", "cert", "jma", "--cert-file", str(jma[0]), "--required")
    hub.run("members", "cert", "jda", "--subject", "CN=jda-secretariat,O=Japan Dental Association,C=JP")
    key = "k" + uuid.uuid4().hex
    monkeypatch.setenv("CEPTOAR_TAXII_PROXY_KEY", key)
    upstream = ServerProcess(hub.db, gunicorn=True, workers=1).start()
    try:
        with Nginx(tmp_path, upstream.base, server=server, members_ca=ca[0], proxy_key=key) as proxy:
            def get(cert=None, auth=None, headers=None):
                return requests.get(proxy.base + "/taxii2/", cert=cert, auth=auth, verify=False, timeout=10,
                                    headers={"Accept": TAXII} | (headers or {}))

            assert get(cert=(str(jma[0]), str(jma[1]))).status_code == 200  # by fingerprint
            assert get(cert=(str(jda[0]), str(jda[1]))).status_code == 200  # by subject
            assert get(cert=(str(stranger[0]), str(stranger[1]))).status_code == 401  # no member's
            assert get(cert=(str(rogue[0]), str(rogue[1]))).status_code == 400  # nginx: not our CA
            assert get(auth=("jma", secret)).status_code == 401  # jma must present its certificate
            # Headers a client sends itself are replaced by nginx's.
            forged = {"X-SSL-Client-Verify": "SUCCESS", "X-SSL-Client-S-DN": "CN=jda-secretariat,O=Japan Dental "
                      "Association,C=JP", "X-Ceptoar-Proxy-Key": key}
            assert get(headers=forged).status_code == 401
        # Straight to gunicorn (not through nginx): without the proxy's key no header is believed.
        direct = requests.get(upstream.base + "/taxii2/", headers={"Accept": TAXII, "X-SSL-Client-Verify": "SUCCESS",
                              "X-SSL-Client-S-DN": "CN=jda-secretariat,O=Japan Dental Association,C=JP"})
        assert direct.status_code == 401
        entries = [a for a in store.audit.list(member="jma") if a["action"] == "taxii"]
        assert entries and (entries[0]["details"] or {}).get("via") == "certificate"
    finally:
        upstream.stop()
