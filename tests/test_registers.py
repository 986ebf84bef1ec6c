"""Facilities, their registers (台帳) and the matching of published advisories against them:
registers built from real product names in ../shared/data (ICSMA product trees, KEV vendors and
products, a JVN VULDEF CPE) plus near misses, with exact expectations; the facility's own block in
its digest, delivered to a real SMTP server; registers kept TLP:RED."""

from __future__ import annotations

import json

import pytest

from ceptoar.clinics import exposure
from ceptoar.core.model import TLP_IDS
from ceptoar.publishing import triage
from ceptoar.store import Store
from tests.conftest import DATA
from tests.taxii_fixtures import build_world

FACILITIES = """facility_id,name,facility_type,prefecture,member,phone
sakura,さくら診療所,clinic,東京,assoc-green,03-1234-5678
aoba,あおば歯科,dental,大阪府,assoc-green,
bad id,x,clinic,東京都,assoc-green,
kaede,かえで薬局,zoo,東京都,assoc-green,
nire,にれ病院,hospital,東京都,nobody,
"""
HEADER = ("category,vendor,product,version,cpe,purl,aliases,internet_exposed,remote_maintenance,maintenance_vendor,"
          "note\n")
SAKURA = HEADER + """VPN装置,フォーティネット,FortiOS,7.0.1,,,FortiGate,yes,yes,保守業者A,
PACS,Philips,Vue PACS,12.2.8.400,,,,no,yes,,
PACS,Philips,Vue PACS,12.2.8.410,,,,no,no,,fixed version
医療機器,MicroDicom,DICOM Viewer,2024.1,,,,no,no,,fixed version
医療機器,マイクロダイコム,MicroDicom DICOM Viewer,2023.3_Build_9000,,,,no,no,,
端末OS,マイクロソフト,Windows,11,,,,no,no,,
その他,,Vue PACS,,,,,no,no,,no vendor given
その他,Philips,Vue Motion,1.0,,,,no,no,,similar name
その他,JACIC,電子入札システム,v6 R3,cpe:/a:jacic:electronic_bidding_core_system,,,no,no,,
その他,JACIC,電子入札システム(新),v6 R5,cpe:/a:jacic:electronic_bidding_core_system,,,no,no,,newer
壊れた,x,y,,,,,no,no,,
ルータ,Yamaha,RTX1210,,,,,maybe,no,,
サーバOS,x,,,,,,no,no,,
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registers")
    w = build_world(tmp)
    hub, store = w.hub, Store(w.db)
    hub.run("sources", "add", "jvn-detail", "https://feeds.example/vuldef", "--kind", "jvn")
    hub.run("ingest", str(DATA / "jvn/myjvn_np_getVulnDetailInfo_hnd_JVNDB-2022-000097.xml"), "--source", "jvn-detail")
    hub.run("sources", "add", "icsma3", "https://feeds.example/icsma3", "--kind", "csaf")
    hub.run("ingest", str(DATA / "cisa_icsma/cisagov_CSAF_icsma-22-174-01.json"), "--source", "icsma3")
    w.forti = [r["id"] for r in store.advisories.list(source="kev", search="FortiOS Use of Hard-Coded")]
    w.jvn = store.advisories.list(source="jvn-detail")[0]["id"]
    w.dcmtk = store.advisories.list(source="icsma3")[0]["id"]
    triage.publish(store, w.forti + [w.jvn, w.dcmtk], "test")
    (tmp / "facilities.csv").write_text(FACILITIES, encoding="utf-8")
    w.imported = hub.run("facilities", "import", str(tmp / "facilities.csv"), ok=None)
    (tmp / "sakura.csv").write_text(SAKURA, encoding="utf-8")
    w.register = hub.run("inventory", "import", "sakura", str(tmp / "sakura.csv"), ok=None)
    w.tmp, w.store = tmp, store
    return w


def matched(world, facility="sakura") -> dict[int, dict[str, str]]:
    """register row → {advisory: confidence}"""
    out: dict[int, dict[str, str]] = {}
    for m in world.hub.json("matches", "list", "--facility", facility):
        out.setdefault(m["row"], {})[m["advisory"]] = m["confidence"]
    return out


def test_imports_report_bad_rows_by_line_and_keep_the_rest(world):
    r = world.imported
    assert r.exit_code == 1 and "2 added, 0 updated, 3 rejected" in r.output
    assert "facilities.csv:4: facility_id 'bad id'" in r.output
    assert "facilities.csv:5: facility_type must be one of" in r.output
    assert "facilities.csv:6: unknown member 'nobody'" in r.output
    assert world.store.facilities.get("sakura")["prefecture"] == "東京都"
    r = world.register
    assert r.exit_code == 1 and "sakura: register version 1, 10 rows, 3 rejected" in r.output
    assert "sakura.csv:12: category must be one of" in r.output
    assert "sakura.csv:13: internet_exposed must be yes or no" in r.output
    assert "sakura.csv:14: product is required" in r.output
    assert world.hub.run("inventory", "import", "nowhere", str(world.tmp / "sakura.csv"), ok=None).exit_code == 1
    # Hostile files: a field past the csv module's limit, an SBOM nested past the parser's depth.
    (world.tmp / "huge.csv").write_text(HEADER + "PACS,x," + "y" * 200000 + ",1\n", encoding="utf-8")
    r = world.hub.run("inventory", "import", "aoba", str(world.tmp / "huge.csv"), ok=None)
    assert r.exit_code == 1 and "line 2: unreadable CSV" in r.output and "Traceback" not in r.output
    (world.tmp / "deep.json").write_text("[" * 100000 + "]" * 100000, encoding="utf-8")
    r = world.hub.run("inventory", "import", "aoba", str(world.tmp / "deep.json"), "--device", "x", ok=None)
    assert r.exit_code == 1 and "nested too deeply" in r.output and "Traceback" not in r.output
    # Every row bad: the reasons by line are the answer, not only a count.
    (world.tmp / "none.csv").write_text(HEADER + "PACS,x,y,\x1b[31m,,,,no,no,,\n", encoding="utf-8")
    r = world.hub.run("inventory", "import", "aoba", str(world.tmp / "none.csv"), ok=None)
    assert r.exit_code == 1 and "line 2: version contains control characters" in r.output
    assert world.store.facilities.register_versions("aoba") == []  # nothing half-imported


def test_matches_have_exact_confidences(world):
    store = world.store
    amber = world.amber_report  # Philips Vue PACS, < 12.2.8.410
    green = world.green_report  # MicroDicom DICOM Viewer, <= 2023.3_Build_9342
    m = matched(world)
    assert m[2] == {amber: "version"}  # 12.2.8.400 is affected
    assert 3 not in m  # 12.2.8.410 is the fixed version: not a match
    assert 4 not in m  # 2024.1 is past the affected range
    assert m[5] == {green: "version"}  # the Japanese vendor name through the alias list
    assert m[7] == {amber: "name"}  # no vendor given: the product name alone
    assert 8 not in m  # a similar name is no match
    assert m[9] == {world.jvn: "version"}  # JVN's CPE, and "v6 R4 およびそれ以前" includes v6 R3
    assert 10 not in m  # v6 R5 is newer than every affected version
    assert set(m[1].values()) == {"product"} and set(m[1]) <= set(world.forti) and m[1]  # フォーティネット = Fortinet
    # Windows: exactly the published KEV entries whose vendor/project and product are Microsoft Windows.
    catalog = json.loads((DATA / "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json").read_text())
    windows = {v["cveID"] for v in catalog["vulnerabilities"]
               if (v["vendorProject"].strip(), v["product"].strip()) == ("Microsoft", "Windows")}  # "Windows " too
    published = {r["id"]: r["cves"][0] for r in store.advisories.list(source="kev", status="published")}
    assert {published[a] for a in m[6]} == windows & set(published.values()) and set(m[6].values()) == {"product"}
    rows = world.hub.json("matches", "list", "--facility", "sakura", "--min-confidence", "version")
    assert {r["row"] for r in rows} == {2, 5, 9}
    one = next(r for r in rows if r["row"] == 2)
    assert one["facility"] == "sakura" and one["title"] == "Philips Vue PACS" and one["status"] == "unanswered"
    assert one["product"] == "[PACS] Philips Vue PACS 12.2.8.400 (リモート保守)"
    assert "版 12.2.8.400 が影響範囲 <12.2.8.410 にあります" in one["reasons"] and one["severity"] == "critical"
    forti = next(r for r in world.hub.json("matches", "list", "--facility", "sakura") if r["row"] == 1)
    assert forti["kev"] is True and forti["internet_exposed"] is True
    # Published before any register held FortiOS; the register imported after still owes alerts.
    queued = {a for (a,) in world.store.execute("SELECT advisory FROM targeted_alerts WHERE facility = 'sakura'")}
    assert set(world.forti) <= queued and world.dcmtk not in queued


def test_publishing_revoking_and_reimporting_rematch(world, tmp_path):
    hub, store = world.hub, world.store
    (tmp_path / "aoba.csv").write_text(HEADER + "医療機器,OFFIS,DCMTK,3.6.6,,,,no,no,,\n", encoding="utf-8")
    hub.run("inventory", "import", "aoba", str(tmp_path / "aoba.csv"))
    assert matched(world, "aoba") == {1: {world.dcmtk: "version"}}
    hub.run("advisories", "revoke", world.dcmtk, "--reason", "test")
    assert matched(world, "aoba") == {}
    (tmp_path / "aoba.csv").write_text(HEADER + "医療機器,OFFIS,DCMTK,3.6.7,,,,no,no,,\n", encoding="utf-8")
    hub.run("inventory", "import", "aoba", str(tmp_path / "aoba.csv"))
    assert [v["version"] for v in store.facilities.register_versions("aoba")] == [1, 2]
    # One device's SBOM (CycloneDX) replaces that device's rows only.
    sbom = {"bomFormat": "CycloneDX", "specVersion": "1.5",
            "metadata": {"component": {"type": "device", "name": "Vue PACS", "version": "12.2.8.400",
                                       "supplier": {"name": "Philips"}}},
            "components": [{"type": "library", "name": "jackson-databind", "version": "2.9.10",
                            "purl": "pkg:maven/com.fasterxml.jackson.core/jackson-databind@2.9.10"},
                           {"type": "library", "version": "1.0"}]}
    (tmp_path / "sbom.json").write_text(json.dumps(sbom), encoding="utf-8")
    r = hub.run("inventory", "import", "aoba", str(tmp_path / "sbom.json"), "--device", "読影端末", ok=None)
    assert r.exit_code == 1 and "component 3" in r.output and "3 rows" in r.output
    rows = {x["product"]: x for x in hub.json("inventory", "list", "aoba")}
    assert set(rows) == {"DCMTK", "Vue PACS", "jackson-databind"} and rows["Vue PACS"]["device"] == "読影端末"
    assert matched(world, "aoba") == {2: {world.amber_report: "version"}}
    audit = [a["action"] for a in hub.json("audit", "list") if a["target"] == "aoba"]
    assert audit.count("register-import") == 3 and "register-read" in audit


def test_rows_alike_share_a_profile_and_its_matches(world, tmp_path):
    """A second facility running what sakura runs adds no profile: its matches are sakura's, and
    its reminders count from the day the rows came into its own register, not sakura's."""
    from ceptoar.clinics import responses

    hub, store = world.hub, world.store
    (tmp_path / "f.csv").write_text("facility_id,name,facility_type,prefecture,member\n"
                                    "hinoki,ひのき診療所,clinic,北海道,assoc-green\n", encoding="utf-8")
    hub.run("facilities", "import", str(tmp_path / "f.csv"))
    profiles = store.count("row_profiles")
    store.execute("UPDATE matches SET matched = '2026-01-01T00:00:00Z'")
    store.execute("UPDATE register_rows SET added = '2026-01-01T00:00:00Z' WHERE facility = 'sakura'")
    (tmp_path / "hinoki.csv").write_text(SAKURA, encoding="utf-8")
    hub.run("inventory", "import", "hinoki", str(tmp_path / "hinoki.csv"), ok=None)
    assert store.count("row_profiles") == profiles
    assert matched(world, "hinoki") == matched(world)
    due = responses.due_reminders(store, ["sakura", "hinoki"], days=3)
    assert due.get("sakura") and "hinoki" not in due
    # Re-imported with one row: the profiles nobody has any more are forgotten, with their matches.
    (tmp_path / "hinoki.csv").write_text(HEADER + "医療機器,OFFIS,DCMTK,3.5.0,,,,no,no,,\n", encoding="utf-8")
    hub.run("inventory", "import", "hinoki", str(tmp_path / "hinoki.csv"))
    assert store.count("row_profiles") == profiles + 1
    assert store.scalar("SELECT COUNT(*) FROM row_profiles p WHERE NOT EXISTS "
                        "(SELECT 1 FROM register_rows r WHERE r.profile = p.seq)") == 0
    assert matched(world, "hinoki") == {}


def test_exposure_counts_are_published_as_a_green_note_without_names(world, tmp_path):
    """Seven facilities in 東京都 and two in 大阪府 run FortiOS: the note names 東京都 (7) and counts
    大阪府's two under その他; served to GREEN readers of the KEV collection, not to a CLEAR one."""
    from taxii2client.v21 import Collection, as_pages

    from ceptoar.sharing import members
    from tests.taxii_fixtures import ServerProcess

    hub, store = world.hub, world.store
    forti = max(world.forti, key=lambda a: store.facilities.count_matches(advisory=a))
    rows = [f"t{i},東京{i}診療所,clinic,東京都,assoc-green" for i in range(6)] + \
        [f"o{i},大阪{i}診療所,clinic,大阪府,assoc-green" for i in range(2)]
    (tmp_path / "f.csv").write_text("facility_id,name,facility_type,prefecture,member\n" + "\n".join(rows) + "\n",
                                    encoding="utf-8")
    hub.run("facilities", "import", str(tmp_path / "f.csv"))
    (tmp_path / "r.csv").write_text(HEADER + "VPN装置,Fortinet,FortiOS,7.0.1,,,,yes,no,,\n", encoding="utf-8")
    for fid in [f"t{i}" for i in range(6)] + ["o0", "o1"]:
        hub.run("inventory", "import", fid, str(tmp_path / "r.csv"))
    counted = hub.json("matches", "exposure", forti)
    assert counted["facilities"] == 9 and counted["prefectures"] == [
        {"prefecture": "東京都", "facilities": 7}, {"prefecture": "その他 (<5)", "facilities": 2}]
    assert "大阪" not in json.dumps(counted, ensure_ascii=False)
    r = hub.run("matches", "exposure", forti, "--minimum", "10", "--publish", ok=None)
    assert r.exit_code == 1 and "fewer than the minimum 10" in r.output and "Traceback" not in r.output
    hub.run("matches", "exposure", forti, "--publish")
    members.add(store, "clear-kev", "Association clear-kev", "CLEAR")
    members.grant(store, "clear-kev", "kev", True, False)
    world.secrets["clear-kev"] = members.new_secret(store, "clear-kev")
    server = ServerProcess(world.db).start()
    try:
        url = f"{server.base}/ceptoar/collections/{world.uuids['kev']}/"
        seen = {}
        for member in ("assoc-green", "clear-kev"):
            coll = Collection(url, user=member, password=world.secrets[member])
            seen[member] = {o["id"]: o for page in as_pages(coll.get_objects, per_request=100, type="note,report")
                            for o in page.get("objects", [])}
    finally:
        server.stop()
    note = seen["assoc-green"][exposure.note_id(forti)]
    assert note["object_refs"] == [forti] and "東京都: 7" in note["content"] and "その他" in note["content"]
    assert "大阪" not in note["content"] and "診療所" not in note["content"]
    assert note["object_marking_refs"] == [TLP_IDS["GREEN"]]
    assert forti in seen["clear-kev"] and exposure.note_id(forti) not in seen["clear-kev"]
    assert any(a["action"] == "exposure-note" and a["target"] == forti for a in hub.json("audit", "list"))


def test_registers_stay_home(world):
    """TLP:RED: no TAXII collection, export or other facility's data carries a register."""
    bundle = world.hub.run("export", "bundle").stdout + world.hub.run("export", "csv", "--status", "all").stdout
    assert "FortiGate" not in bundle and "保守業者A" not in bundle and "さくら診療所" not in bundle
    assert world.store.scalar("SELECT COUNT(*) FROM membership WHERE object_id LIKE 'facility%'") == 0
    before = matched(world)
    assert "matches" in world.hub.run("matches", "refresh").output and matched(world) == before


def test_a_facilitys_digest_opens_with_its_own_matches(world, smtp):
    controller, sink = smtp
    hub = world.hub
    hub.run("subscribers", "add", "inchou@sakura.example.jp", "--member", "assoc-green", "--clearance", "GREEN",
            "--facility", "sakura")
    hub.run("subscribers", "add", "jimu@aoba.example.jp", "--member", "assoc-green", "--clearance", "GREEN",
            "--facility", "aoba")
    hub.run("subscribers", "add", "other@clinic.example.jp", "--member", "assoc-green", "--clearance", "GREEN")
    bad = hub.run("subscribers", "add", "x@clinic.example.jp", "--member", "assoc-amber", "--facility", "sakura",
                  ok=None)
    assert bad.exit_code == 1 and "unknown facility 'sakura' of member 'assoc-amber'" in bad.output
    hub.run("digest", "send", "--frequency", "daily", "--smtp-host", "127.0.0.1", "--smtp-port", str(controller.port))
    (sakura,) = sink.parsed("inchou@sakura.example.jp")
    text = sakura.get_body(("plain",)).get_content()
    html = sakura.get_body(("html",)).get_content()
    block = text.split("■ 貴院の台帳に該当する可能性がある情報")[1].split("────")[0]
    assert text.index("貴院の台帳に該当する可能性がある情報") < text.index("────")  # it opens the digest
    assert "[VPN装置] フォーティネット FortiOS 7.0.1 (インターネットに公開・リモート保守)" in block
    assert "同じ製品をお使いです(版は未確認)" in block and "[端末OS] マイクロソフト Windows 11" in block
    assert "[医療機器] マイクロダイコム MicroDicom DICOM Viewer 2023.3_Build_9000" in block
    assert "お使いの版が影響を受ける範囲にあります" in block
    assert "JACIC" not in block  # matched, but in no collection this association reads
    assert "Vue PACS" not in block  # the AMBER advisory is not in a GREEN digest
    assert "貴院の台帳に該当する可能性がある情報" in html and "FortiOS 7.0.1" in html
    other = sink.parsed("other@clinic.example.jp")[0].get_body(("plain",)).get_content()
    assert "貴院の台帳" not in other and "FortiOS 7.0.1" not in other and "@@FACILITY" not in other
    aoba = sink.parsed("jimu@aoba.example.jp")[0].get_body(("plain",)).get_content()
    assert "FortiOS 7.0.1" not in aoba and "JACIC" not in aoba  # another facility's register never shows
