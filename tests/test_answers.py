"""Targeted alerts and facilities' answers end to end: an exposed device matched by a KEV advisory
alerts its facility at once; staff answer through the personal link of that real mail (aiosmtpd),
on the hub's page driven in headless Chromium (Selenium); the association's summary follows;
expired and tampered links are refused; unanswered urgent matches are reminded."""

from __future__ import annotations

import json
import re

import pytest
import requests

from ceptoar.clinics import responses
from ceptoar.publishing import triage
from ceptoar.store import Store
from tests import chromium
from tests.taxii_fixtures import ServerProcess, build_world, sakura_clinic



@pytest.fixture
def site(tmp_path, smtp):
    controller, sink = smtp
    w = build_world(tmp_path)
    hub, store = w.hub, Store(w.db)
    sakura_clinic(hub, tmp_path)
    server = ServerProcess(w.db).start()
    w.server, w.store, w.sink, w.controller = server, store, sink, controller
    yield w
    server.stop()


def answer_link(msg) -> str:
    text = msg.get_body(("plain",)).get_content()
    return re.search(r"https?://\S+/respond/\S+", text).group(0)


def test_targeted_alert_answer_in_a_browser_and_the_summary(site):
    hub, store, sink = site.hub, site.store, site.sink
    forti = store.advisories.list(source="kev", search="FortiOS Use of Hard-Coded")[0]["id"]
    assert not store.facilities.pending_count()  # nothing exposed is matched yet
    triage.publish(store, [forti], "test")  # KEV on an internet-exposed VPN appliance: alert at once
    assert store.facilities.pending_count() == 1  # the advisory queued; its facilities found when sending
    assert not store.facilities.pending_targeted()
    hub.run("digest", "flash", "--smtp-host", "127.0.0.1", "--smtp-port", str(site.controller.port),
            "--base-url", site.server.base)
    (alert,) = sink.parsed("inchou@sakura.example.jp")
    assert not sink.parsed("other@clinic.example.jp")  # only the facility's staff
    assert alert["Subject"] == "【医療セプター】緊急: 貴院の VPN装置 FortiOS に該当する情報 (1件)"
    text = alert.get_body(("plain",)).get_content()
    assert "[VPN装置] フォーティネット FortiOS 7.0.1 (インターネットに公開)" in text
    link = answer_link(alert)
    assert link.startswith(site.server.base + "/respond/sakura/")
    assert not store.facilities.pending_count()
    assert store.rows("SELECT facility, advisory FROM targeted_alerts WHERE run IS NOT NULL") == [
        {"facility": "sakura", "advisory": forti}]
    # Staff answer on the page, in a real browser.
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium.webdriver()
    try:
        driver.get(link)
        assert "対応状況のご回答" in driver.title and "FortiOS 7.0.1" in driver.page_source
        driver.find_element("id", "status-fixed").click()
        driver.execute_script("document.getElementById('fixed_on').value = '2026-11-20'")  # the date picker
        driver.find_element("id", "note").send_keys("保守業者がファームウェアを更新")
        driver.find_element("id", "submit").click()
        # The answer page comes back from the POST: wait for it rather than read the old one.
        WebDriverWait(driver, 20).until(lambda d: d.find_elements("id", "saved") or d.find_elements("id", "error"))
        assert "対応状況を選んでください" not in driver.page_source
        saved = driver.find_element("id", "saved").text
        assert "対応済み" in saved
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        driver.quit()
    (row,) = store.facilities.responses("sakura", forti)
    assert row["status"] == "fixed" and row["note"] == "保守業者がファームウェアを更新" and row["fixed_on"]
    summary = {r["advisory"]: r for r in hub.json("responses", "summary", "--member", "assoc-green")}
    s = summary[forti]
    assert (s["matched"], s["answered"], s["fixed"], s["open"], s["oldest_open"]) == (1, 1, 1, 0, None)
    assert next(m for m in hub.json("matches", "list", "--facility", "sakura") if m["advisory"] == forti)[
        "status"] == "fixed"
    assert [a["action"] for a in hub.json("audit", "list") if a["target"] == forti][-1] == "response"
    # The association's page (its TAXII credentials) and CSV.
    auth = ("assoc-green", site.secrets["assoc-green"])
    page = requests.get(site.server.base + "/responses", auth=auth, timeout=10)
    assert page.status_code == 200 and "会員施設の対応状況" in page.text and "FortiOS" in page.text
    csv_text = requests.get(site.server.base + "/responses?format=csv", auth=auth, timeout=10).text
    assert csv_text.splitlines()[0].startswith("advisory,title,member,matched,answered")
    assert requests.get(site.server.base + "/responses", timeout=10).status_code == 401
    other = requests.get(site.server.base + "/responses", auth=("assoc-amber", site.secrets["assoc-amber"]),
                         timeout=10)
    assert "FortiOS" not in other.text  # another association's facilities are not its business
    # Tampered and expired links are refused; signatures never reach the access log.
    bad = requests.post(link, data={"note": "状況を選び忘れ"}, timeout=10)
    assert bad.status_code == 400 and "対応状況を選んでください" in bad.text
    tampered = link[:-2] + ("AA" if not link.endswith("AA") else "BB")
    assert requests.get(tampered, timeout=10).status_code == 404
    assert requests.get(link.replace("/sakura/", "/aoba/"), timeout=10).status_code == 404
    expired = responses.linker(store, site.server.base, days=-1)("sakura", forti)
    assert requests.get(link.replace(".0/", ".4/"), timeout=10).status_code == 404  # a higher TLP: forged
    r = requests.get(expired, timeout=10)
    assert r.status_code == 410 and "有効期限" in r.text
    assert requests.post(expired, data={"status": "fixed"}, timeout=10).status_code == 410
    signature = link.rsplit("/", 1)[-1]
    assert signature not in json.dumps(hub.json("audit", "list"))
    # Raised above the TLP the mail carried it at: the page no longer shows it.
    hub.run("advisories", "triage", forti, "--tlp", "RED")
    raised = requests.get(link, timeout=10)
    assert raised.status_code == 404 and "FortiOS" not in raised.text


def test_unanswered_urgent_matches_are_reminded(site):
    """Yesterday's digest carried urgent matches; nobody answered; today's digest (with something
    new in it) asks again for the old ones, with their links; an answered one is not asked again."""
    from datetime import UTC, datetime, timedelta

    from ceptoar.clinics.digest.delivery import run_digest
    from ceptoar.core.mail import SmtpConfig

    store, sink = site.store, site.sink
    smtp = SmtpConfig("127.0.0.1", site.controller.port)
    now = datetime.now(UTC)
    run_digest(store, "daily", smtp=smtp, base_url=site.server.base, now=now)
    first = sink.parsed("inchou@sakura.example.jp")[0].get_body(("plain",)).get_content()
    assert "貴院の台帳に該当する可能性がある情報" in first and "回答をお待ちしています" not in first
    windows = sorted({m["advisory"] for m in store.facilities.matches(facility="sakura")})
    assert len(windows) > 2
    # Days pass: the matches and sakura's rows are old now.
    store.execute("UPDATE matches SET matched = '2026-01-01T00:00:00Z'")
    store.execute("UPDATE register_rows SET added = '2026-01-01T00:00:00Z' WHERE facility = 'sakura'")
    responses.answer(store, "sakura", windows[0], "not-applicable")
    fresh = store.advisories.list(source="kev", search="Adobe", status="new")[0]["id"]
    triage.publish(store, [fresh], "test")
    sink.messages.clear()
    run_digest(store, "daily", smtp=smtp, base_url=site.server.base, now=now + timedelta(days=1))
    text = sink.parsed("inchou@sakura.example.jp")[0].get_body(("plain",)).get_content()
    reminded = text.split("■ 回答をお待ちしています")[1].split("────")[0]
    # The newest 20 unanswered with their links, the rest counted; the answered one never.
    assert len(windows) - 1 > 20 and reminded.count("/respond/sakura/") == 20
    assert f"ほか {len(windows) - 1 - 20} 件が未回答です" in reminded
    assert f"/respond/sakura/{windows[0].split('--')[1]}/" not in reminded  # answered: not asked again
    asked = set(re.findall(r"/respond/sakura/([0-9a-f-]{36})/", reminded))
    assert len(asked) == 20 and asked <= {a.split("--")[1] for a in windows[1:]}
    assert "Microsoft Windows の脆弱性" in reminded
