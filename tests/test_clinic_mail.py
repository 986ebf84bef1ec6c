"""Digests and flash alerts a clinic receptionist can act on: Japanese first (the analyst's text,
else JVN's entry, else the source's own Japanese), English only under 英語の原文, advice that fits
the kind of item, urgent first; mail that looks like the CEPTOAR's; unsubscribe pages that say
which address and what next. Rendered from ../shared/data, delivered to a real SMTP server,
parsed with the `email` package, and the HTML drawn by headless Chromium."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from ceptoar.core.extensions import props
from ceptoar.publishing import triage
from ceptoar.sharing.taxii.app import create_app
from ceptoar.store import Store
from tests import chromium
from tests.conftest import DATA, ROOT
from tests.taxii_fixtures import build_world

SUBSCRIBERS = """email,name,member,frequency,clearance,lang
yamada@clinic-a.example.jp,山田 太郎,assoc-green,daily,GREEN,ja
smith@hospital.example.com,John Smith,assoc-green,daily,GREEN,en
"""
RULE = "────────────────────────────────────"
# Five or more Latin words in a row with at least two English function words: a sentence, not a
# product name ("Microsoft Edge and Internet Explorer").
WORDS = re.compile(r"[A-Za-z][A-Za-z'’-]*(?:[ ,]+[A-Za-z][A-Za-z'’-]*){4,}")
FUNCTION_WORDS = {"a", "an", "the", "to", "of", "per", "or", "if", "is", "are", "be", "for", "in", "on", "with", "by",
                  "that", "this", "use", "apply", "should", "may", "can", "could", "it", "not", "has", "have"}


class English:
    @staticmethod
    def findall(text: str) -> list[str]:
        return [m for m in WORDS.findall(text)
                if sum(w.lower() in FUNCTION_WORDS for w in re.split(r"[ ,]+", m)) >= 2]


ENGLISH = English()
URL = re.compile(r"https?://\S+")
SUMMARY_JA = "院内のWindowsパソコンが、細工されたファイルを開くだけで乗っ取られるおそれがあります。"
ACTION_JA = "保守業者に連絡し、Windows Update が適用済みか確認してもらってください。"


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self._href, self._text = [], None, []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), []

    def handle_data(self, data):
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text)))
            self._href = None


@pytest.fixture
def clinic(tmp_path, smtp, monkeypatch):
    """The test world (KEV, two CISA CSAF medical advisories) plus: a VULDEF entry for a published
    KEV CVE (JVN's real entry JVNDB-2022-000097 with its first CVE replaced by the KEV one), an
    MHLW circular, an incident lesson, and the analyst's Japanese text on one KEV advisory."""
    controller, sink = smtp
    monkeypatch.setenv("CEPTOAR_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CEPTOAR_SMTP_PORT", str(controller.port))
    w = build_world(tmp_path)
    hub, store = w.hub, Store(w.db)
    (tmp_path / "subs.csv").write_text(SUBSCRIBERS, encoding="utf-8")
    hub.run("subscribers", "import", str(tmp_path / "subs.csv"))
    kev = store.advisories.list(source="kev", search="Microsoft", status="published")
    w.covered, w.explained = kev[0], kev[1]
    doc = (DATA / "jvn/myjvn_np_getVulnDetailInfo_hnd_JVNDB-2022-000097.xml").read_text(encoding="utf-8")
    (tmp_path / "vuldef.xml").write_text(doc.replace("CVE-2022-41993", w.covered["cves"][0]), encoding="utf-8")
    hub.run("sources", "add", "jvn-detail", "https://feeds.example/vuldef", "--kind", "jvn")
    hub.run("ingest", str(tmp_path / "vuldef.xml"), "--source", "jvn-detail")
    hub.run("sources", "add", "mhlw", "https://feeds.example/mhlw", "--kind", "rss")
    hub.run("ingest", str(ROOT / "feeds/samples/mhlw.rdf"), "--source", "mhlw")
    circular = store.advisories.list(source="mhlw")[0]
    hub.run("sources", "add", "jvndb", "https://feeds.example/jvndb", "--kind", "jvn")  # JVN iPedia's own RSS
    hub.run("ingest", str(DATA / "jvn/vulsdata_jvndb_2023.rdf"), "--source", "jvndb")
    w.jvndb = next(a for a in store.advisories.list(source="jvndb") if "Linux Kernel" in (a["title"] or ""))
    inc = json.loads(hub.run("incidents", "report", "--facility", "さくら診療所", "--facility-type", "clinic",
                             "--prefecture", "東京都", "--member", "assoc-green", "--summary", "ランサムウェア感染",
                             "--format", "json").stdout)
    out = hub.run("incidents", "share", inc["id"], "--tlp", "GREEN", "--summary",
                  "VPN装置の脆弱性を放置した診療所でランサムウェア被害。VPN装置の更新とバックアップの分離が有効でした。").stdout
    lesson = re.search(r"report--[0-9a-f-]{36}", out).group(0)
    for aid in (circular["id"], lesson, w.jvndb["id"]):
        triage.triage(store, aid, "test", medical=True)
    triage.publish(store, [w.covered["id"], circular["id"], lesson, w.jvndb["id"]], "test")  # covered: again
    hub.run("advisories", "triage", w.explained["id"], "--summary-ja", SUMMARY_JA, "--action-ja", ACTION_JA)
    w.circular, w.lesson, w.sink, w.controller, w.store = circular, lesson, sink, controller, store
    return w


def send_digest(w) -> tuple[str, str, object]:
    r = w.hub.run("digest", "send", "--frequency", "daily", "--smtp-host", "127.0.0.1", "--smtp-port",
                  str(w.controller.port), "--format", "json")
    assert json.loads(r.stdout)[0]["failed"] == 0
    (msg,) = w.sink.parsed("yamada@clinic-a.example.jp")
    return msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content(), msg


def items_of(text: str) -> list[str]:
    return text.split(RULE)[1:-1]


def item_about(items: list[str], needle: str) -> str:
    (found,) = [i for i in items if needle in i]
    return found


def japanese_part(item: str) -> str:
    """An item's text outside its 英語の原文 block (which always comes last), links left out."""
    return URL.sub("", item.split("英語の原文:")[0])


def test_japanese_digest_reads_as_japanese_with_english_apart(clinic, monkeypatch):
    monkeypatch.setenv("CEPTOAR_DIGEST_MAX_ITEMS", "0")  # every item in full: this test reads items
    text, html, msg = send_digest(clinic)
    items = items_of(text)
    # The analyst's text comes first and replaces the fixed phrasing.
    explained = item_about(items, SUMMARY_JA)
    assert explained.index("概要: " + SUMMARY_JA) < explained.index("対応: " + ACTION_JA) < explained.index("英語の原文:")
    assert "ベンダーの指示に従って" not in explained
    # JVN's Japanese entry for a KEV CVE: its title, overview (list markup as lines) and solution,
    # linked to JVN, with the English source linked below.
    covered = item_about(items, "電子入札コアシステムにおける複数の脆弱性")
    assert "悪用が確認されています" in covered and "重要度: 高" in covered
    assert "\n        ・クロスサイトスクリプティング (CWE-79)" in covered.replace("\r\n", "\n")
    assert "対応: [パッチを適用する] 開発者が提供する情報をもとにパッチを適用してください。" in covered
    assert "詳細: https://jvndb.jvn.jp/ja/contents/2022/JVNDB-2022-000097.html (JVN、日本語)" in covered
    original = covered.split("英語の原文:")[1]
    assert clinic.covered["title"] in original and f"https://nvd.nist.gov/vuln/detail/{clinic.covered['cves'][0]}" \
        in original
    # No English sentence outside 英語の原文 wherever Japanese text exists (here: every item, since
    # KEV and CSAF items get a fixed Japanese title naming the product).
    english = {i.splitlines()[1]: ENGLISH.findall(japanese_part(i)) for i in items if ENGLISH.findall(japanese_part(i))}
    assert not english, list(english.items())[:3]
    # JVN iPedia's own Japanese entry: as written, nothing under 英語の原文.
    jvndb = item_about(items, "Linux の Linux Kernel における NULL ポインタデリファレンスに関する脆弱性")
    assert "概要: Linux の Linux Kernel には、NULL ポインタデリファレンスに関する脆弱性が存在します。" in jvndb
    assert "英語の原文" not in jvndb and "対象製品: Linux Kernel" in jvndb and "CVE: CVE-2023-" in jvndb
    # Kind-aware advice: the circular and the lesson are not told to update anything.
    circular = item_about(items, "医療機関におけるサイバーセキュリティ対策の徹底について")
    lesson = item_about(items, "【事例共有】")
    assert "内容をお読みになり" in circular and "院内で共有し" in lesson
    for i in (circular, lesson):
        assert "アップデート" not in i.split("対応:")[1] and "修正版" not in i.split("対応:")[1]
    # CSAF remediation categories in fixed Japanese; the vendor's free text stays as written, apart.
    csaf = item_about(items, "MicroDicom DICOM Viewer の脆弱性")
    assert "対応: 製造元が被害を抑える対策(緩和策)を示しています。" in csaf
    assert csaf.index("英語の原文:") < csaf.index("MicroDicom has provided a fix")
    # Urgent first: exploited, then critical, high, others.
    ranks = [0 if "悪用が確認されています" in i else 1 if "重要度: 緊急" in i else 2 if "重要度: 高" in i else 3
             for i in items]
    assert ranks == sorted(ranks) and ranks[0] == 0 and ranks[-1] == 3
    # The no-CVE layout: each field on its own line, nothing run together.
    for i in (circular, lesson):
        lines = [line for line in i.replace("\r\n", "\n").split("\n") if line.strip()]
        assert lines[1].startswith("  重要度: ") and "対応" not in lines[1] and "CVE" not in i
        assert any(line.startswith("  対応: ") for line in lines) and any(line.startswith("  詳細: ") for line in lines)
    # At most five CVE ids per item.
    assert all(line.count("CVE-") <= 5 for i in items for line in i.splitlines() if line.strip().startswith("CVE:"))
    # The HTML part: the same, English only inside lang="en" blocks.
    outside = re.sub(r'<div lang="en".*?</div>', "", html, flags=re.S)
    outside = URL.sub("", re.sub(r"<[^>]+>", " ", re.sub(r"<head>.*?</head>", "", outside, flags=re.S)))
    assert not ENGLISH.findall(outside.replace("CISA KEV", "")), ENGLISH.findall(outside)[:3]
    assert html.count("<div lang=\"en\"") >= len(items) - 3 and SUMMARY_JA in html  # circular, lesson, JVN: none


def test_mail_looks_like_it_comes_from_the_ceptoar(clinic, monkeypatch):
    monkeypatch.setenv("CEPTOAR_DIGEST_MAX_ITEMS", "0")  # every item in full: this test reads items
    text, html, msg = send_digest(clinic)
    assert msg["Date"].endswith("+0900")
    assert msg["From"].addresses[0].display_name == "医療セプター"
    assert msg["Message-ID"].strip("<>").endswith("@" + msg["From"].addresses[0].domain)
    assert not list(msg.iter_attachments())
    footer = "このメールはAssociation assoc-greenの会員向けに医療セプターが配信しています。"
    assert footer in text and footer in html
    assert "サイバー攻撃が疑われたら (院内掲示用)" in text and "サイバー攻撃が疑われたら (院内掲示用)" in html
    parser = Links()
    parser.feed(html)
    assert parser.links
    for href, shown in parser.links:  # every link's host is visible as its text
        assert href == shown.strip(), (href, shown)
    english = clinic.sink.parsed("smith@hospital.example.com")[0].get_body(("plain",)).get_content()
    assert "Sent by the medical CEPTOAR to members of Association assoc-green." in english
    assert "英語の原文" not in english and "What to do:" in english


def test_clinic_text_is_versioned_audited_published_and_needs_ja_lists_the_rest(clinic):
    hub, store = clinic.hub, clinic.store
    aid = clinic.explained["id"]
    needs = {r["id"] for r in hub.json("advisories", "list", "--needs-ja")}
    assert aid not in needs and clinic.covered["id"] not in needs  # analyst's text; JVN's entry
    assert clinic.circular["id"] not in needs and clinic.lesson not in needs  # written in Japanese
    uncovered = [r["id"] for r in store.advisories.list(source="kev", status="published")
                 if r["id"] not in (aid, clinic.covered["id"])]
    assert set(uncovered) <= needs
    stix = json.loads(hub.run("advisories", "show", aid, "--format", "stix").stdout)
    report = next(o for o in stix["objects"] if o["id"] == aid)
    assert props(report)["clinic"] == {"summary_ja": SUMMARY_JA, "action_ja": ACTION_JA}
    covered = next(o for o in json.loads(hub.run("advisories", "show", clinic.covered["id"], "--format",
                                                 "stix").stdout)["objects"] if o["id"] == clinic.covered["id"])
    assert props(covered)["clinic"]["jvn"]["id"] == "JVNDB-2022-000097"
    before = store.advisories.get(aid)["published_version"]
    hub.run("advisories", "triage", aid, "--action-ja", "")  # removes the action, keeps the summary
    after = store.advisories.get(aid)
    assert after["clinic"] == {"summary_ja": SUMMARY_JA} and after["published_version"] > before
    audit = [e for e in hub.json("audit", "list") if e["action"] == "triage" and e["target"] == aid]
    assert audit[-1]["details"]["clinic"] == {"from": {"summary_ja": SUMMARY_JA, "action_ja": ACTION_JA},
                                             "to": {"summary_ja": SUMMARY_JA}}
    bad = hub.run("advisories", "triage", aid, "--summary-ja", "悪い\x1b[31m文字", ok=None)
    assert bad.exit_code != 0 and "control characters" in bad.output
    nothing = hub.run("advisories", "triage", aid, "--summary-ja", SUMMARY_JA, ok=None)
    assert nothing.exit_code != 0 and "nothing to change" in nothing.output


def test_flash_alert_meets_the_same_standards(clinic):
    hub, store, sink = clinic.hub, clinic.store, clinic.sink
    start = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    end = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    hub.run("alert-periods", "add", "G7 サミット", "--start", start, "--end", end)
    kev = store.advisories.list(source="kev", search="Citrix", status="new")[0]
    hub.run("advisories", "triage", kev["id"], "--severity", "critical")
    assert "flash alert queued" in hub.run("advisories", "publish", kev["id"]).output
    (flash,) = [m for m in sink.parsed("yamada@clinic-a.example.jp") if "緊急" in m["Subject"]]
    text = flash.get_body(("plain",)).get_content()
    (item,) = items_of(text)
    assert "重要度: 緊急" in item and "悪用が確認されています" in item and " の脆弱性" in item.splitlines()[1]
    assert not ENGLISH.findall(japanese_part(item)) and kev["title"] in item.split("英語の原文:")[1]
    assert flash["Date"].endswith("+0900") and flash["From"].addresses[0].display_name == "医療セプター"
    assert "このメールはAssociation assoc-greenの会員向けに医療セプターが配信しています。" in text
    assert "このメールはAssociation assoc-greenの会員向けに医療セプターが配信しています。" in \
        flash.get_body(("html",)).get_content()


def test_html_part_fits_a_phone_and_a_desktop(clinic, tmp_path):
    from PIL import Image

    _text, html, _msg = send_digest(clinic)
    page = tmp_path / "digest.html"
    page.write_text(html, encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", "<script>document.body.setAttribute('data-overflow', "
                                  "document.documentElement.scrollWidth - window.innerWidth)</script></body>"),
                     encoding="utf-8")
    for width in (390, 900):
        dom = chromium.run(probe, tmp_path, f"--window-size={width},2400", "--dump-dom").stdout
        assert 'data-overflow="0"' in dom, re.search(r'data-overflow="[^"]*"', dom)
        shot = tmp_path / f"digest-{width}.png"
        chromium.run(page, tmp_path, f"--window-size={width},2400", f"--screenshot={shot}")
        img = Image.open(shot).convert("RGB")
        assert img.size == (width, 2400)
        px = img.load()
        # Nothing is cut off at the right edge (the body's margin stays blank) ...
        edge = [(x, y) for x in range(width - 4, width) for y in range(0, 2400, 3) if sum(px[x, y]) < 700]
        assert not edge, edge[:5]
        # ... and the page is drawn: the TLP banner and text.
        ink = sum(1 for x in range(0, width, 3) for y in range(0, 2400, 6) if sum(px[x, y]) < 300)
        assert ink > 500


def test_unsubscribe_pages_show_the_address_a_contact_and_the_way_back(clinic):
    store = clinic.store
    token = store.subscribers.get("yamada@clinic-a.example.jp")["token"]
    client = create_app(str(clinic.db)).test_client()
    ask = client.get(f"/unsubscribe/{token}").get_data(as_text=True)
    assert "y*****@clinic-a.example.jp" in ask and "yamada@" not in ask
    assert 'name="viewport"' in ask and "ceptoar@example.jp" in ask and "閉じて" in ask
    done = client.post(f"/unsubscribe/{token}", data="List-Unsubscribe=One-Click",
                       content_type="application/x-www-form-urlencoded").get_data(as_text=True)
    assert "配信を停止しました" in done and 'value="resubscribe"' in done and "ceptoar@example.jp" in done
    assert store.subscribers.get("yamada@clinic-a.example.jp")["unsubscribed"]
    again = client.post(f"/unsubscribe/{token}", data={"action": "resubscribe"}).get_data(as_text=True)
    assert "配信を再開しました" in again
    assert store.subscribers.get("yamada@clinic-a.example.jp")["unsubscribed"] is None
    actions = [e["action"] for e in clinic.hub.json("audit", "list") if e["target"] == "yamada@clinic-a.example.jp"]
    assert actions[-2:] == ["unsubscribe", "resubscribe"]
    invalid = client.get("/unsubscribe/not-a-token")
    body = invalid.get_data(as_text=True)
    assert invalid.status_code == 404 and "次にすること" in body and "ceptoar@example.jp" in body


def test_links_show_their_host_and_shorteners_are_not_clickable():
    from ceptoar.clinics.digest.render import link

    page = "https://www.jpcert.or.jp/at/2026/at260001.html"
    assert link(page) == {"href": page, "text": page}
    for hidden in ("https://bit.ly/3xYz", "http://t.co/abc", "https://www.tinyurl.com/y", "javascript:alert(1)"):
        assert link(hidden) == {"href": None, "text": hidden}
    assert link("https://evil.example/\x1b[31m")["href"] is None
    assert link("") is None and link(None) is None
