"""Incident intake, tracking, relay notices, anonymized sharing, the in-hospital poster, and that
incident data (TLP:RED) never leaves through TAXII, digests or exports."""

from __future__ import annotations

import email
import email.policy
import json
import subprocess

import pytest
from aiosmtpd.controller import Controller

from ceptoar.extensions import props
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
    due = [i["id"] for i in world.hub.json("incidents", "list", "--due")]
    assert inc["id"] in due and minor["id"] not in due
    short = inc["id"][10:20]
    world.hub.run("incidents", "update", short, "--status", "vendor-contacted", "--note",
                  "ベンダーが来院し端末をネットワークから切り離した", "--note-kind", "response")
    world.hub.run("incidents", "update", short, "--status", "reported-to-mhlw")
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
    assert set(got) == {"desk@vendor.example.jp", "mhlw-iryo-it@example.jp", "tokyo-iryo@example.jp"}
    body = got["mhlw-iryo-it@example.jp"].get_content()
    assert "医療技術情報推進室 御中" in body and "さくら診療所" in body and "2026年11月21日 08:30" in body
    assert "個人情報漏えいのおそれ: あり" in body and "TLP:RED" in body
    assert got["desk@vendor.example.jp"]["Subject"].startswith("【医療セプター】サイバー攻撃の疑い事案のご連絡")
    shown = json.loads(world.hub.run("incidents", "show", inc["id"]).stdout)
    assert sorted(n["party"] for n in shown["notices"]) == ["mhlw", "prefecture", "vendor"]
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
    assert r.exit_code == 1 and "relay.toml" in r.output


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
