"""Incident intake, tracking, relay notices, anonymized sharing, the in-hospital poster, and that
incident data (TLP:RED) never leaves through TAXII, digests or exports."""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from ceptoar.core.extensions import props
from ceptoar.store import Store
from tests.taxii_fixtures import build_world, free_port


class Sink:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("incidents"))


def report(world, *extra, facility="さくら診療所"):
    out = world.hub.run("incidents", "report", "--facility", facility, "--facility-type", "clinic",
                        "--prefecture", "東京都", "--member", "assoc-green", "--summary",
                        "電子カルテ端末に身代金要求画面が表示され、受付業務が停止した", "--vendor", "サンプル医療システム",
                        "--vendor-phone", "03-1111-2222", "--detected-at", "2026-11-21 08:30", "--format", "json",
                        *extra)
    return json.loads(out.stdout)


def test_report_update_list_due(world):
    inc = report(world, "--service-impact", "--care-disrupted")
    assert inc["status"] == "reported" and inc["mhlw_due"] is True
    assert inc["detected_at"] == "2026-11-20T23:30:00.000Z"  # JST 08:30
    assert any("03-3595-2430" in s for s in inc["next_steps"]) and any("ベンダー" in s for s in inc["next_steps"])
    minor = report(world, facility="すずらん薬局")
    assert minor["mhlw_due"] is False and not any("03-3595-2430" in s for s in minor["next_steps"])
    due = world.hub.json("incidents", "list", "--due")
    assert {d["party"] for d in due if d["id"] == inc["id"]} == {"vendor", "mhlw", "prefecture"}
    assert {d["party"] for d in due if d["id"] == minor["id"]} == {"vendor"}  # the vendor, always
    short = inc["id"][10:20]
    world.hub.run("incidents", "update", short, "--status", "vendor-contacted", "--note",
                  "ベンダーが来院し端末をネットワークから切り離した", "--note-kind", "response")
    world.hub.run("incidents", "update", short, "--status", "reported-to-mhlw")
    assert inc["id"] in [i["id"] for i in world.hub.json("incidents", "list", "--due")]  # a status reports nothing
    for party in ("vendor", "mhlw", "prefecture"):
        world.hub.run("incidents", "reported", short, "--to", party)
    assert inc["id"] not in [i["id"] for i in world.hub.json("incidents", "list", "--due")]
    back = world.hub.run("incidents", "update", short, "--status", "reported", ok=None)
    assert back.exit_code == 1 and "only move forward" in back.output
    world.hub.run("incidents", "update", short, "--status", "recovering", "--note", "バックアップから復元中",
                  "--note-kind", "recovery")
    world.hub.run("incidents", "update", short, "--note", "VPN装置のパスワードを変更し多要素認証を導入",
                  "--note-kind", "prevention")
    shown = json.loads(world.hub.run("incidents", "show", short).stdout)
    assert [h["status"] for h in shown["history"]] == ["reported", "vendor-contacted", "reported-to-mhlw", "recovering"]
    assert [n["kind"] for n in shown["notes"]] == ["response", "recovery", "prevention"]
    assert [i["prefecture"] for i in world.hub.json("incidents", "list", "--prefecture", "東京都")]
    assert world.hub.json("incidents", "list", "--status", "recovering")[0]["id"] == inc["id"]
    store = Store(world.db)
    versions = store.objects.versions(inc["stix_id"])
    assert len(versions) >= 4 and props(versions[-1].obj)["incident"]["status"] == "recovering"
    assert {v.origin for v in versions} == {"incident"}
    actions = [a["action"] for a in world.hub.json("audit", "list") if a["target"] == inc["id"]]
    assert actions.count("incident-update") == 4 and "incident-report" in actions and "incident-show" in actions
    assert actions.count("incident-reported") == 3


def test_notify_each_party_by_smtp_and_eml(world, tmp_path):
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        inc = report(world, "--personal-data-leak", "--vendor-email", "desk@vendor.example.jp")
        world.hub.run("incidents", "notify", inc["id"], "--smtp-host", "127.0.0.1", "--smtp-port",
                      str(controller.port))
    finally:
        controller.stop()
    got = {rcpt[0]: email.message_from_bytes(data, policy=email.policy.default) for rcpt, data in sink.messages}
    assert set(got) == {"desk@vendor.example.jp", "mhlw-iryo-it@example.jp", "tokyo-iryo@example.jp",
                        "ppc-report@example.jp"}  # a leak: the PPC's 速報 and 確報 too
    body = got["mhlw-iryo-it@example.jp"].get_content()
    assert "医療技術情報推進室 御中" in body and "さくら診療所" in body and "2026年11月21日 08:30" in body
    assert "個人データ漏えい等のおそれ: あり" in body and "TLP:RED" in body
    assert got["desk@vendor.example.jp"]["Subject"].startswith("【医療セプター】サイバー攻撃の疑い事案のご連絡")
    shown = json.loads(world.hub.run("incidents", "show", inc["id"]).stdout)
    assert sorted(n["party"] for n in shown["notices"]) == ["mhlw", "ppc-final", "ppc-preliminary", "prefecture",
                                                             "vendor"]
    assert {o["state"] for o in shown["obligations"] if o["required"] and o["party"] != "police"} == {"done"}
    out = tmp_path / "notices"
    world.hub.run("incidents", "notify", inc["id"], "--to", "prefecture", "--out", str(out))
    (eml,) = out.glob("*.eml")
    assert "東京都 保健医療局" in email.message_from_bytes(eml.read_bytes(), policy=email.policy.default).get_content()
    other = json.loads(world.hub.run("incidents", "report", "--facility", "北の病院", "--facility-type", "hospital",
                                     "--prefecture", "青森県", "--member", "assoc-green", "--summary", "不審な通信",
                                     "--format", "json").stdout)
    r = world.hub.run("incidents", "notify", other["id"], "--to", "vendor", ok=None)
    assert r.exit_code == 1 and "no e-mail address for vendor" in r.output
    r = world.hub.run("incidents", "notify", other["id"], "--to", "prefecture", ok=None)
    assert r.exit_code == 1 and '[prefectures."青森県"]' in r.output and "vendor-email" not in r.output


def test_share_anonymized_lesson_and_red_stays_home(world, tmp_path):
    inc = report(world, "--service-impact")
    leak = world.hub.run("incidents", "share", inc["id"], "--tlp", "GREEN", "--summary",
                         "さくら診療所でVPN装置の脆弱性から侵入された", ok=None)
    assert leak.exit_code == 1 and "anonymize" in leak.output
    out = world.hub.run("incidents", "share", inc["id"], "--tlp", "GREEN", "--summary",
                        "都内の診療所で、更新されていないVPN装置から侵入され電子カルテが暗号化された。"
                        "VPN装置の更新と多要素認証が有効。")
    assert "waiting for triage" in out.output
    lessons = world.hub.json("advisories", "list", "--source", "ceptoar-lessons")
    assert len(lessons) == 1 and lessons[0]["tlp"] == "GREEN" and lessons[0]["status"] == "new"
    assert "さくら" not in json.dumps(lessons)
    # Nothing of the incident itself reaches advisories, collections, TAXII, digests or exports.
    store = Store(world.db)
    assert not [r for r in store.advisories.list(status="all") if r["id"] == inc["report_id"]]
    assert store.scalar("SELECT COUNT(*) FROM membership WHERE object_id IN (?, ?)",
                        (inc["stix_id"], inc["report_id"])) == 0
    bundle = world.hub.run("export", "bundle").stdout
    assert inc["stix_id"] not in bundle and "さくら診療所" not in bundle
    assert "さくら診療所" not in world.hub.run("export", "csv", "--status", "all").stdout
    assert "さくら診療所" not in world.hub.run("advisories", "list", "--status", "all", "--format", "csv").stdout
    preview = world.hub.run("digest", "preview", "--member", "assoc-green", "--clearance", "RED").output
    assert "さくら診療所" not in preview


def test_poster_renders_in_a_real_browser(tmp_path):
    from PIL import Image

    from tests.conftest import Hub
    html = tmp_path / "poster.html"
    Hub(tmp_path / "x.db").run("poster", "--facility", "さくら診療所", "--vendor", "サンプル医療システム",
                               "--vendor-phone", "03-1111-2222", "--vendor-contact", "佐藤", "-o", str(html))
    text = html.read_text(encoding="utf-8")
    assert "03-1111-2222" in text and "03-3595-2430" in text and "医療技術情報推進室" in text and "佐藤" in text
    from tests import chromium
    browser = chromium.require()
    shot = tmp_path / "poster.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=800,1130",
                    f"--screenshot={shot}", html.as_uri()], check=True, capture_output=True, timeout=60)
    img = Image.open(shot).convert("RGB")
    assert img.size == (800, 1130)
    pixels = img.load()
    red = sum(1 for x in range(0, 800, 4) for y in range(0, 70, 4) if pixels[x, y][0] > 150 and pixels[x, y][1] < 40)
    assert red > 500  # the red banner is drawn
    dark = sum(1 for x in range(0, 800, 2) for y in range(280, 360, 2) if sum(pixels[x, y]) < 150)
    assert dark > 200  # the vendor's telephone number is printed large
    # Japanese is drawn with a real font, not as missing-glyph boxes: glyph boxes are hollow squares of
    # near-identical width; real kana differ. Compare the title's ink against an all-boxes rendering.
    boxes = tmp_path / "boxes.html"
    boxes.write_text(text.replace("サイバー攻撃が疑われたら", "\U000F0000" * 12), encoding="utf-8")
    shot2 = tmp_path / "boxes.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile2'}", "--hide-scrollbars", "--window-size=800,1130",
                    f"--screenshot={shot2}", boxes.as_uri()], check=True, capture_output=True, timeout=60)
    title = img.crop((60, 0, 740, 66)).tobytes()
    title_boxes = Image.open(shot2).convert("RGB").crop((60, 0, 740, 66)).tobytes()
    assert title != title_boxes


def incident(world, *extra, prefecture="東京都", detected="2026-12-01 00:30"):
    r = world.hub.run("incidents", "report", "--facility", "あおば内科クリニック", "--facility-type", "clinic",
                      "--prefecture", prefecture, "--member", "assoc-green", "--summary",
                      "受付端末と電子カルテサーバが暗号化され、脅迫文が表示された", "--vendor", "サンプル医療システム",
                      "--vendor-phone", "03-1111-2222", "--detected-at", detected, "--format", "json", *extra)
    return json.loads(r.stdout), r


def owed(world, inc_id) -> dict:
    shown = json.loads(world.hub.run("incidents", "show", inc_id).stdout)
    return {o["party"]: o for o in shown["obligations"]}


def test_ransomware_case_from_detection_to_closure(world, tmp_path):
    """Detected just after midnight JST on 1 December (30 November in UTC): every report owed, a
    leak suspected then confirmed with a count, each notice parsed, closing refused until done."""
    inc, r = incident(world, "--service-impact", "--care-disrupted", "--cause", "ransomware", "--facility-phone",
                      "03-1234-5678", "--contact-person", "事務長 佐藤", prefecture="東京")
    assert "prefecture '東京' taken as 東京都" in r.stderr and inc["prefecture"] == "東京都"
    assert inc["detected_at"] == "2026-11-30T15:30:00.000Z" and inc["detected_jst"] == "2026-12-01 00:30"
    short = inc["id"][10:20]
    o = owed(world, short)
    assert {p for p, x in o.items() if x["state"] in ("pending", "overdue")} == {"vendor", "mhlw", "prefecture",
                                                                              "police"}
    assert o["ppc-final"]["state"] == "not-required" and o["mhlw"]["deadline_jst"] == "2026-12-02 00:30"
    # The leak is suspected: the PPC's 速報 and 確報 (60 days: the cause may be malicious), counted from
    # the day it was known in Japan time (1 December), not the UTC date (30 November).
    edited = world.hub.run("incidents", "edit", short, "--personal-data-leak")
    assert "personal_data_leak" in edited.output and "ppc-preliminary" in edited.output
    o = owed(world, short)
    assert o["ppc-preliminary"]["deadline_jst"] == "2026-12-06 23:59"
    assert o["ppc-final"]["deadline_jst"] == "2027-01-30 23:59"
    world.hub.run("incidents", "edit", short, "--cause", "unknown")  # not (yet) known to be malicious: 30 days
    assert owed(world, short)["ppc-final"]["deadline_jst"] == "2026-12-31 23:59"
    world.hub.run("incidents", "edit", short, "--cause", "ransomware")
    due = world.hub.json("incidents", "list", "--due")
    mine = [d for d in due if d["id"] == inc["id"]]
    assert [d["party"] for d in mine] == ["vendor", "mhlw", "prefecture", "police", "ppc-preliminary", "ppc-final"]
    assert all(isinstance(d["days_left"], int) for d in mine) and [d["deadline"] for d in due] == \
        sorted(d["deadline"] for d in due)
    # The 速報, prepared as .eml: the Commission's items, what is not known yet marked 未確認, and the
    # command says which facts to record. Written is not reported: it stays owed until recorded.
    out = tmp_path / "ppc"
    r = world.hub.run("incidents", "notify", short, "--to", "ppc-preliminary", "--out", str(out))
    assert "--records-affected" in r.stderr and "--data-items" in r.stderr and "incidents reported" in r.stderr
    (eml,) = out.glob("*.eml")
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    body = msg.get_content()
    assert msg["Date"].endswith("+0900") and msg["From"].addresses[0].display_name == "医療セプター"
    assert msg["Subject"] == "【医療セプター】個人データの漏えい等の報告(速報): あおば内科クリニック"
    for item in ("1. 概要:", "2. 漏えい等が発生し、又は発生したおそれがある個人データの項目: 未確認",
                 "3. 漏えい等が発生し、又は発生したおそれがある個人データに係る本人の数: 未確認", "4. 原因: ランサムウェア",
                 "5. 二次被害又はそのおそれの有無及びその内容: 未確認", "6. 本人への対応の実施状況: 未確認",
                 "7. 公表の実施状況: 未確認", "8. 再発防止のための措置: 未確認", "9. その他参考となる事項:"):
        assert item in body, item
    assert "2026年12月01日 00:30 (日本時間)" in body and "事務長 佐藤 / 03-1234-5678" in body
    assert owed(world, short)["ppc-preliminary"]["state"] in ("pending", "overdue")
    world.hub.run("incidents", "reported", short, "--to", "ppc-preliminary", "--how", "online-form")
    assert owed(world, short)["ppc-preliminary"]["state"] == "done"
    # Confirmed, with a count: the 確報, sent by SMTP, which records it.
    world.hub.run("incidents", "edit", short, "--records-affected", "1200", "--data-items", "氏名、生年月日、診療録",
                  "--secondary-harm", "現時点で確認されていない", "--individuals-response", "対象者へ書面で通知予定",
                  "--public-announcement", "ウェブサイトで公表済み")
    world.hub.run("incidents", "update", short, "--note", "VPN装置を更新し多要素認証を導入", "--note-kind", "prevention")
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        r = world.hub.run("incidents", "notify", short, "--to", "ppc-final", "--smtp-host", "127.0.0.1",
                          "--smtp-port", str(controller.port))
        assert "未確認" not in r.stderr
        closing = world.hub.run("incidents", "update", short, "--status", "closed", ok=None)
        assert closing.exit_code == 1 and "reports still owed" in closing.output and "mhlw" in closing.output
        world.hub.run("incidents", "reported", short, "--to", "vendor", "--note", "保守担当 田中氏に電話")
        world.hub.run("incidents", "notify", short, "--smtp-host", "127.0.0.1", "--smtp-port", str(controller.port))
    finally:
        controller.stop()
    got = {rcpt[0]: email.message_from_bytes(data, policy=email.policy.default) for rcpt, data in sink.messages}
    assert set(got) == {"ppc-report@example.jp", "mhlw-iryo-it@example.jp", "tokyo-iryo@example.jp",
                        "tokyo-cyber@example.jp"}
    final = got["ppc-report@example.jp"].get_content()
    assert "本人の数: 1,200人" in final and "氏名、生年月日、診療録" in final and "VPN装置を更新し" in final
    mhlw = got["mhlw-iryo-it@example.jp"]
    body = mhlw.get_content()
    assert mhlw["Date"].endswith("+0900") and mhlw["From"].addresses[0].display_name == "医療セプター"
    assert "現在の状況: 受付済み(対応開始前)" in body and "reported" not in body
    assert "医療機関の担当者・連絡先: 事務長 佐藤 / 03-1234-5678" in body and "03-5555-0000" in body
    assert "犯罪の疑い: あり" in body and "原因: ランサムウェア" in body and "本人の数: 1,200人" in body
    assert "警視庁 サイバー犯罪対策課 御中" in got["tokyo-cyber@example.jp"].get_content()
    assert all(x["state"] == "done" for x in owed(world, short).values() if x["required"])
    world.hub.run("incidents", "update", short, "--status", "closed")
    assert inc["id"] not in {d["id"] for d in world.hub.json("incidents", "list", "--due")}
    # A status set back needs a reason; it is audited.
    back = world.hub.run("incidents", "update", short, "--status", "recovering", ok=None)
    assert back.exit_code == 1 and "--reason" in back.output
    world.hub.run("incidents", "update", short, "--status", "recovering", "--reason", "復旧作業が残っていた")
    audit = [a for a in world.hub.json("audit", "list") if a["target"] == inc["id"]]
    assert audit[-1]["details"].items() >= {"from": "closed", "to": "recovering", "reason": "復旧作業が残っていた"}.items()
    edits = [a["details"]["changes"] for a in audit if a["action"] == "incident-edit"]
    assert edits[0] == {"personal_data_leak": {"from": False, "to": True}}
    assert edits[-1]["records_affected"] == {"from": None, "to": 1200}
    store = Store(world.db)
    versions = store.objects.versions(inc["stix_id"])
    assert props(versions[-1].obj)["incident"]["records_affected"] == 1200 and len(versions) >= 10


def test_facts_are_checked_and_closing_with_reports_owed_needs_force_and_reason(world):
    r = world.hub.run("incidents", "report", "--facility", "x", "--facility-type", "clinic", "--prefecture",
                      "東京府", "--member", "assoc-green", "--summary", "s", ok=None)
    assert r.exit_code == 1 and "unknown prefecture '東京府'" in r.output and "東京都" in r.output
    assert "Traceback" not in r.output
    r = world.hub.run("incidents", "report", "--facility", "x", "--facility-type", "clinic", "--prefecture",
                      "東京都", "--member", "assoc-green", "--summary", "s", "--facility-phone", "03-12", ok=None)
    assert r.exit_code == 1 and "not a Japanese telephone number" in r.output
    inc, _ = incident(world, "--service-impact", "--facility-phone", "０３-１２３４-５６７８")
    assert inc["facility_phone"] == "03-1234-5678"
    short = inc["id"][10:20]
    r = world.hub.run("incidents", "edit", short, "--prefecture", "大坂", ok=None)
    assert r.exit_code == 1 and "大阪府" in r.output
    r = world.hub.run("incidents", "edit", short, "--prefecture", "大阪")
    assert "大阪府" in r.output
    assert world.hub.run("incidents", "edit", short, "--prefecture", "大阪府", ok=None).exit_code == 1  # no change
    r = world.hub.run("incidents", "update", short, "--status", "closed", "--force", ok=None)
    assert r.exit_code == 1 and "reports still owed" in r.output
    world.hub.run("incidents", "update", short, "--status", "closed", "--force", "--reason", "事務局判断: 誤報")
    audit = [a for a in world.hub.json("audit", "list") if a["target"] == inc["id"]][-1]
    assert set(audit["details"]["forced_with_open"]) == {"vendor", "mhlw", "prefecture"}
    # Closing by force does not hide what is still owed.
    assert {d["party"] for d in world.hub.json("incidents", "list", "--due") if d["id"] == inc["id"]} == \
        {"vendor", "mhlw", "prefecture"}
    table = world.hub.run("incidents", "list").stdout
    assert "2026-12-01 00:30" in table  # detection time in JST


def test_offices_come_from_the_operators_configuration(tmp_path):
    """The MHLW office, telephone and hours are configuration: notices, the digest's notice block and
    the poster all read the operator's relay.toml."""
    import os

    w = build_world(tmp_path)
    config = Path(os.environ.get("CEPTOAR_CONFIG") or Path(w.db).parent / "ceptoar-config")
    relay = config / "relay.toml"
    text = relay.read_text(encoding="utf-8")
    relay.write_text(text.replace("医政局 研究開発振興課 医療技術情報推進室", "医政局 特定医薬品開発支援・医療情報担当参事官室")
                     .replace("03-3595-2430", "03-5253-1111"), encoding="utf-8")
    inc, _ = incident(w, "--service-impact")
    out = tmp_path / "n"
    w.hub.run("incidents", "notify", inc["id"], "--to", "mhlw", "--out", str(out))
    body = email.message_from_bytes(next(out.glob("*.eml")).read_bytes(), policy=email.policy.default).get_content()
    assert "特定医薬品開発支援・医療情報担当参事官室 御中" in body
    assert any("03-5253-1111" in s for s in json.loads(w.hub.run("incidents", "show", inc["id"]).stdout)["next_steps"])
    w.hub.run("subscribers", "add", "a@clinic.example.jp", "--member", "assoc-green")
    preview = w.hub.run("digest", "preview", "--member", "assoc-green").stdout
    assert "特定医薬品開発支援・医療情報担当参事官室" in preview and "03-5253-1111" in preview
    w.hub.run("poster", "--facility", "x", "-o", str(tmp_path / "p.html"))
    assert "03-5253-1111" in (tmp_path / "p.html").read_text(encoding="utf-8")
