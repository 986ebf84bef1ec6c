"""Versions and purls through libraries (issue 32, part 6): a register row's `purl` (parsed by
packageurl-python) matches a CSAF product whose identification helper names the same package, as
the purl specification compares them (type-specific case, qualifiers ignored); versions compare by
univers with the ecosystem's rules where the scheme is known (a `vers:` range, the purl's type);
a bad purl in a register is reported with its line and the rest kept.

The CSAF documents are real: CISA's ICSMA-24-060-01 (../shared/data) with a package URL and a
`vers:npm` range added to its one product, the way vendors of software components publish them, and
the OASIS CSAF TC's purl test document (tests/fixtures/csaf21)."""

from __future__ import annotations

import json
from pathlib import Path

from ceptoar.facilities import matching
from tests.conftest import DATA

ICSMA = json.loads((DATA / "cisa_icsma/cisagov_CSAF_icsma-24-060-01.json").read_text(encoding="utf-8"))
FACILITIES = "facility_id,name,facility_type,prefecture,member\nsakura,さくら診療所,clinic,東京都,assoc-green\n"
HEADER = "category,vendor,product,version,cpe,purl,aliases,internet_exposed,remote_maintenance,maintenance_vendor,note\n"
PURL = "pkg:npm/%40acme/infusion-gateway"


def with_purl(doc: dict, purl: str, version_range: str) -> dict:
    doc = json.loads(json.dumps(doc))
    stack = [doc["product_tree"]]
    while stack:
        node = stack.pop()
        if isinstance(node.get("product"), dict):
            node["product"]["product_identification_helper"] = {"purl": purl}
            node["category"], node["name"] = "product_version_range", version_range
        stack.extend(node.get("branches") or [])
    return doc


def test_a_register_purl_matches_the_csaf_product_by_its_ecosystems_versions(hub, feed_server, tmp_path):
    doc = with_purl(ICSMA, f"{PURL}?repository_url=https://npm.acme.example", "vers:npm/>=2.0.0|<2.4.0")
    hub.run("sources", "add", "csaf", feed_server.route("/csaf.json", json.dumps(doc)), "--kind", "csaf")
    hub.run("fetch", "csaf")
    (adv,) = hub.json("advisories", "list", "--status", "all")
    hub.run("advisories", "publish", adv["id"])
    hub.run("members", "add", "assoc-green", "--name", "Association", "--clearance", "green")
    (tmp_path / "f.csv").write_text(FACILITIES, encoding="utf-8")
    hub.run("facilities", "import", str(tmp_path / "f.csv"))
    rows = HEADER + "\n".join([
        f"医療機器,,輸液ゲートウェイ,,,{PURL}@2.3.1,,no,no,,",     # in the range by npm's rules
        f"医療機器,,輸液ゲートウェイ,,,{PURL}@2.4.0,,no,no,,",     # the fixed version
        f"医療機器,,輸液ゲートウェイ,2.4.0-rc.1,,{PURL},,no,no,,",  # npm: a pre-release of 2.4.0 comes before it
        "医療機器,,輸液ゲートウェイ,,,pkg:npm/%40other/infusion-gateway@2.3.1,,no,no,,",  # another package
        "医療機器,,輸液ゲートウェイ,,,pkg:/no-type@1,,no,no,,",     # not a purl: reported, the rest kept
    ]) + "\n"
    (tmp_path / "r.csv").write_text(rows, encoding="utf-8")
    r = hub.run("inventory", "import", "sakura", str(tmp_path / "r.csv"), ok=None)
    assert "r.csv:6: purl 'pkg:/no-type@1' is not a package URL" in r.output, r.output
    assert "4 rows, 1 rejected" in r.output
    found = {m["row"]: m for m in hub.json("matches", "list", "--facility", "sakura")}
    assert set(found) == {1, 3}, found  # not the fixed 2.4.0, not another package
    assert found[1]["confidence"] == found[3]["confidence"] == "version"
    assert found[1]["reasons"] == ["purl pkg:npm/@acme/infusion-gateway", "版 2.3.1 が影響範囲 >=2.0.0 <2.4.0 にあります"]
    assert not matching.in_range("2.4.0-rc.1", [(">=", "2.0.0"), ("<", "2.4.0")])  # what the generic rules said


def test_purls_compare_as_the_specification_says():
    assert matching.purl_parts("pkg:PyPI/Django@4.2.1?arch=x") == ("pypi", "", "django", "4.2.1")
    assert matching.purl_parts("pkg:maven/com.example/product-A") == ("maven", "com.example", "product-A", "")
    assert matching.purl_parts("pkg:/bad") is None and matching.purl_parts("not a purl") is None
    assert matching.purl_error("pkg:/bad") and matching.purl_error("pkg:npm/x@1") is None
    # Ecosystem rules where the generic ones would be wrong.
    assert matching.in_range("1.0.0-rc.1", [("<", "1.0.0")], "npm")  # a pre-release comes before its release
    assert not matching.in_range("1.0.0", [("<", "1.0.0")], "npm")
    assert matching.in_range("1.0rc1", [("<", "1.0")], "pypi")  # PEP 440
    assert matching.in_range("1:1.2-1", [(">", "2.0")], "deb")  # an epoch outranks the version
    assert matching.in_range("7.2.8.810", [("<=", "7.2.8.810")])  # the generic rules stand elsewhere


def test_a_csaf_product_named_only_by_its_purl_is_read(hub, tmp_path):
    fixture = Path(__file__).parent / "fixtures/csaf21/oasis_csaf_tc-csaf_2_1-2024-6-1-13-11.json"
    hub.run("sources", "add", "oasis", "https://csaf.example/", "--kind", "csaf")
    out = json.loads(hub.run("ingest", str(fixture), "--source", "oasis", "--format", "json").stdout)[0]
    assert out["status"] == "ok", out
    (adv,) = hub.json("advisories", "list", "--status", "all")
    bundle = json.loads(hub.run("advisories", "show", adv["id"], "--format", "stix").stdout)
    (report,) = [o for o in bundle["objects"] if o["type"] == "report"]
    (affected,) = [ext["csaf"]["affected"] for ext in report["extensions"].values() if "csaf" in ext]
    assert affected == [{"product": "Product A", "purl": "pkg:maven/com.example/product-A", "vendor": None}]
