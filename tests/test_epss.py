"""EPSS (issue 32, part 4): a source of kind `epss` reads FIRST's daily file (CSV, gzip or not, its
model and score date), streamed, into each CVE's newest probability and percentile; advisories carry
the highest over their CVEs (`advisories show`, the JSON view, the `epss` filter); the digest ranks
the likely exploited after KEV and says it plainly; a bad row is a warning with its line.

The file is a real slice of FIRST's (tests/fixtures/epss/SOURCES.md); the KEV catalogue is CISA's
partial one from ../shared/data with its one entry's CVE set to a CVE of that slice."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

from ceptoar.clinics.digest import subscribers as subs
from ceptoar.clinics.digest.render import epss_text, rank_key
from ceptoar.publishing import collections as colls
from ceptoar.publishing import triage
from ceptoar.publishing.filters import compile_filter
from ceptoar.sharing import members
from ceptoar.store import Store
from tests.conftest import DATA

SLICE = (Path(__file__).parent / "fixtures/epss/epss_scores-2026-09-29_slice.csv").read_bytes()
KEV = json.loads((DATA / "cisa_kev/vulsdata_kev_2022-08-18_partial.json").read_text(encoding="utf-8"))


def kev_with(cve: str, added: str | None = None) -> str:
    doc = json.loads(json.dumps(KEV))
    doc["vulnerabilities"][0]["cveID"] = cve
    if added:
        doc["vulnerabilities"][0]["dateAdded"] = added
    return json.dumps(doc)


def test_the_daily_file_scores_the_hubs_cves(hub, feed_server):
    hub.run("sources", "add", "kev", feed_server.route("/kev.json", kev_with("CVE-2024-52301")), "--kind", "kev")
    hub.run("fetch", "kev")
    hub.run("sources", "add", "epss", feed_server.route("/epss.csv.gz", gzip.compress(SLICE)), "--kind", "epss",
            "--interval", "86400")
    (out,) = json.loads(hub.run("fetch", "epss", "--format", "json").stdout)
    assert out["status"] == "ok" and out["new"] == 109 and out["warnings"] == [], out
    assert out["note"] == "EPSS of 2026-09-29T12:00:22Z (model v2026.06.15)"
    (adv,) = hub.json("advisories", "list", "--status", "all", "--source", "kev")
    assert (adv["epss"], adv["epss_percentile"]) == (0.44757, 0.98732)
    shown = hub.json("advisories", "show", adv["id"])
    assert shown["epss"] == 0.44757
    row = Store(hub.db).advisories.get(adv["id"])
    assert compile_filter("epss >= 0.1")(row) and not compile_filter("epss >= 0.5")(row)
    # An advisory that arrives after the file has its CVE's score at once.
    hub.run("sources", "add", "kev2", feed_server.route("/kev2.json", kev_with("CVE-1999-0016")), "--kind", "kev")
    hub.run("fetch", "kev2")
    (later,) = hub.json("advisories", "list", "--status", "all", "--source", "kev2")
    assert later["epss"] == 0.95739
    # An older file never stands over a newer score.
    older = SLICE.replace(b"score_date:2026-09-29T12:00:22Z", b"score_date:2026-09-01T12:00:00Z").replace(
        b"CVE-2024-52301,0.44757", b"CVE-2024-52301,0.00100")
    feed_server.route("/epss.csv.gz", older)  # not compressed this time: read as it is
    (out,) = json.loads(hub.run("fetch", "epss", "--format", "json").stdout)
    assert out["status"] == "ok", out
    assert hub.json("advisories", "show", adv["id"])["epss"] == 0.44757


def test_bad_rows_are_warnings_with_their_line_and_bad_files_fail(hub, feed_server):
    bad = SLICE.replace(b"CVE-1999-0003,0.24565,0.97812", b"CVE-1999-0003,abc,0.97812").replace(
        b"CVE-1999-0005,0.18415,0.97144", b"CVE-99-5,0.18415,0.97144").replace(
        b"CVE-1999-0007,0.07637,0.94375", b"CVE-1999-0007,1.5,0.94375")
    hub.run("sources", "add", "epss", feed_server.route("/epss.csv", bad), "--kind", "epss")
    (out,) = json.loads(hub.run("fetch", "epss", "--format", "json").stdout)
    assert out["status"] == "ok" and out["new"] == 106
    assert out["warnings"] == ["line 5: 'abc' is not a number from 0 to 1: left out",
                               "line 7: 'CVE-99-5' is not a CVE id: left out",
                               "line 9: '1.5' is not a number from 0 to 1: left out"]
    for body, reason in ((b"cve,score\nCVE-1999-0001,0.1\n", "not an EPSS file: line 1 is not the header"),
                         (gzip.compress(SLICE)[:200], "gzip stream is broken"),
                         (b"#model_version:x\ncve,epss,percentile\nnope,1,1\n", "nothing usable"),
                         (b"\xff\xfe\x00", "not UTF-8")):
        feed_server.route("/epss.csv", body)
        r = hub.run("fetch", "epss", "--format", "json", ok=None)
        (out,) = json.loads(r.stdout)
        assert r.exit_code == 1 and out["status"] == "error" and reason in out["error"], (reason, out)
    assert Store(hub.db).epss.of(["CVE-1999-0001"])["CVE-1999-0001"]["epss"] == 0.03351  # the good run stands


def test_the_digest_ranks_the_likely_exploited_after_kev_and_says_so():
    base = {"kev": False, "medical": True, "severity": "critical"}
    likely = {"kev": False, "medical": False, "severity": "medium", "epss": 0.44757}
    kev = {"kev": True, "medical": False, "severity": "low", "epss": 0.001}
    assert sorted([base, likely, kev], key=rank_key) == [kev, likely, base]
    assert epss_text(0.12, "ja") == "今後30日間に悪用される可能性の推定: 12%（EPSS）"
    assert epss_text(0.004, "ja") == "今後30日間に悪用される可能性の推定: 1%未満（EPSS）"
    assert epss_text(None, "ja") is None


def test_a_clinics_digest_says_how_likely_exploitation_is(hub, feed_server, tmp_path):
    today = datetime.now(UTC).strftime("%Y-%m-%d")  # listed today: in the digest's window, shown in full
    hub.run("sources", "add", "kev", feed_server.route("/kev.json", kev_with("CVE-2024-52301", today)), "--kind",
            "kev")
    hub.run("fetch", "kev")
    hub.run("sources", "add", "epss", feed_server.route("/epss.csv", SLICE), "--kind", "epss")
    hub.run("fetch", "epss")
    store = Store(hub.db)
    members.add(store, "jma", "JMA", "GREEN")
    colls.add(store, "all", "All", "tlp <= GREEN")
    members.grant(store, "jma", "all", True, False)
    subs.add(store, {"email": "clinic@clinic.example.jp", "member": "jma", "clearance": "GREEN"})
    triage.publish(store, [a["id"] for a in store.advisories.list(status="new", source="kev")], "analyst")
    out = tmp_path / "digest"
    hub.run("digest", "send", "--frequency", "daily", "--dry-run", "--out", str(out))
    mails = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in out.rglob("*.eml")]
    assert mails
    text = "\n".join(m.get_body(("plain",)).get_content() for m in mails)
    assert "今後30日間に悪用される可能性の推定: 45%（EPSS）" in text
