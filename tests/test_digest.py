"""Digests, flash alerts, subscribers and exports, delivered to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ceptoar.clinics.digest.render import JST
from ceptoar.sharing.taxii.app import create_app
from ceptoar.store import Store
from tests.conftest import ROOT
from tests.taxii_fixtures import build_world, free_port

CSV = """email,name,member,frequency,clearance,lang
yamada@clinic-a.example.jp,山田 太郎,assoc-green,daily,GREEN,ja
suzuki@clinic-b.example.jp,鈴木 花子,assoc-green,daily,CLEAR,ja
smith@hospital.example.com,John Smith,assoc-green,daily,GREEN,en
weekly@clinic-c.example.jp,週次 担当,assoc-green,weekly,GREEN,ja
amber@assoc.example.jp,AMBER 担当,assoc-amber,daily,AMBER,ja
not-an-address,壊れた行,assoc-green,daily,GREEN,ja
x@clinic-d.example.jp,会員なし,nobody,daily,GREEN,ja
y@clinic-e.example.jp,頻度違い,assoc-green,hourly,GREEN,ja
reject@clinic-f.example.jp,受信拒否,assoc-green,daily,GREEN,ja
"""


@pytest.fixture
def world(tmp_path):
    w = build_world(tmp_path)
    (tmp_path / "subs.csv").write_text(CSV, encoding="utf-8")
    return w


def send(world, controller, *extra, ok=True) -> dict:
    """Run a daily digest; the JSON summary (exit status 1 when a recipient was refused)."""
    r = world.hub.run("digest", "send", "--frequency", "daily", "--smtp-host", "127.0.0.1", "--smtp-port",
                      str(controller.port), "--format", "json", *extra, ok=None)
    assert (r.exit_code == 0) is ok, r.output
    return json.loads(r.stdout)[0]


def test_an_unreadable_subscriber_csv_is_a_clear_error(world, tmp_path):
    (tmp_path / "huge.csv").write_text("email,name,member\na@clinic.example.jp," + "y" * 200000 + ",assoc-green\n",
                                       encoding="utf-8")
    r = world.hub.run("subscribers", "import", str(tmp_path / "huge.csv"), ok=None)
    assert r.exit_code == 1 and "line 2: unreadable CSV" in r.output and "Traceback" not in r.output
    assert not world.hub.json("subscribers", "list")


def test_subscriber_import_reports_bad_lines_and_updates(world, tmp_path):
    r = world.hub.run("subscribers", "import", str(tmp_path / "subs.csv"), ok=None)
    assert r.exit_code == 1
    assert "subs.csv:7: invalid e-mail address 'not-an-address'" in r.output
    assert "subs.csv:8: unknown member 'nobody'" in r.output
    assert "subs.csv:9: frequency must be daily or weekly" in r.output
    assert "6 added, 0 updated, 0 skipped: unsubscribed, 3 rejected" in r.output
    (tmp_path / "again.csv").write_text("email,name,member,frequency,clearance,lang\n"
                                        "YAMADA@clinic-a.example.jp,山田 太郎 (院長),assoc-green,weekly,GREEN,ja\n",
                                        encoding="utf-8")
    assert "0 added, 1 updated" in world.hub.run("subscribers", "import", str(tmp_path / "again.csv")).output
    subs = world.hub.json("subscribers", "list")
    assert len(subs) == 6
    yamada = next(s for s in subs if s["email"] == "yamada@clinic-a.example.jp")
    assert yamada["name"] == "山田 太郎 (院長)" and yamada["frequency"] == "weekly"
    assert "token" not in yamada
    world.hub.run("subscribers", "add", "new@clinic-g.example.jp", "--member", "assoc-green", "--clearance", "GREEN")
    world.hub.run("subscribers", "remove", "new@clinic-g.example.jp")
    assert len(world.hub.json("subscribers", "list")) == 6


def test_digest_mime_content_and_headers(world, tmp_path, smtp, monkeypatch):
    monkeypatch.setenv("CEPTOAR_DIGEST_MAX_ITEMS", "0")  # every item in full: this test reads items
    controller, sink = smtp
    world.hub.run("subscribers", "import", str(tmp_path / "subs.csv"), ok=None)
    summary = send(world, controller, ok=False)  # one recipient refused → exit 1
    assert summary["sent"] == 4 and summary["failed"] == 1  # reject@ refused; weekly not in a daily run
    store = Store(world.db)
    green_visible = store.membership.reports(["kev", "medical", "jma-amber"], 1, None, "2999-01-01T00:00:00Z")
    (msg,) = sink.parsed("yamada@clinic-a.example.jp")
    today = datetime.now(UTC).astimezone(JST)
    assert msg["Subject"] == f"【医療セプター】セキュリティ情報 {today.year}年{today.month}月{today.day}日 ({len(green_visible)}件)"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "TLP:GREEN" in text and "医療技術情報推進室" in text and "03-3595-2430" in text
    assert "システムベンダー" in text and "医療セプター事務局" in text
    assert "CVE-2024-22100" in text and "<html" in html and "CVE-2024-22100" in html
    token = store.subscribers.list()[0]["token"]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/unsubscribe/" in msg["List-Unsubscribe"] and "/unsubscribe/" in text
    # On the wire: the URL in angle brackets as it is, never RFC 2047 encoded (a client must read it).
    raw = next(data for rcpt, data in sink.messages if "yamada@clinic-a.example.jp" in rcpt)
    assert re.search(rb"\r\nList-Unsubscribe: <https?://[^>\s]+/unsubscribe/[A-Za-z0-9_-]+>,\r\n <mailto:", raw)
    assert msg["Message-ID"].endswith("@example.jp>")  # the sender's own domain (contacts.toml)
    assert msg["To"].addresses[0].display_name == "山田 太郎"
    # CLEAR subscriber: nothing above CLEAR; English subscriber gets English
    (clear,) = sink.parsed("suzuki@clinic-b.example.jp")
    assert "TLP:GREEN" not in clear.get_body(("plain",)).get_content()
    (en,) = sink.parsed("smith@hospital.example.com")
    assert en["Subject"].startswith("[Medical CEPTOAR] Security information")
    (amber,) = sink.parsed("amber@assoc.example.jp")
    assert "TLP:AMBER" in amber.get_body(("plain",)).get_content()
    # Rerun: nobody gets it twice; the refusal is retried.
    summary = send(world, controller, ok=False)
    assert summary["sent"] == 0 and summary["failed"] == 1  # the sent ones are past their cursor
    assert len(sink.messages) == 4
    failed = store.deliveries.states(summary["run"], ["reject@clinic-f.example.jp"])["reject@clinic-f.example.jp"]
    assert failed["attempts"] == 2 and "550" in failed["last_error"]
    assert token and token not in json.dumps(world.hub.json("audit", "list"))


def test_segments_render_once_and_empty_digests_are_not_sent(world, tmp_path, smtp):
    controller, sink = smtp
    world.hub.run("subscribers", "import", str(tmp_path / "subs.csv"), ok=None)
    world.hub.run("members", "add", "quiet", "--name", "No grants", "--clearance", "GREEN")
    world.hub.run("subscribers", "add", "quiet@clinic-h.example.jp", "--member", "quiet", "--clearance", "GREEN")
    summary = send(world, controller, ok=False)
    assert summary["rendered"] == 4  # ja GREEN, ja CLEAR, en GREEN, AMBER: one rendering each
    assert summary["empty_segments"] == 1
    assert not sink.parsed("quiet@clinic-h.example.jp")
    bodies = {rcpt[0]: m for rcpt, m in sink.messages}
    a = bodies["yamada@clinic-a.example.jp"].split(b"\r\n\r\n", 1)[1]
    b = [m for m in sink.parsed() if m["To"].addresses[0].username == "reject"]
    assert not b
    assert a.count(b"/unsubscribe/") == 3  # text, and HTML (the link and its visible text)


def test_dead_smtp_server_stops_with_a_clear_message(world, tmp_path):
    world.hub.run("subscribers", "import", str(tmp_path / "subs.csv"), ok=None)
    r = world.hub.run("digest", "send", "--frequency", "daily", "--smtp-host", "127.0.0.1", "--smtp-port",
                      str(free_port()), ok=None)
    assert r.exit_code == 1 and "cannot use SMTP server" in r.output and "Traceback" not in r.output
    assert Store(world.db).count("deliveries") == 0


def test_out_writes_eml_and_dry_run_records_nothing(world, tmp_path):
    world.hub.run("subscribers", "import", str(tmp_path / "subs.csv"), ok=None)
    out = tmp_path / "exports" / "digests"
    world.hub.run("digest", "send", "--frequency", "daily", "--out", str(out))
    files = sorted(p.name for p in out.glob("*.eml"))
    assert "yamada@clinic-a.example.jp.eml" in files and len(files) == 5
    msg = email.message_from_bytes((out / "yamada@clinic-a.example.jp.eml").read_bytes(), policy=email.policy.default)
    assert msg["Subject"].startswith("【医療セプター】")
    world.hub.run("digest", "send", "--frequency", "daily", "--dry-run")
    assert Store(world.db).count("deliveries") == 0
    preview = world.hub.run("digest", "preview", "--member", "assoc-green", "--clearance", "GREEN").output
    assert "Subject: 【医療セプター】" in preview and "医療技術情報推進室" in preview
    html = world.hub.run("digest", "preview", "--member", "assoc-green", "--html").output
    assert "<html" in html


def test_kill_halfway_then_rerun_sends_each_once(world, tmp_path, smtp):
    controller, sink = smtp
    store = Store(world.db)
    lines = ["email,name,member,frequency,clearance,lang"] + [
        f"clinic{i:03d}@example.jp,診療所 {i},assoc-green,daily,GREEN,ja" for i in range(60)]
    (tmp_path / "many.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    world.hub.run("subscribers", "import", str(tmp_path / "many.csv"))
    cmd = [sys.executable, "-m", "ceptoar.cli", "--db", str(world.db), "digest", "send", "--frequency", "daily",
           "--smtp-host", "127.0.0.1", "--smtp-port", str(controller.port), "--base-url", "https://hub.example.jp",
           "--rate", "40"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(sink.messages) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = len(sink.messages)
    assert 20 <= first < 60
    # The delivery log is written in batches (at most LOG_SECONDS apart, at 40 messages/s here): what
    # the kill lost is at most the last batch, resent with the same Message-ID.
    sent_before = store.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'sent'")
    assert first - 45 <= sent_before <= first
    subprocess.run(cmd[:-2], cwd=ROOT, check=True, capture_output=True)
    recipients = [r for rcpt, _ in sink.messages for r in rcpt]
    # Resent: those sent but not recorded (one more if a message was in flight at the kill).
    assert len(set(recipients)) == 60 and 0 <= len(recipients) - 60 - (first - sent_before) <= 1
    ids: dict[str, set] = {}
    for rcpt, data in sink.messages:
        ids.setdefault(rcpt[0], set()).add(email.message_from_bytes(data, policy=email.policy.default)["Message-ID"])
    assert all(len(v) == 1 for v in ids.values())  # a resend is recognisable


def test_unsubscribe_cli_and_one_click(world, tmp_path, smtp):
    controller, sink = smtp
    world.hub.run("subscribers", "import", str(tmp_path / "subs.csv"), ok=None)
    store = Store(world.db)
    tokens = {s["email"]: s["token"] for s in store.subscribers.list()}
    world.hub.run("unsubscribe", tokens["suzuki@clinic-b.example.jp"])
    client = create_app(str(world.db)).test_client()
    page = client.get(f"/unsubscribe/{tokens['smith@hospital.example.com']}")
    assert page.status_code == 200 and "配信を停止" in page.get_data(as_text=True)
    one_click = client.post(f"/unsubscribe/{tokens['smith@hospital.example.com']}",
                            data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded")
    assert one_click.status_code == 200
    assert client.get("/unsubscribe/not-a-token").status_code == 404
    send(world, controller, ok=False)
    got = {r for rcpt, _ in sink.messages for r in rcpt}
    assert "suzuki@clinic-b.example.jp" not in got and "smith@hospital.example.com" not in got
    assert "yamada@clinic-a.example.jp" in got
    assert not any("/unsubscribe/" in (r["path"] or "") and r["path"] != "/unsubscribe/…"
                   for r in world.hub.json("audit", "list"))


def test_alert_period_flash_and_digest_notice(world, tmp_path, smtp, monkeypatch):
    controller, sink = smtp
    world.hub.run("subscribers", "import", str(tmp_path / "subs.csv"), ok=None)
    start = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    end = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    world.hub.run("alert-periods", "add", "G7 サミット", "--start", start, "--end", end, "--note", "首脳会合")
    assert world.hub.json("alert-periods", "list")[0]["name"] == "G7 サミット"
    monkeypatch.setenv("CEPTOAR_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CEPTOAR_SMTP_PORT", str(controller.port))
    store = Store(world.db)
    kev = store.advisories.list(source="kev", search="Citrix", status="new")[0]
    world.hub.run("advisories", "triage", kev["id"], "--severity", "critical")
    r = world.hub.run("advisories", "publish", kev["id"])
    assert "flash alert queued" in r.output and "flash alert flash-" in r.output
    flashes = [m for m in sink.parsed() if "緊急" in m["Subject"] or "URGENT" in m["Subject"]]
    flash_rcpts = {r for rcpt, data in sink.messages for r in rcpt}
    assert flashes and "yamada@clinic-a.example.jp" in flash_rcpts and "weekly@clinic-c.example.jp" in flash_rcpts
    assert "amber@assoc.example.jp" not in flash_rcpts  # its member has no collection holding it
    text = flashes[0].get_body(("plain",)).get_content()
    assert "G7 サミット" in text and kev["title"] in text
    low = store.advisories.list(source="kev", search="Adobe", status="new")[0]
    world.hub.run("advisories", "triage", low["id"], "--severity", "low")
    assert "flash" not in world.hub.run("advisories", "publish", low["id"]).output
    sink.messages.clear()
    send(world, controller, ok=False)
    digest = sink.parsed("yamada@clinic-a.example.jp")[0].get_body(("plain",)).get_content()
    assert "警戒強化期間中です" in digest and "G7 サミット" in digest


def test_exports_bundle_validates_and_csv(world, tmp_path):
    from stix2validator import ValidationOptions, validate_file
    out = tmp_path / "exports" / "medical.json"
    world.hub.run("export", "bundle", "--collection", "medical", "-o", str(out))
    bundle = json.loads(out.read_text(encoding="utf-8"))
    assert {o["type"] for o in bundle["objects"]} >= {"report", "vulnerability", "identity", "marking-definition"}
    results = validate_file(str(out), ValidationOptions(strict=False, version="2.1"))
    assert results.is_valid, [str(e) for r in results.object_results for e in r.errors]
    everything = json.loads(world.hub.run("export", "bundle").stdout)
    assert len(everything["objects"]) > len(bundle["objects"])
    csv_text = world.hub.run("export", "csv", "--collection", "kev").stdout
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("id,title,source,published")
    assert len(lines) - 1 == len(world.hub.json("advisories", "list", "--status", "published", "--source", "kev"))


def test_pipelined_delivery_to_a_pipelining_server(world, tmp_path):
    """RFC 2920 path (aiosmtpd does not offer PIPELINING): the benchmark's sink does."""
    from bench.digest import SINK
    world.hub.run("subscribers", "import", str(tmp_path / "subs.csv"), ok=None)
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert sink.stdout.readline().strip() == "ready"
    r = world.hub.run("digest", "send", "--frequency", "daily", "--smtp-host", "127.0.0.1", "--smtp-port",
                      str(port), "--format", "json")
    received = int(sink.communicate("")[0].strip().splitlines()[-1].split()[0])
    summary = json.loads(r.stdout)[0]
    assert summary["sent"] == received == 5 and summary["failed"] == 0  # the sink accepts reject@ too


def test_japanese_digest_items_are_urgent_first_and_plain(world, tmp_path, smtp, monkeypatch):
    """KEV items say exploited, are at least 高 and come first; no US deadline; KEV's standard
    required action in Japanese with the English original apart; at most five CVE ids; JST Date."""
    monkeypatch.setenv("CEPTOAR_DIGEST_MAX_ITEMS", "0")  # every item in full: this test reads items
    controller, sink = smtp
    world.hub.run("subscribers", "import", str(tmp_path / "subs.csv"), ok=None)
    send(world, controller, ok=False)
    (msg,) = sink.parsed("yamada@clinic-a.example.jp")
    assert msg["Date"].endswith("+0900")
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "期限" not in text and "CISA due" not in text
    assert " の会員向け" not in text and "日 のセキュリティ情報" not in text
    items = text.split("────────────────────────────────────")[1:-1]
    assert items, text[:500]
    kev = [i for i in items if "悪用が確認されています" in i]
    assert kev and items[:len(kev)] == kev  # exploited first
    assert all("重要度: 緊急" in i or "重要度: 高" in i for i in kev)
    standard = [i for i in kev if "Apply mitigations per vendor instructions or discontinue" in i
                or ("Apply mitigations per vendor instructions" in i and "BOD 22-01" in i)]
    bad = [i for i in standard if not (0 <= i.find("ベンダーの指示に従って緩和策") < i.find("英語の原文:")
                                       < i.find("Apply mitigations"))]
    assert standard and not bad, bad[:1]
    for i in items:
        for line in i.splitlines():
            if line.strip().startswith("CVE:"):
                assert line.count("CVE-") <= 5
    assert "英語の原文" in html and 'lang="en"' in html


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=120), address=st.sampled_from(["a@clinic.example.jp", "x.y+z@jma.example.jp"]))
def test_the_fast_to_header_reads_back_as_the_name_and_address(name, address):
    """Digests build To by hand (the header API costs milliseconds a name): the address and the
    cleaned name read back exactly, as RFC 2047 says (whitespace between encoded words is dropped;
    CPython's modern parser keeps it, so encoded names are decoded with the legacy one); no line
    breaks but the folds."""
    from email.header import decode_header, make_header
    from email.parser import BytesParser
    from email.policy import default

    from ceptoar.core.mail import clean_name, to_header

    raw = to_header(name, address)
    parsed = BytesParser(policy=default).parsebytes(raw + b"\r\n")["To"].addresses[0]
    assert parsed.addr_spec == address
    cleaned = clean_name(name)
    if cleaned.isascii() and "=?" not in cleaned:
        assert parsed.display_name == cleaned
    else:
        phrase = raw.decode("ascii")[4:].rsplit("\r\n <", 1)[0].replace("\r\n ", " ")
        assert all(re.fullmatch(r"=\?utf-8\?[bq]\?[A-Za-z0-9+/=!*_-]*\?=", w) for w in phrase.split(" "))
        assert str(make_header(decode_header(phrase))) == cleaned
    assert raw.endswith(b"\r\n") and all(line.startswith(b" ") for line in raw[:-2].split(b"\r\n")[1:])
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.sampled_from([".", "..", ".x", "x.", "", "a\n.b", "本文"]), max_size=8))
def test_dot_stuffing_leaves_no_line_that_ends_the_data_early(lines):
    from ceptoar.core.mail import dot_stuffed

    data = "\r\n".join(lines).encode()
    stuffed = dot_stuffed(data)
    assert b"\n.\r\n" not in stuffed and not stuffed.startswith(b".\r\n") and stuffed != b"."
    # What a server does on receipt (drop the first '.' of a line) gives the message back.
    assert re.sub(rb"(?m)^\.", b"", stuffed) == data


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(st.sampled_from([".", "..", "a", "\r\n", "\r\n.", "@@UNSUBSCRIBE_URL@@", "@@FACILITY_TEXT@@\r\n",
                                        "@@FACILITY_HTML@@\r\n", "本文"]), max_size=12),
       text=st.sampled_from(["", ".x\n", "a\n.b\n", "..\n"]), html=st.sampled_from(["", "<p>.</p>\n", ".\n"]),
       name=st.text(max_size=20))
def test_a_message_stuffed_by_pieces_is_the_message_stuffed_whole(pieces, text, html, name):
    """compose(stuffed=True) cuts the segment once and stuffs its pieces; the result must be what
    stuffing the whole composed message gives."""
    from ceptoar.clinics.digest.render import Rendered, compose
    from ceptoar.core.mail import dot_stuffed

    r = Rendered(subject="s", head=b"Subject: s\r\n", body="".join(pieces).encode(), count=1, tlp="CLEAR")
    kw = {"message_id": "<m@example.jp>", "email": "a@clinic.example.jp", "name": name, "unsubscribe_url": "https://h.example.jp/u/t",
          "block": (text, html)}
    assert compose(r, stuffed=True, **kw) == dot_stuffed(compose(r, **kw))
