"""Incident reports under the rules of 2026 (issue 35): facilities' designations, the reports a
designated or municipal hospital owes beside the others (the ACD law's to the competent minister and
the Prime Minister through the NCO; the owning municipality), every deadline labelled with its basis,
the NCO's unified report form filled from the record (xlsx read back with openpyxl, and JSON), and
contacts a clinic can use at 2 a.m. — never an example number.

The facilities and incidents are made up here; the rules' words are those of the published texts
(MHLW's notices, the APPI and its enforcement rules, the ACD law)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import openpyxl
import pytest

from ceptoar.core.settings import default_config_dir
from ceptoar.store import Store

FACILITIES = ("facility_id,name,facility_type,prefecture,member,phone,designations,municipality\n"
              "kaede,札幌市立かえで病院,hospital,北海道,jma,011-555-1234,特別社会基盤事業者|自治体立|特定機能病院,札幌市\n"
              "sakura,さくら診療所,clinic,東京都,jma,03-5555-7777,,\n")
RANSOM = ("--summary", "電子カルテサーバが暗号化され、外来を停止した", "--cause", "ransomware", "--service-impact",
          "--care-disrupted", "--detected-at", "2026-12-01 02:10")


@pytest.fixture
def hub26(hub, tmp_path, monkeypatch):
    """A hub with its own configuration folder (PostgreSQL tests share one otherwise)."""
    source = Path(os.environ.get("CEPTOAR_CONFIG") or default_config_dir(str(hub.db)))
    config = tmp_path / "config"
    shutil.copytree(source, config)
    monkeypatch.setenv("CEPTOAR_CONFIG", str(config))
    hub.config = config
    hub.run("members", "add", "jma", "--name", "日本医師会", "--clearance", "green")
    (tmp_path / "f.csv").write_text(FACILITIES, encoding="utf-8")
    hub.run("facilities", "import", str(tmp_path / "f.csv"))
    return hub


def add_relay(hub, text: str) -> None:
    with (hub.config / "relay.toml").open("a", encoding="utf-8") as f:
        f.write("\n" + text)


def by_party(inc: dict) -> dict:
    return {o["party"]: o for o in inc["obligations"]}


def test_designations_are_kept_checked_and_updated(hub26, tmp_path):
    shown = json.loads(hub26.run("facilities", "show", "kaede").stdout)
    assert shown["designations"] == ["特定機能病院", "特別社会基盤事業者", "自治体立"] and shown["municipality"] == "札幌市"
    (tmp_path / "bad.csv").write_text(FACILITIES.splitlines()[0] + "\nx1,一,clinic,東京都,jma,,特定病院,\n"
                                      "x2,二,clinic,東京都,jma,,地域医療支援病院|基幹インフラ,\n", encoding="utf-8")
    r = hub26.run("facilities", "import", str(tmp_path / "bad.csv"), ok=None)
    assert r.exit_code == 1 and "bad.csv:2: designation '特定病院' must be one of" in r.output
    assert "1 added, 0 updated, 1 rejected" in r.output
    # A file without the column keeps what was set.
    (tmp_path / "plain.csv").write_text("facility_id,name,facility_type,prefecture,member\n"
                                        "kaede,札幌市立かえで病院,hospital,北海道,jma\n", encoding="utf-8")
    hub26.run("facilities", "import", str(tmp_path / "plain.csv"))
    assert json.loads(hub26.run("facilities", "show", "kaede").stdout)["designations"][1] == "特別社会基盤事業者"
    r = hub26.run("facilities", "update", "sakura", "--designations", "基幹インフラ|地域医療支援病院")
    assert "designations: [] → ['地域医療支援病院', '基幹インフラ']" in r.output
    assert hub26.run("facilities", "update", "sakura", "--designations", "なにか", ok=None).exit_code == 1
    audit = Store(hub26.db).audit.list(action="facility-update")
    assert audit[0]["target"] == "sakura" and audit[0]["details"]["designations"]["to"] == ["地域医療支援病院", "基幹インフラ"]


def test_a_designated_hospitals_ransomware_owes_the_acd_reports_with_labelled_deadlines(hub26):
    inc = hub26.json("incidents", "report", "--facility-id", "kaede", *RANSOM)
    assert (inc["facility"], inc["facility_type"], inc["member"], inc["prefecture"]) == (
        "札幌市立かえで病院", "hospital", "jma", "北海道")
    assert inc["designations"] == ["特定機能病院", "特別社会基盤事業者", "自治体立"] and inc["facility_phone"] == "011-555-1234"
    owed = by_party(inc)
    assert {p for p, o in owed.items() if o["required"]} == {
        "vendor", "mhlw", "prefecture", "police", "acd-minister", "acd-nco", "municipality"}
    assert owed["acd-minister"]["label"] == "厚生労働大臣(特定社会基盤事業所管大臣)"
    assert owed["acd-nco"]["label"] == "内閣総理大臣(国家サイバー統括室)"
    assert owed["acd-nco"]["rule"] == "主務省令で定めるところにより" and owed["acd-nco"]["deadline_basis"] == "policy"
    assert "重要電子計算機に対する不正な行為による被害の防止に関する法律" in owed["acd-nco"]["basis"]
    assert "主務省令で確認" in owed["acd-nco"]["basis_ja"]
    assert owed["mhlw"]["rule"] == "速やかに" and "事務局の方針" in owed["mhlw"]["basis_ja"]
    assert owed["ppc-final"]["deadline_basis"] == "law" and owed["ppc-final"]["rule"].startswith("30日以内")
    assert owed["acd-minister"]["deadline_jst"] == "2026-12-02 02:10"  # 24 h: relay.toml's default, policy
    # relay.toml without the new parties keeps working: they are listed as unconfigured.
    assert not owed["acd-nco"]["configured"] and not owed["municipality"]["configured"] and owed["mhlw"]["configured"]
    assert any("[宛先未設定: add [acd_nco]" in s for s in inc["next_steps"])
    r = hub26.run("incidents", "notify", inc["id"], "--to", "acd-nco", ok=None)
    assert r.exit_code == 1 and "set [acd_nco]" not in r.output and "[acd_nco]" in r.output
    # Every deadline shown to the clinic says its basis.
    text = inc["acknowledgement"]["text"]
    assert "内閣総理大臣(国家サイバー統括室): 期限 2026-12-02 02:10" in text and text.count("根拠: 「") == 7
    # Not designated: none of it. Designated, but not an attack on a computer: no ACD report.
    plain = by_party(hub26.json("incidents", "report", "--facility-id", "sakura", *RANSOM))
    assert not plain["acd-nco"]["required"] and not plain["municipality"]["required"]
    lost = by_party(hub26.json("incidents", "report", "--facility-id", "kaede", "--summary", "USBメモリを紛失",
                               "--cause", "loss", "--personal-data-leak"))
    assert not lost["acd-minister"]["required"] and lost["ppc-preliminary"]["required"]
    outside = by_party(hub26.json("incidents", "report", "--facility-id", "kaede", *RANSOM, "--no-specified-computer"))
    assert not outside["acd-minister"]["required"] and outside["municipality"]["required"]


def test_configured_acd_and_municipal_parties_get_their_notices(hub26, smtp, monkeypatch):
    controller, sink = smtp
    add_relay(hub26, '[acd_minister]\nname = "厚生労働省 特定侵害事象報告窓口"\nemail = "acd@mhlw.example.jp"\n'
                     '[acd_nco]\nname = "国家サイバー統括室 報告窓口"\nemail = "report@nco.example.jp"\n'
                     '[municipalities."札幌市"]\nname = "札幌市 保健福祉局"\nemail = "byoin@city.sapporo.example.jp"\n')
    inc = hub26.json("incidents", "report", "--facility-id", "kaede", *RANSOM)
    assert all(o["configured"] for o in inc["obligations"] if o["party"] in ("acd-minister", "acd-nco", "municipality"))
    hub26.run("incidents", "notify", inc["id"], "--to", "acd-minister", "--to", "acd-nco", "--to", "municipality",
              "--smtp-host", "127.0.0.1", "--smtp-port", str(controller.port))
    (nco,) = sink.parsed("report@nco.example.jp")
    body = nco.get_content()
    assert "国家サイバー統括室 報告窓口 御中" in body and "特定侵害事象" in body and "特別社会基盤事業者" in body
    assert "札幌市立かえで病院 (病院、北海道) [特定機能病院、特別社会基盤事業者、自治体立]" in body
    assert sink.parsed("acd@mhlw.example.jp") and "札幌市 保健福祉局 御中" in sink.parsed(
        "byoin@city.sapporo.example.jp")[0].get_content()
    shown = json.loads(hub26.run("incidents", "show", inc["id"]).stdout)
    assert {o["party"]: o["state"] for o in shown["obligations"]}["acd-nco"] == "done"


def test_free_text_facilities_take_designations_and_clear_errors(hub26):
    inc = hub26.json("incidents", "report", "--facility", "みなと市民病院", "--facility-type", "hospital",
                     "--prefecture", "大阪府", "--member", "jma", "--designation", "自治体立", "--designation",
                     "特別社会基盤事業者", "--municipality", "大阪市", *RANSOM)
    assert inc["designations"] == ["特別社会基盤事業者", "自治体立"] and by_party(inc)["acd-nco"]["required"]
    for args, reason in ((("--facility-id", "nowhere"), "no facility 'nowhere'"),
                         (("--facility-id", "kaede", "--facility", "別名"), "give --facility-id alone"),
                         (("--facility", "x", "--facility-type", "clinic", "--prefecture", "東京都", "--member", "jma",
                           "--designation", "大病院"), "designation '大病院' must be one of"),
                         ((), "give --facility-id ID, or --facility")):
        r = hub26.run("incidents", "report", *args, *RANSOM, ok=None)
        assert r.exit_code == 1 and reason in r.output, (args, r.output)
    assert len(hub26.json("incidents", "list")) == 1  # nothing recorded by the refused ones


def test_the_nco_unified_form_holds_the_records_values(hub26, tmp_path):
    inc = hub26.json("incidents", "report", "--facility-id", "kaede", *RANSOM, "--personal-data-leak",
                     "--records-affected", "1200", "--contact-person", "情報管理室 山田",
                     "--ransom-demand", "「データを公開する」と表示、暗号資産で支払いを要求",
                     "--encrypted-extension", ".lockbit", "--affected-systems", "電子カルテサーバ 2台、PACS",
                     "--intrusion-vector", "VPN装置の既知の脆弱性")
    short = inc["id"][10:18]
    hub26.run("incidents", "reported", short, "--to", "police", "--at", "2026-12-01 09:00")
    hub26.run("incidents", "update", short, "--note", "全端末をネットワークから切り離した", "--note-kind", "response")
    out = tmp_path / "nco.xlsx"
    r = hub26.run("incidents", "export", short, "--form", "nco", "--format", "xlsx", "-o", str(out))
    assert "wrote" in r.output and "ランサムウェア事案共通様式" in r.output
    assert "not in the record, left blank" in r.stderr and "国家サイバー統括室との情報共有への同意" in r.stderr
    ws = openpyxl.load_workbook(out).active
    cells = {row[1].value: row[2].value for row in ws.iter_rows(min_row=5)}
    assert cells["組織名"] == "札幌市立かえで病院" and cells["担当者氏名"] == "情報管理室 山田"
    assert cells["認知日時"] == "2026年12月01日 02:10 (日本時間)" and cells["本人の数"] == "1,200人"
    assert cells["ランサムノート(身代金の要求)"].startswith("「データを公開する」")
    assert cells["暗号化されたファイルの拡張子"] == ".lockbit" and cells["侵入方法"] == "VPN装置の既知の脆弱性"
    assert cells["被害を受けたシステム・機器"] == "電子カルテサーバ 2台、PACS"
    assert cells["警察への相談・通報"].startswith("報告済み (2026年12月01日 09:00")
    assert cells["個人情報保護委員会への報告"] is None  # not made yet: blank, never invented
    assert cells["重要インフラ事業者等への該当"] == "特定機能病院、特別社会基盤事業者、自治体立"
    assert cells["これまでの対応"] == "全端末をネットワークから切り離した"
    assert "攻撃の規模・継続時間" not in cells  # a DDoS item
    doc = json.loads(hub26.run("incidents", "export", short, "--format", "json").stdout)
    assert {i["item"]: i["value"] for i in doc["items"]} == cells and doc["variant"] == "ransomware"
    # The DDoS variant on request; an incident of another cause needs one.
    ddos = json.loads(hub26.run("incidents", "export", short, "--variant", "ddos", "--format", "json").stdout)
    assert "攻撃の規模・継続時間" in {i["item"] for i in ddos["items"]}
    other = hub26.json("incidents", "report", "--facility-id", "sakura", "--summary", "不正ログイン",
                       "--cause", "unauthorized-access")
    r = hub26.run("incidents", "export", other["id"], "--format", "json", ok=None)
    assert r.exit_code == 1 and "give --variant ransomware|ddos" in r.output
    exports = Store(hub26.db).audit.list(action="incident-export")
    assert sorted(a["details"]["variant"] for a in exports) == ["ddos", "ransomware", "ransomware"]


def test_contacts_for_2am_and_no_example_number(hub26, tmp_path, smtp):
    controller, sink = smtp
    contacts = hub26.config / "contacts.toml"
    contacts.write_text(contacts.read_text(encoding="utf-8") + '\n[associations."jma"]\nname = "日本医師会 緊急窓口"\n'
                        'phone = "03-5555-9999"\nhours = "24時間"\n', encoding="utf-8")
    add_relay(hub26, '[police."北海道"]\nname = "北海道警察 サイバー犯罪対策課"\nphone = "011-555-0110"\nhours = "24時間"\n')
    inc = hub26.json("incidents", "report", "--facility-id", "kaede", *RANSOM)
    text = inc["acknowledgement"]["text"]
    assert "医療セプター 夜間・休日窓口: 医療セプター 夜間・休日連絡窓口 ☎ 03-5555-0001 (平日 17:00–翌9:00、土日祝日 終日)" in text
    assert "所属団体の緊急窓口: 日本医師会 緊急窓口 ☎ 03-5555-9999 (24時間)" in text
    assert "警察(サイバー犯罪相談窓口): 北海道警察 サイバー犯罪対策課 ☎ 011-555-0110 (24時間)" in text
    hub26.run("incidents", "acknowledge", inc["id"], "--to", "jimu@kaede.example.jp", "--smtp-host", "127.0.0.1",
              "--smtp-port", str(controller.port))
    (ack,) = sink.parsed("jimu@kaede.example.jp")
    assert ack["Subject"] == "【医療セプター】インシデントのご報告を受け付けました: 札幌市立かえで病院"
    assert "03-5555-9999" in ack.get_content() and ack["X-CEPTOAR-TLP"] == "RED"
    # The in-hospital notice carries the same night contacts.
    poster = tmp_path / "poster.html"
    hub26.run("poster", "--facility", "札幌市立かえで病院", "--member", "jma", "--prefecture", "北海道", "-o", str(poster))
    html = poster.read_text(encoding="utf-8")
    assert "夜間・休日" in html and "03-5555-0001" in html and "03-5555-9999" in html and "011-555-0110" in html
    # An example value never replaced: refused by `incidents report` (nothing recorded), named by `status`.
    contacts.write_text(contacts.read_text(encoding="utf-8").replace("03-5555-0001", "03-0000-0001 (example)"),
                        encoding="utf-8")
    before = len(hub26.json("incidents", "list"))
    r = hub26.run("incidents", "report", "--facility-id", "kaede", *RANSOM, ok=None)
    assert r.exit_code == 1 and "contacts.toml [after_hours] phone '03-0000-0001 (example)'" in r.output
    assert len(hub26.json("incidents", "list")) == before
    status = hub26.run("status", ok=None)
    assert "contacts.toml [after_hours] phone: 03-0000-0001 (example) is still an example value" in status.output
    assert "03-0000-0001" not in poster.read_text(encoding="utf-8")
    hub26.run("poster", "--facility", "札幌市立かえで病院", "-o", str(poster))
    assert "03-0000-0001" not in poster.read_text(encoding="utf-8")  # a placeholder is never printed for a clinic
