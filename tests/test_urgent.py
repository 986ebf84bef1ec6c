"""Clinics hear in minutes, and only what they can act on: the urgent path (a CLEAR source's
KEV-listed or critical advisory matching an exposed register row alerts that facility on arrival,
before any analyst acts), one message per facility instead of a storm, corrections after review,
a digest read in two minutes with a signed page of its whole list, clinic text without US-federal
directives, and polling as often as upstream allows. Real components: the feeds on a loopback
server (the real KEV catalogue), aiosmtpd, the worker, the hub's web app in headless Chromium."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta

import pytest
import requests

from ceptoar.clinics.digest.delivery import drain_flash_queue
from ceptoar.clinics.digest.render import products_of
from ceptoar.core import extensions, settings
from ceptoar.core.settings import SmtpConfig
from ceptoar.fetch.http import upstream_wait
from ceptoar.ops.worker import Worker, reschedule
from ceptoar.publishing import clinic
from ceptoar.store import Store
from tests import chromium
from tests.conftest import DATA, ROOT
from tests.taxii_fixtures import ServerProcess, sakura_clinic

KEV = "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json"
CATALOGUE = json.loads((DATA / KEV).read_text(encoding="utf-8"))
# The KEV entries about FortiOS itself: what a register row "フォーティネット FortiOS" matches.
FORTIOS = sorted(v["cveID"] for v in CATALOGUE["vulnerabilities"]
                 if v["vendorProject"] == "Fortinet" and v["product"] == "FortiOS")
FEDERAL = re.compile(r"BOD \d|federal|FCEB|agencies", re.IGNORECASE)


def catalogue_without(cve: str | None) -> bytes:
    """The real catalogue, less one entry (that entry then arrives with the next fetch)."""
    doc = dict(CATALOGUE, vulnerabilities=[v for v in CATALOGUE["vulnerabilities"] if v["cveID"] != cve])
    return json.dumps(doc).encode()


@pytest.fixture
def clinic_hub(hub, tmp_path, feed_server, smtp, monkeypatch):
    """A facility whose register holds one internet-exposed FortiOS VPN (and a Windows PC that is
    not exposed), its director subscribed with the facility, and a subscriber of no facility."""
    controller, sink = smtp
    monkeypatch.setenv("CEPTOAR_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CEPTOAR_SMTP_PORT", str(controller.port))
    monkeypatch.setenv("CEPTOAR_PUBLIC_URL", "https://hub.example.jp")
    hub.run("members", "add", "assoc-green", "--name", "東京都医師会", "--clearance", "green")
    for collection in ("kev", "critical-high", "medical"):
        hub.run("members", "grant", "assoc-green", collection)
    sakura_clinic(hub, tmp_path)
    hub.sink, hub.feeds, hub.controller = sink, feed_server, controller
    return hub


def parts(msg) -> tuple[str, str]:
    return msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()


def test_the_worker_alerts_an_exposed_facility_once_on_the_first_kev_fetch(clinic_hub):
    hub = clinic_hub
    hub.run("sources", "add", "cisa-kev", hub.feeds.url("/" + KEV), "--kind", "kev", "--lang", "en")
    store = Store(hub.db)
    worker = Worker(store, settings.load(str(hub.db)), log=lambda m: None, seed=1)
    report = worker.tick()
    assert report.fetched[0].status == "ok" and report.fetched[0].new == len(CATALOGUE["vulnerabilities"])
    (msg,) = hub.sink.parsed("inchou@sakura.example.jp")  # one message, not one per advisory
    assert not hub.sink.parsed("other@clinic.example.jp")  # only the facility's own staff
    alerted = store.rows("SELECT advisory, pre_review, sent FROM targeted_alerts WHERE facility = 'sakura'")
    assert len(alerted) >= len(FORTIOS) >= 5 and all(a["pre_review"] == 1 and a["sent"] for a in alerted)
    assert msg["Subject"] == f"【医療セプター】緊急: 貴院の VPN装置 FortiOS に該当する情報 ({len(alerted)}件)"
    text, html = parts(msg)
    cves = {c for a in alerted for c in store.advisories.get(a["advisory"])["cves"]}
    assert set(FORTIOS) <= cves and all(c in text for c in cves)  # every matching CVE, named
    assert "緊急: 貴院の台帳の機器(インターネットに公開)に該当します" in text  # exactly the row's exposure
    assert "リモート保守" not in text.split("■ サイバー攻撃")[0].split("貴院の台帳に該当")[0]
    assert "分析担当者が確認する前に自動でお送りしています" in text and "※" in text
    assert not FEDERAL.search(text) and not FEDERAL.search(html)
    # Before review: no analyst acted, nothing published; the alert is audited as such.
    assert {store.advisories.get(a["advisory"])["status"] for a in alerted} == {"new"}
    audit = store.rows("SELECT target, details FROM audit WHERE action = 'urgent-alert'")
    assert {a["target"] for a in audit} == {a["advisory"] for a in alerted}
    assert all(json.loads(a["details"])["before_review"] and json.loads(a["details"])["facility"] == "sakura"
               for a in audit)
    # The next tick fetches nothing (not due) and sends nothing again.
    worker.tick()
    assert len(hub.sink.parsed("inchou@sakura.example.jp")) == 1


def test_no_alert_before_review_above_clear_or_when_turned_off(clinic_hub, tmp_path):
    hub = clinic_hub
    url = hub.feeds.url("/" + KEV)
    hub.run("sources", "add", "kev-amber", url, "--kind", "kev", "--tlp", "AMBER")
    hub.run("sources", "add", "kev-quiet", url, "--kind", "kev", "--no-urgent")
    hub.run("fetch", "kev-amber", "kev-quiet")
    store = Store(hub.db)
    assert not hub.sink.messages and not store.rows("SELECT * FROM targeted_alerts")
    assert store.sources.get("kev-quiet")["options"] == {"urgent": False}
    # The catalogue says the same with `urgent = false`; an urgent source above CLEAR stays quiet.
    (tmp_path / "cat.toml").write_text(
        f'[[source]]\nid = "kev-cat"\nkind = "kev"\nurl = "{url}"\ntlp = "CLEAR"\nurgent = false\n', encoding="utf-8")
    hub.run("init", "--sources", str(tmp_path / "cat.toml"))
    hub.run("fetch", "kev-cat")
    assert not hub.sink.messages and store.sources.get("kev-cat")["options"] == {"urgent": False}
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[[source]]\nid = "x"\nkind = "kev"\nurl = "{url}"\nurgent = "sometimes"\n', encoding="utf-8")
    r = hub.run("init", "--sources", str(bad), ok=False)
    assert r.exit_code != 0 and "urgent must be true or false" in r.output


def test_later_matches_wait_their_turn_and_review_sends_corrections(clinic_hub):
    hub = clinic_hub
    late = FORTIOS[0]
    hub.feeds.route("/kev.json", catalogue_without(late))
    hub.run("sources", "add", "cisa-kev", hub.feeds.url("/kev.json"), "--kind", "kev")
    hub.run("fetch", "cisa-kev")
    store = Store(hub.db)
    (first,) = hub.sink.parsed("inchou@sakura.example.jp")
    assert f"({len(FORTIOS) - 1}件)" in first["Subject"] and late not in parts(first)[0]
    # The entry left out arrives a minute later: it waits for the facility's next urgent message.
    hub.feeds.route("/kev.json", json.dumps(CATALOGUE).encode())
    hub.run("fetch", "cisa-kev")
    assert len(hub.sink.parsed("inchou@sakura.example.jp")) == 1 and store.facilities.pending_count() == 1
    smtp = SmtpConfig("127.0.0.1", hub.controller.port)
    later = datetime.now(UTC) + timedelta(minutes=settings.current().urgent_min_minutes + 1)
    settings.use(settings.load(str(hub.db)))
    drain_flash_queue(store, "test", smtp=smtp, base_url="https://hub.example.jp", now=later)
    second = hub.sink.parsed("inchou@sakura.example.jp")[1]
    assert "(1件)" in second["Subject"] and late in parts(second)[0]
    # Review: a rejection and a lower severity reach the facility as one short correction.
    alerted = [a["advisory"] for a in store.rows("SELECT advisory FROM targeted_alerts ORDER BY advisory")]
    rejected, lowered, published = alerted[:3]
    hub.run("advisories", "reject", rejected, "--reason", "internal: duplicate of JVN entry")
    (correction,) = [m for m in hub.sink.parsed("inchou@sakura.example.jp") if "訂正" in m["Subject"]]
    text, html = parts(correction)
    assert store.advisories.get(rejected)["title"] in text and "取り下げ" in text
    assert "internal" not in text and "duplicate" not in text  # the secretariat's reason stays its own
    hub.run("advisories", "triage", lowered, "--severity", "critical")
    hub.run("advisories", "triage", lowered, "--severity", "medium")
    hub.run("advisories", "publish", published)
    corrections = [m for m in hub.sink.parsed("inchou@sakura.example.jp") if "訂正" in m["Subject"]]
    said = "".join(parts(m)[0] for m in corrections)
    assert "重要度が「緊急」から「中」に変更されました" in said and "正式に配信しました" in said
    assert not hub.sink.parsed("other@clinic.example.jp")
    assert {r["action"] for r in store.rows("SELECT action FROM audit WHERE action LIKE 'urgent%'")} == {
        "urgent-alert", "urgent-correction"}
    # A rejected advisory not sent yet is never sent.
    assert not store.rows("SELECT * FROM targeted_alerts WHERE run IS NULL")


def test_the_digest_after_the_whole_kev_catalogue_reads_in_two_minutes(clinic_hub, tmp_path):
    hub = clinic_hub
    hub.run("sources", "add", "cisa-kev", hub.feeds.url("/" + KEV), "--kind", "kev", "--no-urgent")
    hub.run("fetch", "cisa-kev")
    hub.run("advisories", "publish", "--source", "cisa-kev", "--limit", "5000", "--yes")
    server = ServerProcess(hub.db).start()
    try:
        hub.sink.messages.clear()
        hub.run("digest", "send", "--frequency", "daily", "--base-url", server.base, "--smtp-host", "127.0.0.1",
                "--smtp-port", str(hub.controller.port))
        other = hub.sink.parsed("other@clinic.example.jp")[0]
        text, html = parts(other)
        total = len(CATALOGUE["vulnerabilities"])
        assert f"({total}件)" in other["Subject"]  # the subject keeps the total
        full = re.findall(r"^\[\d+\] ", text, re.M)
        assert len(full) <= 10 and len(text.encode()) < 40_000, (len(full), len(text.encode()))
        # A backfill (the catalogue's entries are older than the window) is only counted.
        assert f"ほか {total} 件: 悪用が確認された脆弱性 {total}件" in text
        assert not FEDERAL.search(text) and not FEDERAL.search(html)
        # The facility's own matches come first, in its block, in full.
        mine, _ = parts(hub.sink.parsed("inchou@sakura.example.jp")[0])
        block = mine.split("■ 貴院の台帳に該当する可能性がある情報")[1].split("■ ほか")[0]
        assert block.count("該当する機器: [VPN装置] フォーティネット FortiOS 7.0.1") == len(FORTIOS)  # exposed first
        shown = block.count("該当する機器:")
        matched = int(re.search(r"^ \((\d+)件\)", block).group(1))
        assert shown <= 10 < matched and f"ほか {matched - shown} 件が貴院の台帳に該当する可能性があります" in block
        assert len(mine.encode()) < 40_000 and all(c in block for c in FORTIOS)
        # The whole list: signed for this subscriber, paged, only what the subscriber may see.
        link = re.search(r"https?://\S+/digest/\S+", text).group(0)
        driver = chromium.webdriver()
        try:
            driver.get(link)
            assert f"({total}件)" in driver.find_element("id", "heading").text
            page1 = [e.text for e in driver.find_elements("css selector", ".item h2")]
            assert len(page1) == 20
            driver.find_element("id", "next").click()
            page2 = [e.text for e in driver.find_elements("css selector", ".item h2")]
            assert len(page2) == 20 and page2[0].startswith("21.") and not set(page1) & set(page2)
        finally:
            driver.quit()
        token = Store(hub.db).subscribers.get("inchou@sakura.example.jp")["token"]
        mine_token = re.search(r"/digest/([^/]+)/", link).group(1)
        assert requests.get(link.replace(mine_token, token), timeout=10).status_code == 404  # not theirs
        assert requests.get(link[:-3] + "abc", timeout=10).status_code == 404  # tampered
        assert "/digest/" not in server.log() or mine_token not in server.log()  # no token in the log
    finally:
        server.stop()


def test_clinic_text_keeps_only_what_a_clinic_can_do():
    actions = [v["requiredAction"] for v in CATALOGUE["vulnerabilities"]]
    kept = [clinic.for_clinics(a) for a in actions]
    assert not any(FEDERAL.search(k or "") for k in kept)
    assert clinic.for_clinics("Apply mitigations per vendor instructions, follow applicable BOD 22-01 guidance for "
                              "cloud services, or discontinue use of the product if mitigations are unavailable.") == \
        "Apply mitigations per vendor instructions or discontinue use of the product if mitigations are unavailable."
    assert clinic.for_clinics("Versions 6 and earlier for this product are end-of-life and must be removed from "
                              "agency networks. Versions 7 and later are not considered vulnerable.") == \
        "Versions 7 and later are not considered vulnerable."
    # A product already named after its vendor is not prefixed again.
    git = extensions.with_props({"type": "report"}, extensions.ADVISORY, kev={"vendor_project": "Git",
                                                                               "product": "Git"})
    forti = extensions.with_props({"type": "report"}, extensions.ADVISORY, kev={"vendor_project": "Fortinet",
                                                                                 "product": "FortiOS"})
    assert products_of(git) == "Git" and products_of(forti) == "Fortinet FortiOS"


@pytest.mark.parametrize("headers, wait", [
    ({"Cache-Control": "public, max-age=600"}, 600.0),
    ({"Cache-Control": "no-cache, max-age=600"}, None),
    ({"Retry-After": "120"}, 120.0),
    ({"Retry-After": "120", "Cache-Control": "max-age=30"}, 120.0),
    ({"Cache-Control": "max-age=99999999"}, 86400.0),  # capped at a day
    ({"Retry-After": "soon"}, None),
    ({}, None),
])
def test_upstream_wait(headers, wait):
    assert upstream_wait(headers) == wait


def test_polls_never_come_sooner_than_upstream_asks(hub, feed_server):
    feed_server.route("/kev.json", (DATA / KEV).read_bytes(), headers={"Cache-Control": "max-age=1800"}, etag='"k1"')
    hub.run("sources", "add", "kev", feed_server.url("/kev.json"), "--kind", "kev", "--interval", "300")
    hub.run("fetch", "--due")
    store = Store(hub.db)
    due = datetime.fromisoformat(store.sources.get("kev")["next_due"].replace("Z", "+00:00"))
    assert due - datetime.now(UTC) > timedelta(minutes=29)  # the interval is 5 min; upstream asked 30
    feed_server.route("/kev.json", b"busy", status=429, headers={"Retry-After": "3600"})
    r = hub.run("fetch", "kev", "--format", "json", ok=False)
    assert "retry after 3600 s" in json.loads(r.stdout)[0]["error"]
    now = datetime.now(UTC)
    reschedule(store, "kev", now, random.Random(1), 3600.0)
    due = datetime.fromisoformat(store.sources.get("kev")["next_due"].replace("Z", "+00:00"))
    assert due - now >= timedelta(hours=1)


def test_shipped_intervals_reach_existing_databases(hub):
    catalogue = ROOT / "feeds" / "sources.toml"
    hub.run("init", "--sources", str(catalogue))
    store = Store(hub.db)
    intervals = {s["id"]: s["interval"] for s in store.sources.list()}
    assert intervals["cisa-kev"] <= 300 and intervals["cisa-csaf-ot"] <= 900
    assert all(intervals[s] <= 900 for s in ("jvndb-new-ja", "jvndb-new-en", "jpcert-alerts", "ipa-alerts"))
    # A database made with the old catalogue (6 h) is brought to the shipped interval by `init`;
    # one the operator redefined keeps the operator's.
    store.execute("UPDATE sources SET interval = 21600 WHERE id IN ('cisa-kev', 'cisa-csaf-ot')")
    hub.run("sources", "add", "cisa-csaf-ot", store.sources.get("cisa-csaf-ot")["url"], "--kind", "csaf",
            "--interval", "7200")
    hub.run("init", "--sources", str(catalogue))
    assert store.sources.get("cisa-kev")["interval"] == 300 and store.sources.get("cisa-csaf-ot")["interval"] == 7200
