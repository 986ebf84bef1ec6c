"""The maintenance vendor's answer page (issue 33, part 3): the link in a real request mail (aiosmtpd)
opens, in headless Chromium at a phone's width, the vendor's own customers' rows of one advisory, per
product and version; the vendor answers for all of them or for chosen facilities; the answers reach
the facilities' matches and their own answer pages in plain Japanese. Tampered, expired, borrowed and
out-of-scope links and answers are refused with nothing changed.

The advisory is CISA's ICSMA-22-174-01 (DCMTK, ../shared/data); registers as in test_vendor_requests,
with one more clinic running the same DCMTK version."""

from __future__ import annotations

import re

import pytest
import requests

from ceptoar.clinics import responses, vendor_requests
from ceptoar.publishing import triage
from tests import chromium
from tests.taxii_fixtures import ServerProcess
from tests.test_vendor_requests import HEADER, world


@pytest.fixture
def asked(hub, tmp_path, smtp, monkeypatch):
    controller, sink = smtp
    store, aid = world(hub, tmp_path)
    (tmp_path / "m.csv").write_text("facility_id,name,facility_type,prefecture,member\n"
                                    "momiji,もみじ内科,clinic,京都府,jma\n", encoding="utf-8")
    hub.run("facilities", "import", str(tmp_path / "m.csv"))
    (tmp_path / "momiji.csv").write_text(HEADER + "医療機器,OFFIS,DCMTK,3.6.6,,,,no,yes,メディ保守,\n", encoding="utf-8")
    hub.run("inventory", "import", "momiji", str(tmp_path / "momiji.csv"))
    triage.publish(store, [aid], "analyst")
    server = ServerProcess(hub.db).start()
    monkeypatch.setenv("CEPTOAR_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CEPTOAR_SMTP_PORT", str(controller.port))
    hub.run("vendors", "send", "--base-url", server.base)
    (mail,) = sink.parsed("support@medi.example.jp")
    link = re.search(r"https?://\S+/vendor/medi/\S+", mail.get_content()).group(0)
    yield store, aid, server, link
    server.stop()


def matches(hub, aid):
    return {m["facility"]: m for m in hub.json("matches", "list", "--advisory", aid)}


def test_a_vendor_answers_for_all_or_chosen_customers_in_a_browser(hub, asked):
    store, aid, server, link = asked
    assert link.startswith(server.base + "/vendor/medi/")
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def submitted(d):
        return d.find_elements("id", "saved") or d.find_elements("id", "error")

    driver = chromium.webdriver()
    try:
        driver.get(link)
        page = driver.page_source
        assert "保守先医療機関への影響のご回答" in driver.title and "メディ保守 ご担当者様" in page
        assert "さくら診療所 (東京都) 台帳 1 行目" in page and "もみじ内科 (京都府)" in page and "あおば歯科" in page
        # Only its own rows: not kaede's (another vendor's), not sakura's other systems.
        assert "かえで病院" not in page and "秘密カルテ" not in page and "北海道システム" not in page
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        headings = [h.text for h in driver.find_elements("tag name", "h2")]
        assert headings == ["OFFIS DCMTK 3.6.5", "OFFIS DCMTK 3.6.6"]
        # DCMTK 3.6.6, for sakura only: affected, fixed on a planned date.
        driver.find_element("id", "facility-1-momiji-1").click()  # unchecked: not this answer
        driver.find_element("id", "status-1-affected").click()
        driver.execute_script("document.getElementById('fix_date-1').value = '2999-03-31'")  # the date picker
        driver.find_element("id", "note-1").send_keys("暫定対策: 外部からの DICOM 接続を遮断")
        driver.find_element("id", "submit-1").click()
        WebDriverWait(driver, 20).until(submitted)
        assert "OFFIS DCMTK 3.6.6" in driver.find_element("id", "saved").text
        assert "該当します(2999年3月31日に修正予定)" in driver.page_source  # the current answer, beside sakura
        # The same product for momiji: not affected, with a VEX justification.
        driver.find_element("id", "facility-1-sakura-1").click()
        driver.find_element("id", "status-1-not_affected").click()
        Select(driver.find_element("id", "justification-1")).select_by_value("component_not_present")
        driver.find_element("id", "submit-1").click()
        # The reason's label is also an option of every form's list: wait for momiji's current answer.
        WebDriverWait(driver, 20).until(lambda d: "現在のご回答: 該当しません(該当する部品を含まない)" in d.page_source)
        # DCMTK 3.6.5 (aoba): fixed, with the version.
        driver.find_element("id", "status-0-fixed").click()
        driver.find_element("id", "fixed_version-0").send_keys("3.6.7")
        driver.find_element("id", "submit-0").click()
        WebDriverWait(driver, 20).until(lambda d: "現在のご回答: 修正済みです(修正版 3.6.7)" in d.page_source)
        assert not driver.find_elements("id", "error")
    finally:
        driver.quit()
    by = matches(hub, aid)
    assert (by["sakura"]["status"], by["sakura"]["answered_by"], by["sakura"]["fix_date"]) == (
        "affected", "vendor:medi", "2999-03-31")
    assert (by["momiji"]["status"], by["momiji"]["justification"]) == ("not_affected", "component_not_present")
    assert (by["aoba"]["status"], by["aoba"]["fixed_version"]) == ("fixed", "3.6.7")
    assert by["kaede"]["answered_by"] is None  # hokkaido's customer: medi's answers never reach it
    answers = [a for a in store.audit.list(action="vendor-answer")]
    assert [(a["actor"], a["details"]["status"], a["details"]["facilities"]) for a in answers] == [
        ("vendor:medi", "affected", 1), ("vendor:medi", "not_affected", 1), ("vendor:medi", "fixed", 1)]
    assert store.audit.list(action="vendor-page-read")[0]["details"]["rows"] == 3
    # The facility's own answer page says what its vendor answered.
    facility_link = responses.linker(store, server.base)("sakura", aid, 0)
    own = requests.get(facility_link, timeout=10)
    assert own.status_code == 200 and "保守業者(メディ保守)の回答: 該当します(2999年3月31日に修正予定)" in own.text
    assert "該当する部品を含まない" not in own.text  # momiji's answer is momiji's


def test_bad_links_and_bad_answers_change_nothing(hub, asked):
    store, aid, server, link = asked

    def post(url, **form):
        return requests.post(url, data={"group": "1", "facility": ["sakura", "momiji"]} | form, timeout=10)

    for form, status, text in (
            ({"status": "not_affected", "justification": "trust_us"}, 400, "needs a justification"),
            ({"status": "not_affected"}, 400, "needs a justification"),
            ({"status": "affected", "fix_date": "2020-01-01"}, 400, "is in the past"),
            ({"status": "affected", "fix_date": "next week"}, 400, "is not a date"),
            ({"status": "fixed"}, 400, "needs the version"),
            ({"status": "maybe"}, 400, "回答を選んでください"),
            ({"status": "under_investigation", "facility": ["kaede"]}, 400, "お尋ねしていない医療機関"),
            ({"status": "under_investigation", "facility": []}, 400, "医療機関を選んでください"),
            ({"status": "under_investigation", "group": "7"}, 400, "読み込み直して"),
            ({"status": "under_investigation", "note": "a\x1bb"}, 400, "control characters")):
        r = post(link, **form)
        assert (r.status_code, text in r.text) == (status, True), (form, r.status_code, r.text[-600:])
    assert store.vendors.answers() == {} and store.audit.list(action="vendor-answer") == []
    # Links: tampered, expired, another vendor's path, a facility's signature, a raised TLP.
    tampered = link[:-2] + ("AA" if not link.endswith("AA") else "BB")
    assert requests.get(tampered, timeout=10).status_code == 404
    assert requests.get(link.replace("/vendor/medi/", "/vendor/hokkaido/"), timeout=10).status_code == 404
    facility = responses.linker(store, server.base)("sakura", aid, 0)
    assert requests.get(server.base + "/vendor/medi/" + facility.split("/respond/sakura/", 1)[1],
                        timeout=10).status_code == 404
    assert requests.get(link.replace(".0/", ".4/"), timeout=10).status_code == 404
    expired = vendor_requests.linker(store, server.base, days=-1)("medi", aid, 0)
    r = requests.get(expired, timeout=10)
    assert r.status_code == 410 and "有効期限" in r.text
    assert post(expired, status="under_investigation").status_code == 410
    assert store.vendors.answers() == {}
    signature = link.rsplit("/", 1)[-1]
    assert signature not in str(store.audit.list()) and signature not in server.log()
    # Raised above what the request carried: the page no longer shows the advisory.
    hub.run("advisories", "triage", aid, "--tlp", "AMBER")
    raised = requests.get(link, timeout=10)
    assert raised.status_code == 404 and "DCMTK" not in raised.text
    # A removed vendor's link opens nothing.
    hub.run("advisories", "triage", aid, "--tlp", "CLEAR")
    assert requests.get(link, timeout=10).status_code == 200
    hub.run("vendors", "remove", "medi")
    assert requests.get(link, timeout=10).status_code == 404
