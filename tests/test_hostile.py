"""Hostile content (issue 10): feed text, subscriber data and member submissions never reach a
clinic's mail client, an analyst's terminal or spreadsheet, or the file system as anything but text."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import os
import re
import stat

import pytest

from ceptoar.store import Store
from tests import chromium
from tests.trust_helpers import report, write_bundle

ESCAPES = "\x1b]52;c;ZXZpbA==\x07\x1b[2J\x9b31m\u202e"


def hostile_world(hub, tmp_path, title: str, url: str, *, member_clearance: str = "GREEN"):
    """One published advisory whose source text is `title` and `url`, a member and a subscriber."""
    hub.run("sources", "add", "partner", "https://partner.example/stix", "--kind", "stix")
    rep = report(title, [], external_references=[{"source_name": "partner", "url": url}])
    hub.run("ingest", str(write_bundle(tmp_path / "hostile.json", [rep])), "--source", "partner")
    (row,) = hub.json("advisories", "list", "--source", "partner")
    hub.run("advisories", "triage", row["id"], "--medical")
    hub.run("advisories", "publish", row["id"])
    hub.run("members", "add", "jma", "--name", "日本医師会", "--clearance", member_clearance)
    hub.run("members", "grant", "jma", "medical")
    return row["id"]


def html_part(path) -> str:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return msg.get_body(("html",)).get_content()


def test_feed_markup_reaches_the_clinics_mail_as_text(hub, tmp_path, feed_server, monkeypatch):
    monkeypatch.setenv("CEPTOAR_DIGEST_MAX_ITEMS", "0")  # every item in full: this test reads items
    canary = feed_server.base + "/canary"
    title = (f'<img src="{canary}/img" onerror="fetch(\'{canary}/onerror\')"><script src="{canary}/script"></script>'
             f"<script>document.title='PWNED';fetch('{canary}/inline')</script>"
             f'<form action="{canary}/form"><input name="x"></form><style>@import url({canary}/css);</style>'
             "Vulnerability in a PACS")
    hostile_world(hub, tmp_path, title, f"javascript:fetch('{canary}/js')")
    hub.run("subscribers", "add", "clinic@clinic.example.jp", "--member", "jma", "--clearance", "GREEN")
    out = tmp_path / "mail"
    hub.run("digest", "send", "--frequency", "daily", "--out", str(out))
    html = html_part(out / "clinic@clinic.example.jp.eml")
    assert "<script" not in html and "<img" not in html and "<form" not in html and "<style>@import" not in html
    assert "&lt;script" in html and 'href="javascript' not in html and "javascript:fetch" in html  # shown as text
    page = tmp_path / "mail.html"
    page.write_text(html, encoding="utf-8")
    dom = chromium.run(page, tmp_path, "--dump-dom").stdout
    assert "PWNED" not in dom.split("<body")[0]  # the title was never rewritten by a script
    assert "<script" not in dom and "<form" not in dom and "<img" not in dom
    assert not [p for p, _ in feed_server.hits if p.startswith("/canary")]  # no request left the page


def test_the_hubs_pages_escape_and_forbid_scripts(hub, tmp_path):
    from ceptoar.sharing.taxii.app import create_app
    hub.run("members", "add", "jma", "--name", "JMA", "--clearance", "GREEN")
    hub.run("subscribers", "add", "a@clinic.example.jp", "--member", "jma")
    token = Store(hub.db).subscribers.get("a@clinic.example.jp")["token"]
    client = create_app(str(hub.db)).test_client()
    for path, status in ((f"/unsubscribe/{token}", 200), ("/unsubscribe/<img src=x onerror=alert(1)>", 404)):
        r = client.get(path)
        assert r.status_code == status and r.mimetype == "text/html"
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "form-action 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff" and "<img" not in r.get_data(as_text=True)
    poster = tmp_path / "poster.html"
    hub.run("poster", "--facility", "<script>alert(1)</script>さくら", "--vendor", "<img src=x onerror=alert(1)>",
            "-o", str(poster))
    text = poster.read_text(encoding="utf-8")
    assert "<script>alert" not in text and "<img src=x" not in text and "&lt;script&gt;" in text


def test_addresses_and_names_cannot_choose_files_or_headers(hub, tmp_path):
    hub.run("members", "add", "jma", "--name", "JMA", "--clearance", "GREEN")
    subs = tmp_path / "subs.csv"
    with subs.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["email", "name", "member"])
        w.writerow(["../../escape@clinic.example.jp", "x", "jma"])
        w.writerow(["a/b@clinic.example.jp", "x", "jma"])
        w.writerow(["ok@clinic.example.jp", "Evil\r\nReply-To: attacker@evil.example\nBcc: x@evil.example", "jma"])
    r = hub.run("subscribers", "import", str(subs), ok=None)
    assert r.exit_code == 1 and "subs.csv:2: invalid e-mail address" in r.output and "subs.csv:3:" in r.output
    (ok,) = hub.json("subscribers", "list")
    assert ok["name"] == "Evil Reply-To: attacker@evil.example Bcc: x@evil.example"
    # An address stored before addresses were checked: it fails alone, nothing is written outside --out.
    Store(hub.db).subscribers.upsert({"email": "../../../escape@x.jp", "name": "", "member": "jma",
                                      "frequency": "daily", "clearance": "GREEN", "lang": "ja"})
    hostile_world_id = hostile_world_published(hub, tmp_path)
    out = tmp_path / "deep" / "mail"
    r = hub.run("digest", "send", "--frequency", "daily", "--out", str(out), ok=None)
    assert r.exit_code == 1 and "escape@x.jp" in r.output and "Traceback" not in r.output
    assert sorted(p.name for p in out.iterdir()) == ["ok@clinic.example.jp.eml"]
    assert not list(tmp_path.rglob("escape*"))
    raw = (out / "ok@clinic.example.jp.eml").read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Reply-To"] is None and msg["Bcc"] is None and msg["To"].addresses[0].addr_spec == "ok@clinic.example.jp"
    assert not re.search(rb"(?<!\r)\n", raw.split(b"\r\n\r\n")[0])  # no bare LF among the headers
    assert hostile_world_id


def hostile_world_published(hub, tmp_path) -> str:
    hub.run("sources", "add", "p", "https://p.example/stix", "--kind", "stix")
    hub.run("ingest", str(write_bundle(tmp_path / "p.json", [report("PACS advisory", [])])), "--source", "p")
    (row,) = hub.json("advisories", "list", "--source", "p")
    hub.run("advisories", "triage", row["id"], "--medical")
    hub.run("advisories", "publish", row["id"])
    hub.run("members", "grant", "jma", "medical")
    return row["id"]


def test_terminal_output_neutralizes_control_characters(hub, tmp_path):
    aid = hostile_world(hub, tmp_path, f"Title{ESCAPES}EVIL", "https://example.jp/a")
    for args in (["advisories", "list", "--status", "all"], ["sources", "list"], ["audit", "list"],
                 ["advisories", "list", "--status", "all", "--format", "csv"]):
        out = hub.run(*args).output
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", out), args
    table = hub.run("advisories", "list", "--status", "all").output
    assert "\\x1b" in table
    listed = hub.run("advisories", "list", "--status", "all", "--format", "json").stdout
    assert "\x1b" not in listed and "\x9b" not in listed and "\u202e" not in listed
    assert json.loads(listed)[0]["title"] == f"Title{ESCAPES}EVIL"  # the data itself is kept, escaped
    shown = hub.run("advisories", "show", aid).stdout
    assert "\x1b" not in shown and json.loads(shown)["title"].endswith("EVIL")
    stix = hub.run("advisories", "show", aid, "--format", "stix").stdout
    assert "\x1b" not in stix and json.loads(stix)["objects"][0]["name"] == f"Title{ESCAPES}EVIL"
    preview = hub.run("digest", "preview", "--member", "jma", "--clearance", "GREEN").output
    assert "\x1b" not in preview and "Title" in preview


def test_csv_cells_never_run_as_formulas(hub, tmp_path):
    hostile_world(hub, tmp_path, '=HYPERLINK("https://evil.example/","click")', "https://example.jp/a")
    rows = list(csv.DictReader(io.StringIO(hub.run("export", "csv").stdout)))
    assert rows[0]["title"] == "'=HYPERLINK(\"https://evil.example/\",\"click\")"
    out = tmp_path / "export.csv"
    hub.run("export", "csv", "--bom", "-o", str(out))
    data = out.read_bytes()
    assert data.startswith("\ufeff".encode()) and b"'=HYPERLINK" in data
    listed = hub.run("advisories", "list", "--status", "all", "--format", "csv").stdout
    assert "'=HYPERLINK" in listed and ",=HYPERLINK" not in listed


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.sqlite_only
def test_the_hubs_files_are_private(hub, tmp_path):
    hostile_world(hub, tmp_path, "PACS advisory", "https://example.jp/a")
    hub.run("subscribers", "add", "a@clinic.example.jp", "--member", "jma", "--clearance", "GREEN")
    out = tmp_path / "new" / "mail"
    hub.run("digest", "send", "--frequency", "daily", "--out", str(out))
    hub.run("export", "bundle", "-o", str(tmp_path / "exp" / "bundle.json"))
    hub.run("export", "csv", "-o", str(tmp_path / "exp" / "rows.csv"))
    hub.run("poster", "--facility", "さくら", "-o", str(tmp_path / "poster.html"))
    inc = hub.json("incidents", "report", "--facility", "さくら", "--facility-type", "clinic", "--prefecture",
                   "東京都", "--member", "jma", "--summary", "x", "--vendor-email", "v@vendor.example.jp")
    hub.run("incidents", "notify", inc["id"], "--to", "vendor", "--out", str(tmp_path / "notices"))
    # The WAL and SHM files exist while a connection is open (a command's close checkpoints them away).
    held = Store(hub.db)
    held.count("audit")
    for p in [hub.db, f"{hub.db}-wal", f"{hub.db}-shm", out / "a@clinic.example.jp.eml", tmp_path / "exp" / "bundle.json",
              tmp_path / "exp" / "rows.csv", tmp_path / "poster.html", *(tmp_path / "notices").iterdir()]:
        assert mode(p) == 0o600, (p, oct(mode(p)))
    for d in (out, tmp_path / "notices"):
        assert mode(d) == 0o700, d


def test_a_manifest_written_as_text_is_the_json_of_what_is_stored():
    """The manifest page is written by hand from stored strings: whatever they hold (quotes,
    backslashes, markup, line separators, control characters, non-BMP text), it parses back to them."""
    from ceptoar.sharing.taxii.backend import HubBackend

    hostile = ['indicator--"}],"more":false,"x":["', "a\\b\u2028\u2029</script>\x00\x1b[31m", "日本語\U0001F600",
               "\ud800"]
    rows = [{"object_id": h, "date_added": "2026-01-01T00:00:00.000000Z", "modified": m, "spec_version": v}
            for h in hostile for m, v in ((h, "2.1"), (None, '2.0"'))]
    envelope = json.loads(HubBackend._manifest(rows, True, 'tok"en\\').text)
    assert envelope["more"] is True and envelope["next"] == 'tok"en\\'
    assert envelope["objects"] == [
        {"id": r["object_id"], "date_added": r["date_added"], "version": r["modified"] or r["date_added"],
         "media_type": f"application/stix+json;version={r['spec_version']}"} for r in rows]
    assert json.loads(HubBackend._manifest(rows[:1], False, None).text) == {"more": False, "objects": envelope["objects"][:1]}
    assert HubBackend._manifest([], False, None) == {}
