"""Maintenance vendors as parties (issue 33, part 1): `vendors add|import|list|show|remove`; a
register row's maintenance_vendor resolves to a vendor by id, name or alias (NFKC, company words at
either end); `inventory list` names the vendor or says the name is unregistered, and `vendors
unresolved` counts such names across registers. Bad input is a clear message, nothing changed."""

from __future__ import annotations

import json

from ceptoar.facilities import vendors
from ceptoar.store import Store

FACILITIES = ("facility_id,name,facility_type,prefecture,member\nsakura,さくら診療所,clinic,東京都,jma\n"
              "aoba,あおば歯科,dental,大阪府,jma\n")
HEADER = "category,vendor,product,version,cpe,purl,aliases,internet_exposed,remote_maintenance,maintenance_vendor,note\n"
SAKURA = HEADER + ("PACS,Philips,Vue PACS,12.2.8.400,,,,no,yes,株式会社メディ保守,\n"
                   "VPN装置,Fortinet,FortiOS,7.0.1,,,,yes,yes,ﾒﾃﾞｨ保守,\n"
                   "電子カルテ,ACME,カルテ,1.0,,,,no,yes,さくらシステム,\n")
AOBA = HEADER + ("PACS,Philips,Vue PACS,12.2.8.400,,,,no,yes,Medi-Hoshu Co., Ltd.,\n"
                 "端末OS,Microsoft,Windows,11,,,,no,no,さくらシステム,\n"
                 "ルータ,Yamaha,RTX1210,,,,,no,no,,\n")


def world(hub, tmp_path):
    hub.run("members", "add", "jma", "--name", "日本医師会", "--clearance", "green")
    (tmp_path / "f.csv").write_text(FACILITIES, encoding="utf-8")
    hub.run("facilities", "import", str(tmp_path / "f.csv"))
    for fid, text in (("sakura", SAKURA), ("aoba", AOBA.replace("Medi-Hoshu Co., Ltd.", '"Medi-Hoshu Co., Ltd."'))):
        (tmp_path / f"{fid}.csv").write_text(text, encoding="utf-8")
        hub.run("inventory", "import", fid, str(tmp_path / f"{fid}.csv"))


def test_register_names_resolve_by_name_alias_and_company_words(hub, tmp_path):
    world(hub, tmp_path)
    assert hub.json("vendors", "unresolved") == [
        {"name": "さくらシステム", "rows": 2, "facilities": 2},
        {"name": "Medi-Hoshu Co., Ltd.", "rows": 1, "facilities": 1},
        {"name": "株式会社メディ保守", "rows": 1, "facilities": 1},
        {"name": "ﾒﾃﾞｨ保守", "rows": 1, "facilities": 1}]
    hub.run("vendors", "add", "medi", "--name", "メディ保守", "--email", "Support@Medi.example.jp",
            "--phone", "０３－１２３４－５６７８", "--alias", "Medi-Hoshu")
    assert hub.json("vendors", "unresolved") == [{"name": "さくらシステム", "rows": 2, "facilities": 2}]
    shown = json.loads(hub.run("vendors", "show", "medi").stdout)
    assert (shown["email"], shown["phone"], shown["aliases"], shown["clearance"]) == (
        "support@medi.example.jp", "03-1234-5678", ["Medi-Hoshu"], "GREEN")
    rows = hub.json("inventory", "list", "sakura")
    assert [r["vendor_id"] for r in rows] == ["medi", "medi", None]
    r = hub.run("inventory", "list", "sakura")
    assert "maintenance vendors not registered: さくらシステム" in r.output
    assert [r["vendor_id"] for r in hub.json("inventory", "list", "aoba")] == ["medi", None, None]
    store = Store(hub.db)
    assert [a["action"] for a in store.audit.list(target="medi")] == ["vendor-add"]
    # Removed: its rows are unresolved again.
    hub.run("vendors", "remove", "medi")
    assert len(hub.json("vendors", "unresolved")) == 4 and hub.json("vendors", "list") == []


def test_vendors_import_reports_bad_rows_by_line(hub, tmp_path):
    text = ("vendor_id,name,email,phone,aliases\n"
            "medi,メディ保守,support@medi.example.jp,03-1234-5678,Medi-Hoshu|メディ\n"
            "Bad Id,x,x@x.example.jp,,\n"
            "sys,さくらシステム,not-an-address,,\n"
            "tel,テル保守,t@t.example.jp,12345,\n"
            "dup,重複保守,d@d.example.jp,,メディ\n"
            "ctl,制御\x07保守,c@c.example.jp,,\n"
            "ok,さくらシステム,info@sakura-sys.example.jp,,\n")
    (tmp_path / "v.csv").write_text(text, encoding="utf-8")
    r = hub.run("vendors", "import", str(tmp_path / "v.csv"), ok=None)
    assert r.exit_code == 1 and "2 added, 0 updated, 5 rejected" in r.output
    for line, reason in ((3, "vendor id 'Bad Id' must be"), (4, "invalid e-mail address"),
                         (5, "telephone number '12345' is not a Japanese"), (6, "the name 'メディ' already names vendor 'medi'"),
                         (7, "name contains control characters")):
        assert f"v.csv:{line}: {reason}" in r.output, (line, r.output)
    assert [v["id"] for v in hub.json("vendors", "list")] == ["medi", "ok"]
    # A re-import updates; unknown vendors are one-line errors.
    assert "0 added, 2 updated" in hub.run("vendors", "import", str(tmp_path / "v.csv"), ok=None).output
    for args in (("vendors", "show", "nobody"), ("vendors", "remove", "nobody")):
        r = hub.run(*args, ok=None)
        assert r.exit_code == 1 and "no vendor 'nobody'" in r.output


def test_keys_drop_company_words_at_either_end():
    assert vendors.key("株式会社 メディ保守") == vendors.key("ﾒﾃﾞｨ保守") == vendors.key("メディ保守（株）") == "メディ保守"
    assert vendors.key("Medi-Hoshu Co., Ltd.") == vendors.key("medi hoshu") == "medihoshu"
