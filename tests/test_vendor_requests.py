"""One request per vendor (issue 33, part 2): a published advisory matching rows that registered
vendors maintain reaches each vendor in one message (a real SMTP server receives it), listing the
product and version with the facilities that run it; a vendor learns only its own rows, an advisory
above its clearance waits until the clearance is raised, every disclosure is audited, and a row once
asked about is not asked again.

The advisory is CISA's ICSMA-22-174-01 (DCMTK, ../shared/data); the registers are made here."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema

from ceptoar.clinics import responses, vendor_requests
from ceptoar.clinics.digest import subscribers as subs
from ceptoar.clinics.digest.delivery import run_digest
from ceptoar.core.model import effective_severity
from ceptoar.core.settings import SmtpConfig
from ceptoar.publishing import collections as colls
from ceptoar.publishing import triage
from ceptoar.sharing import members
from ceptoar.store import Store
from tests.conftest import DATA

FACILITIES = ("facility_id,name,facility_type,prefecture,member\nsakura,さくら診療所,clinic,東京都,jma\n"
              "aoba,あおば歯科,dental,大阪府,jma\nkaede,かえで病院,hospital,北海道,jma\n")
HEADER = "category,vendor,product,version,cpe,purl,aliases,internet_exposed,remote_maintenance,maintenance_vendor,note\n"
REGISTERS = {
    "sakura": HEADER + "医療機器,OFFIS,DCMTK,3.6.6,,,,no,yes,株式会社メディ保守,\n電子カルテ,ACME,秘密カルテ,9.9,,,,no,no,メディ保守,\n",
    "aoba": HEADER + "医療機器,OFFIS,DCMTK,3.6.5,,,,no,yes,ﾒﾃﾞｨ保守,\n",
    "kaede": HEADER + "医療機器,OFFIS,DCMTK,3.6.6,,,,no,yes,北海道システム,\n医療機器,OFFIS,DCMTK,3.6.7,,,,no,no,メディ保守,\n",
}


def world(hub, tmp_path):
    hub.run("members", "add", "jma", "--name", "日本医師会", "--clearance", "green")
    (tmp_path / "f.csv").write_text(FACILITIES, encoding="utf-8")
    hub.run("facilities", "import", str(tmp_path / "f.csv"))
    for fid, text in REGISTERS.items():
        (tmp_path / f"{fid}.csv").write_text(text, encoding="utf-8")
        hub.run("inventory", "import", fid, str(tmp_path / f"{fid}.csv"))
    hub.run("vendors", "add", "medi", "--name", "メディ保守", "--email", "support@medi.example.jp")
    hub.run("vendors", "add", "hokkaido", "--name", "北海道システム", "--email", "help@hokkaido-sys.example.jp")
    hub.run("sources", "add", "icsma", "https://feeds.example/icsma", "--kind", "csaf")
    hub.run("ingest", str(DATA / "cisa_icsma/cisagov_CSAF_icsma-22-174-01.json"), "--source", "icsma")
    store = Store(hub.db)
    (adv,) = store.advisories.list(source="icsma")
    return store, adv["id"]


def test_each_vendor_is_asked_once_about_its_own_rows(hub, tmp_path, smtp, monkeypatch):
    controller, sink = smtp
    store, aid = world(hub, tmp_path)
    hub.run("advisories", "triage", aid, "--tlp", "amber")
    triage.publish(store, [aid], "analyst")
    assert vendor_requests.pending(store) == []  # TLP:AMBER is above both vendors' clearance: it waits
    hub.run("vendors", "clearance", "medi", "amber")
    monkeypatch.setenv("CEPTOAR_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CEPTOAR_SMTP_PORT", str(controller.port))
    r = hub.run("vendors", "send")
    assert "medi: sent, 1 advisories, 2 facilities" in r.output
    (mail,) = sink.parsed("support@medi.example.jp")
    body = mail.get_content()
    assert mail["Subject"].endswith("(1件・2施設)") and mail["X-CEPTOAR-TLP"] == "AMBER"
    assert "OFFIS DCMTK 3.6.6" in body and "さくら診療所 (東京都) 台帳 1 行目: [医療機器]" in body
    assert "あおば歯科 (大阪府) 台帳 1 行目" in body
    # Only its own rows, only matched ones: not kaede's row of another vendor, not the fixed 3.6.7,
    # not sakura's other systems.
    assert "かえで病院" not in body and "秘密カルテ" not in body and "北海道システム" not in body
    assert sink.parsed("help@hokkaido-sys.example.jp") == []  # still TLP:GREEN: nothing above it
    audit = [a for a in store.audit.list(action="vendor-request")]
    assert [(a["target"], a["details"]["advisory"], a["details"]["facilities"]) for a in audit] == [("medi", aid, 2)]
    # Asked once: a second run has nothing for medi.
    assert [p.vendor["id"] for p in vendor_requests.pending(store)] == []
    hub.run("vendors", "clearance", "hokkaido", "amber")
    (later,) = vendor_requests.pending(store)
    assert later.vendor["id"] == "hokkaido" and [r["facility"] for r in later.advisories[aid]["rows"]] == ["kaede"]


def test_a_dry_run_writes_the_messages_and_records_nothing(hub, tmp_path):
    store, aid = world(hub, tmp_path)
    triage.publish(store, [aid], "analyst")  # TLP:CLEAR (the source's): within every clearance
    out = tmp_path / "out"
    r = hub.run("vendors", "send", "--out", str(out))
    assert "medi: written" in r.output and "hokkaido: written" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["vendor-hokkaido.eml", "vendor-medi.eml"]
    assert len(vendor_requests.pending(store)) == 2 and store.audit.list(action="vendor-request") == []
    r = hub.run("vendors", "send", ok=None)
    assert r.exit_code == 1 and "no SMTP server configured" in r.output


def asked(hub, tmp_path, monkeypatch, controller):
    store, aid = world(hub, tmp_path)
    triage.publish(store, [aid], "analyst")
    monkeypatch.setenv("CEPTOAR_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CEPTOAR_SMTP_PORT", str(controller.port))
    hub.run("vendors", "send")
    return store, aid


def test_a_vendors_answer_reaches_its_customers_matches(hub, tmp_path, smtp, monkeypatch):
    controller, _sink = smtp
    store, aid = asked(hub, tmp_path, monkeypatch, controller)
    r = hub.run("vendors", "answer", "medi", aid, "--product", "DCMTK", "--status", "not_affected",
                "--justification", "vulnerable_code_not_in_execute_path", "--facility", "aoba")
    assert "medi: not_affected for 1 register row(s)" in r.output
    by = {(m["facility"], m["row"]): m for m in hub.json("matches", "list", "--advisory", aid)}
    assert by[("aoba", 1)]["status"] == "not_affected" and by[("aoba", 1)]["answered_by"] == "vendor:medi"
    assert by[("aoba", 1)]["justification"] == "vulnerable_code_not_in_execute_path"
    assert by[("aoba", 1)]["answer_ja"] == "保守業者(メディ保守)の回答: 該当しません(脆弱なコードが実行されない)"
    assert by[("sakura", 1)]["answered_by"] is None  # not chosen
    hub.run("vendors", "answer", "medi", aid, "--product", "dcmtk", "--version", "3.6.6", "--status", "affected",
            "--fix-date", "2999-12-20")
    by = {(m["facility"], m["row"]): m for m in hub.json("matches", "list", "--advisory", aid)}
    assert by[("sakura", 1)]["answer_ja"] == "保守業者(メディ保守)の回答: 該当します(2999年12月20日に修正予定)"
    assert by[("aoba", 1)]["status"] == "not_affected"  # 3.6.5: not in that answer
    # The facility's own answer stands over its vendor's.
    hub.run("responses", "record", "sakura", aid, "--status", "checking")
    by = {(m["facility"], m["row"]): m for m in hub.json("matches", "list", "--advisory", aid)}
    assert (by[("sakura", 1)]["status"], by[("sakura", 1)]["answered_by"]) == ("checking", "facility")
    assert [a["action"] for a in store.audit.list(action="vendor-answer")] == ["vendor-answer"] * 2


def test_bad_answers_change_nothing(hub, tmp_path, smtp, monkeypatch):
    controller, _sink = smtp
    store, aid = asked(hub, tmp_path, monkeypatch, controller)
    for args, reason in (
            (("nobody", aid, "--product", "DCMTK", "--status", "fixed"), "no vendor 'nobody'"),
            (("medi", aid, "--product", "DCMTK", "--status", "not_affected"), "needs a justification"),
            (("medi", aid, "--product", "DCMTK", "--status", "not_affected", "--justification", "trust_us"),
             "needs a justification, one of"),
            (("medi", aid, "--product", "DCMTK", "--status", "affected", "--fix-date", "2020-01-01"),
             "fix date 2020-01-01 is in the past"),
            (("medi", aid, "--product", "DCMTK", "--status", "fixed"), "needs the version that fixes it"),
            (("medi", aid, "--product", "Windows", "--status", "under_investigation"),
             "was not asked about 'Windows'"),
            (("medi", aid, "--product", "DCMTK", "--status", "under_investigation", "--facility", "kaede"),
             "was not asked about 'DCMTK'"),
            (("hokkaido", aid, "--product", "DCMTK", "--status", "under_investigation", "--facility", "sakura"),
             "vendor 'hokkaido' was not asked")):  # not its customer
        r = hub.run("vendors", "answer", *args, ok=None)
        assert r.exit_code == 1 and reason in r.output, (args, r.output)
    assert store.vendors.answers() == {} and store.audit.list(action="vendor-answer") == []


def test_a_vendors_answers_export_as_a_valid_csaf_vex_document(hub, tmp_path, smtp, monkeypatch):
    controller, _sink = smtp
    store, aid = asked(hub, tmp_path, monkeypatch, controller)
    hub.run("vendors", "answer", "medi", aid, "--product", "DCMTK", "--version", "3.6.5", "--status", "not_affected",
            "--justification", "component_not_present")
    hub.run("vendors", "answer", "medi", aid, "--product", "DCMTK", "--version", "3.6.6", "--status", "affected",
            "--fix-date", "2999-01-31")
    out = tmp_path / "vex.json"
    hub.run("export", "vex", "--vendor", "medi", "-o", str(out))
    doc = json.loads(out.read_text(encoding="utf-8"))
    schema = json.loads((Path(__file__).parent / "fixtures/csaf21/csaf_2.0_json_schema.json").read_text())
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(doc)
    assert doc["document"]["category"] == "csaf_vex" and doc["document"]["distribution"]["tlp"]["label"] == "WHITE"
    names = {p["product_id"]: p["name"] for p in doc["product_tree"]["full_product_names"]}
    cves = store.advisories.get(aid)["cves"]
    assert [v["cve"] for v in doc["vulnerabilities"]] == cves  # one per CVE of the advisory
    vuln = doc["vulnerabilities"][0]
    status = {k: [names[p] for p in v] for k, v in vuln["product_status"].items()}
    assert status == {"known_not_affected": ["OFFIS DCMTK 3.6.5"], "known_affected": ["OFFIS DCMTK 3.6.6"]}
    assert vuln["flags"] == [{"label": "component_not_present", "product_ids": vuln["product_status"]["known_not_affected"]}]
    assert vuln["remediations"][0]["date"] == "2999-01-31T00:00:00.000Z"
    text = out.read_text(encoding="utf-8")
    assert "さくら" not in text and "あおば" not in text and "sakura" not in text  # no facility leaves the registers
    r = hub.run("export", "vex", "--vendor", "hokkaido", ok=None)
    assert r.exit_code == 1 and "vendor 'hokkaido' has no answers" in r.output


def test_the_secretariat_sees_what_each_vendor_owes(hub, tmp_path, smtp, monkeypatch):
    controller, _sink = smtp
    store, aid = asked(hub, tmp_path, monkeypatch, controller)
    hub.run("vendors", "answer", "medi", aid, "--product", "DCMTK", "--version", "3.6.6", "--status", "affected",
            "--fix-date", "2999-01-31")
    rows = {r["vendor"]: r for r in hub.json("vendors", "requests")}
    assert (rows["medi"]["rows"], rows["medi"]["answered"], rows["medi"]["open"]) == (2, 1, 1)
    assert (rows["hokkaido"]["rows"], rows["hokkaido"]["open"]) == (1, 1) and rows["medi"]["overdue_fixes"] == 0
    hub.run("vendors", "answer", "medi", aid, "--product", "DCMTK", "--version", "3.6.5", "--status", "fixed",
            "--fixed-version", "3.6.7")
    assert [r["vendor"] for r in hub.json("vendors", "requests", "--open")] == ["hokkaido"]
    assert hub.json("vendors", "requests", "--vendor", "medi")[0]["open"] == 0
    lines = {r["vendor"]: r for r in hub.json("responses", "summary", "--vendors")}
    assert (lines["medi"]["requests"], lines["medi"]["answered"], lines["medi"]["open"]) == (2, 2, 0)
    assert lines["hokkaido"]["open"] == 1 and lines["hokkaido"]["oldest_open"]
    # A planned fix whose day has passed is overdue (the answer was valid when given).
    store.execute("UPDATE vendor_answers SET fix_date = '2020-01-01' WHERE status = 'affected'")
    assert hub.json("vendors", "requests", "--vendor", "medi")[0]["overdue_fixes"] == 1


def test_vendor_answers_reach_the_facilitys_digest_and_settle_its_reminders(hub, tmp_path, smtp, monkeypatch):
    controller, sink = smtp
    store, aid = asked(hub, tmp_path, monkeypatch, controller)
    assert effective_severity(store.advisories.get(aid)) in ("high", "critical")
    hub.run("vendors", "answer", "medi", aid, "--product", "DCMTK", "--status", "not_affected",
            "--justification", "component_not_present", "--facility", "aoba")
    hub.run("vendors", "answer", "medi", aid, "--product", "DCMTK", "--status", "affected",
            "--fix-date", "2999-12-20", "--facility", "sakura")
    # Days pass with no answer from the facilities: sakura is reminded, aoba (its vendor: not affected) is not.
    store.execute("UPDATE matches SET matched = '2026-01-01T00:00:00Z'")
    store.execute("UPDATE register_rows SET added = '2026-01-01T00:00:00Z'")
    due = responses.due_reminders(store, ["sakura", "aoba", "kaede"])
    assert aid in due.get("sakura", []) and aid in due.get("kaede", []) and "aoba" not in due
    # The facility's digest block says what its vendor answered.
    hub.run("members", "add", "jma", "--name", "日本医師会", "--clearance", "green")
    subs.add(store, {"email": "inchou@sakura.example.jp", "member": "jma", "clearance": "GREEN",
                     "facility": "sakura"})
    colls.add(store, "all", "All", "tlp <= GREEN")
    members.grant(store, "jma", "all", True, False)
    triage.republish(store, aid, "analyst")
    sink.messages.clear()
    run_digest(store, "daily", smtp=SmtpConfig("127.0.0.1", controller.port), base_url="https://hub.example.jp",
               now=datetime.now(UTC) + timedelta(minutes=1))
    (mail,) = sink.parsed("inchou@sakura.example.jp")
    text = mail.get_body(("plain",)).get_content()
    assert "保守業者(メディ保守)の回答: 該当します(2999年12月20日に修正予定)" in text, text


def test_a_vendor_is_reminded_once_after_its_planned_fix_date(hub, tmp_path, smtp, monkeypatch):
    controller, sink = smtp
    store, aid = asked(hub, tmp_path, monkeypatch, controller)
    hub.run("vendors", "answer", "medi", aid, "--product", "DCMTK", "--status", "affected", "--fix-date", "2999-01-31")
    sink.messages.clear()
    assert "nothing to ask any vendor" in hub.run("vendors", "send").output  # the date has not come
    store.execute("UPDATE vendor_answers SET fix_date = '2020-01-31'")  # it passes
    hub.run("vendors", "send")
    (mail,) = sink.parsed("support@medi.example.jp")
    assert mail["Subject"] == "【医療セプター】修正予定日を過ぎた件のご確認 (1件)"
    assert "OFFIS DCMTK 3.6.6: 修正予定日 2020-01-31 (1施設)" in mail.get_content()
    assert "さくら" not in mail.get_content()  # which customers stays with the hub
    assert [a["target"] for a in store.audit.list(action="vendor-reminder")] == ["medi"]
    hub.run("vendors", "send")
    assert len(sink.parsed("support@medi.example.jp")) == 1  # once
