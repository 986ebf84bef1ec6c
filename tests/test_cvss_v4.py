"""CVSS as sources publish it now (issue 32, part 1 and 2): CVSS 4.0 from JVN, CSAF 2.0/2.1 and STIX
bundles, each score checked against its vector with the `cvss` library (a disagreeing score kept as
stated, with a warning; an invalid vector a warning, never a failed source); an advisory ranked by
the highest score of the newest CVSS version it has; the version shown beside the score; CSAF 2.1
documents (`metrics`, `cwes`) read as 2.0 ones are.

The CSAF 2.1 documents are the OASIS CSAF TC's own examples and validator test files
(tests/fixtures/csaf21/SOURCES.md); the JVN feed is a real one with a CVSS 4.0 element added where
a case needs one (JVN writes them the same way as its 3.0 ones)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ceptoar.core import extensions
from ceptoar.core.model import HUB, effective_severity, vulnerability_id
from ceptoar.publishing.filters import compile_filter
from ceptoar.store import Store
from ceptoar.store.schema import SCHEMA_VERSION
from tests.conftest import DATA

CSAF21 = Path(__file__).parent / "fixtures" / "csaf21"
JVN = (DATA / "jvn/vulsdata_jvndb_2023.rdf").read_text(encoding="utf-8")
V4 = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"  # 9.3 by the specification


def fetch(hub, feed_server, kind: str, name: str, body) -> tuple[dict, list[dict]]:
    hub.run("sources", "add", name, feed_server.route(f"/{name}", body), "--kind", kind)
    r = hub.run("fetch", name, "--format", "json", ok=None)
    (out,) = json.loads(r.stdout)
    store = Store(hub.db)
    return out, [store.advisories.get(a["id"]) for a in hub.json("advisories", "list", "--status", "all",
                                                                 "--source", name)]


def csaf(name: str) -> bytes:
    return (CSAF21 / name).read_bytes()


def test_a_csaf_2_1_cvss_4_score_its_vector_disagrees_with_is_kept_as_stated(hub, feed_server):
    out, (adv,) = fetch(hub, feed_server, "csaf", "disagrees", csaf("oasis_csaf_tc-csaf_2_1-2024-6-1-09-04.json"))
    assert out["status"] == "ok" and out["new"] == 1
    assert out["warnings"] == ["OASIS_CSAF_TC-CSAF_2.1-2024-6-1-09-04 vulnerability 1: CVSS 4.0 score 9.3 stated, "
                               "10 computed from its vector: kept as stated"]
    assert adv["max_cvss"] == 9.3
    assert adv["cvss"] == [{"version": "4.0", "score": 9.3, "severity": "Critical",
                            "vector": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H"}]
    assert "CVSS 4.0 9.3" in hub.run("advisories", "list", "--status", "all").stdout
    out, (adv,) = fetch(hub, feed_server, "csaf", "agrees", csaf("oasis_csaf_tc-csaf_2_1-2024-6-1-09-14.json"))
    assert out["warnings"] == [] and adv["max_cvss"] == 10.0


def test_the_newest_cvss_version_ranks_and_a_missing_severity_is_its_band(hub, feed_server):
    # CVSS 2.0 and 3.1 scores of 10 beside a CVSS 4.0 score of 5.7: the advisory ranks by the 4.0 one.
    out, (adv,) = fetch(hub, feed_server, "csaf", "mixed", csaf("oasis_csaf_tc-csaf_2_1-2024-6-3-01-03.json"))
    assert out["status"] == "ok" and out["warnings"] == []
    assert sorted((c["version"], c["score"]) for c in adv["cvss"]) == [
        ("2.0", 4.3), ("2.0", 4.6), ("2.0", 5.5), ("2.0", 10.0), ("3.1", 10.0), ("4.0", 5.7)]
    assert adv["max_cvss"] == 5.7
    assert not compile_filter("cvss >= 9")(adv) and compile_filter("cvss >= 5")(adv)
    out, (adv,) = fetch(hub, feed_server, "csaf", "unbanded", csaf("oasis_csaf_tc-csaf_2_1-2024-6-1-08-04.json"))
    assert adv["cvss"][0]["severity"] == "Medium" and adv["max_cvss"] == 5.4


def test_csaf_2_1_vendor_documents_keep_cve_cwes_and_remediations(hub, feed_server):
    out, (adv,) = fetch(hub, feed_server, "csaf", "cisco", csaf("cisco-sa-20180328-smi2.json"))
    assert out["status"] == "ok" and adv["cves"] == ["CVE-2018-0171"]
    assert adv["cvss"] == [{"version": "3.0", "score": 9.8, "severity": "Critical", "cve": "CVE-2018-0171",
                            "vector": "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]
    bundle = json.loads(hub.run("advisories", "show", adv["id"], "--format", "stix").stdout)
    (vuln,) = [o for o in bundle["objects"] if o["type"] == "vulnerability"]
    assert vuln["x_opencti_cvss_base_score"] == 9.8
    out, (adv,) = fetch(hub, feed_server, "csaf", "bsi", csaf("bsi-2022-0001.json"))
    bundle = json.loads(hub.run("advisories", "show", adv["id"], "--format", "stix").stdout)
    (vuln,) = [o for o in bundle["objects"] if o["type"] == "vulnerability"]
    assert vuln["x_opencti_cwe"] == ["CWE-611"] and vuln["name"] == "CVE-2022-27193"
    (report,) = [o for o in bundle["objects"] if o["type"] == "report"]
    assert "vendor_fix" in json.dumps(report)


def test_jvn_cvss_4_ranks_over_3_and_a_bad_vector_is_a_warning(hub, feed_server):
    first = JVN.index("<sec:cvss ")
    v4 = f'<sec:cvss version="4.0" score="9.3" type="Base" severity="Critical" vector="{V4}"/>\n    '
    bad = '<sec:cvss version="4.0" score="8.0" type="Base" severity="High" vector="CVSS:4.0/AV:Q/AC:L"/>\n    '
    text = JVN[:first] + v4 + bad + JVN[first:]
    out, advisories = fetch(hub, feed_server, "jvn", "jvn", text.encode())
    assert out["status"] == "ok" and out["new"] == 2
    (w,) = [w for w in out["warnings"] if "AV:Q" in w]
    assert "CVSS 4.0 vector 'CVSS:4.0/AV:Q/AC:L' is not valid" in w and "the stated score kept" in w
    top = max(advisories, key=lambda a: a["max_cvss"] or 0)
    assert top["max_cvss"] == 9.3  # the 4.0 scores (9.3, 8.0) stand over the item's 3.0 score (5.5)
    assert {(c["version"], c["score"], c["vector"]) for c in top["cvss"]} == {
        ("4.0", 9.3, V4), ("4.0", 8.0, None), ("3.0", 5.5, "CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H")}
    assert top["severity"] is None and effective_severity(top) == "critical"
    table = hub.run("advisories", "list", "--status", "all").stdout
    assert "CVSS 4.0 9.3" in table and "CVSS 3.0 5.5" in table  # the other item's headline: a 3.0 score
    csv_out = hub.run("advisories", "list", "--status", "all", "--format", "csv").stdout
    assert "CVSS 4.0 9.3;CVSS 4.0 8;CVSS 3.0 5.5" in csv_out


@pytest.mark.parametrize("extension", [False, True])
def test_stix_bundles_bring_cvss_4_from_common_properties(hub, feed_server, extension):
    vid = "vulnerability--4c3b1f6e-7f0a-4d2b-9e55-0a1b2c3d4e5f"
    vuln = {"type": "vulnerability", "spec_version": "2.1", "id": vid, "created": "2026-11-02T00:00:00.000Z",
            "modified": "2026-11-02T00:00:00.000Z", "name": "CVE-2024-3400",
            "external_references": [{"source_name": "cve", "external_id": "CVE-2024-3400"}],
            "x_opencti_cvss_base_score": 10.0, "x_opencti_cvss_base_severity": "CRITICAL",
            "x_opencti_cvss_vector_string": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"}
    if extension:  # as another CEPTOAR hub serves it
        vuln["extensions"] = {"extension-definition--3f1b6d1e-2a5c-5d8e-9b0f-6c7d8e9fa0b1": {
            "extension_type": "property-extension", "cvss": [{"version": "4.0", "score": 9.3, "vector": V4}]}}
    else:
        vuln |= {"x_opencti_cvss_v4_base_score": 9.3, "x_opencti_cvss_v4_vector_string": V4}
    report = {"type": "report", "spec_version": "2.1", "id": "report--4c3b1f6e-7f0a-4d2b-9e55-0a1b2c3d4e60",
              "created": "2026-11-02T00:00:00.000Z", "modified": "2026-11-02T00:00:00.000Z",
              "name": "PAN-OS GlobalProtect", "published": "2026-11-02T00:00:00Z", "report_types": ["vulnerability"],
              "object_refs": [vid]}
    body = json.dumps({"type": "bundle", "id": "bundle--4c3b1f6e-7f0a-4d2b-9e55-0a1b2c3d4e61",
                       "objects": [report, vuln]})
    if extension:
        body = body.replace("extension-definition--3f1b6d1e-2a5c-5d8e-9b0f-6c7d8e9fa0b1", extensions.VULNERABILITY)
    out, (adv,) = fetch(hub, feed_server, "stix", "partner", body)
    assert out["status"] == "ok" and out["warnings"] == [], out
    assert adv["max_cvss"] == 9.3
    assert {(c["version"], c["score"]) for c in adv["cvss"]} == {("4.0", 9.3), ("3.1", 10.0)}
    # The hub's shared vulnerability for the CVE, as it serves it, carries the 4.0 score where OpenCTI reads it.
    (held,) = Store(hub.db).objects.latest([vulnerability_id("CVE-2024-3400")], HUB).values()
    hubs = json.loads(held.json)
    assert hubs["x_opencti_cvss_v4_base_score"] == 9.3 and hubs["x_opencti_cvss_v4_vector_string"] == V4
    assert hubs["x_opencti_cvss_v4_base_severity"] == "CRITICAL" and hubs["x_opencti_cvss_base_score"] == 10.0


def test_an_upgrade_ranks_held_advisories_by_their_newest_cvss_version(hub, feed_server, tmp_path):
    """Schema 16 → 17 (and on): `max_cvss` of the advisories held, again from their stored scores."""
    _, (adv,) = fetch(hub, feed_server, "csaf", "mixed", csaf("oasis_csaf_tc-csaf_2_1-2024-6-3-01-03.json"))
    store = Store(hub.db)
    with store.transaction():
        store.execute("UPDATE advisories SET max_cvss = 10.0 WHERE id = ?", (adv["id"],))  # as schema 16 ranked it
        store.execute("UPDATE meta SET value = '16' WHERE key = 'schema_version'")
    (tmp_path / "none.toml").write_text("")
    assert f"from schema 16 to {SCHEMA_VERSION}" in hub.run("init", "--sources", str(tmp_path / "none.toml")).output
    assert Store(hub.db).advisories.get(adv["id"])["max_cvss"] == 5.7
