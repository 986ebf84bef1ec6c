"""Fetch → normalize → store through a real loopback HTTP server and the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from ceptoar.core.extensions import props
from tests.conftest import DATA, ROOT, Hub
from tests.test_normalize import BOMB, HTML, SJIS_AS_UTF8, XXE

KEV_FULL = "/cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json"


def add(hub, sid, url, kind, *extra):
    hub.run("sources", "add", sid, url, "--kind", kind, *extra)


def fetch(hub, *ids, ok=True):
    result = hub.run("fetch", *ids, "--format", "json", ok=None)
    assert (result.exit_code == 0) is ok, result.output
    return {r["source"]: r for r in json.loads(result.stdout)}


def test_init_loads_the_catalogue_and_is_idempotent(hub):
    hub.run("init")
    hub.run("init")
    sources = hub.json("sources", "list")
    ids = {s["id"] for s in sources}
    assert {"jvndb-new-ja", "jvndb-updated-en", "jvn-ja", "jpcert-alerts", "ipa-alerts", "nco-news", "mhlw-news",
            "cisa-kev", "cisa-csaf-ot"} <= ids
    kev = next(s for s in sources if s["id"] == "cisa-kev")
    assert kev["url"].startswith("https://www.cisa.gov/") and kev["tlp"] == "CLEAR" and kev["enabled"] is True
    assert set(kev) >= {"id", "name", "kind", "url", "enabled", "tlp", "last_fetched", "last_status", "last_error"}
    csv_out = hub.run("sources", "list", "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("id,kind,enabled") and len(csv_out) == len(sources) + 1


def test_fetch_real_feeds_twice_adds_nothing(hub, feed_server):
    feed_server.route("/jvndb_2022.rdf", (DATA / "jvn/vulsdata_jvndb_2022.rdf").read_bytes(),
                      etag='"v1"', headers={"Content-Type": "application/rdf+xml; charset=UTF-8"})
    add(hub, "jvn2022", feed_server.url("/jvndb_2022.rdf"), "jvn")
    add(hub, "kev", feed_server.url(KEV_FULL), "kev", "--lang", "en")
    add(hub, "myjvn", feed_server.url("/jvn/spiegel_go-myjvn_getVulnOverviewList_2018-03-13_extracted.rdf"), "jvn")
    first = fetch(hub, "jvn2022", "kev", "myjvn")
    assert first["jvn2022"] == {"source": "jvn2022", "status": "ok", "new": 3, "updated": 0, "unchanged": 0, "skipped": 0, "error": None,
                                **{"note": None, "warning_count": 0, "warnings": [], "new_fields": []}}
    assert first["kev"]["new"] == 1404 and first["myjvn"]["new"] == 2
    # The ETag goes back as If-None-Match; the server without ETags still yields nothing new.
    second = fetch(hub, "jvn2022", "kev", "myjvn")
    assert second["jvn2022"]["status"] == "not-modified"
    assert second["kev"] == {"source": "kev", "status": "ok", "new": 0, "updated": 0, "unchanged": 1404, "skipped": 0,
                              "error": None, "note": None, "warning_count": 0, "warnings": [], "new_fields": []}
    conditional = [h for p, h in feed_server.hits if p == "/jvndb_2022.rdf"]
    assert conditional[-1].get("If-None-Match") == '"v1"'
    assert re.match(r"ceptoar-hub/\S+", conditional[-1]["User-Agent"])
    assert len(hub.json("advisories", "list", "--source", "kev")) == 1404


def test_changed_entry_becomes_a_new_version(hub, feed_server, data):
    body = (data / "jvn/vulsdata_jvndb_2023.rdf").read_text(encoding="utf-8")
    feed_server.route("/feed.rdf", body)
    add(hub, "jvn", feed_server.url("/feed.rdf"), "jvn")
    assert fetch(hub)["jvn"]["new"] == 2
    at = body.index("<title>", body.index("<item"))  # the first item's title, not the channel's
    changed = body[:at] + "<title>[更新] " + body[at + len("<title>"):]
    feed_server.route("/feed.rdf", changed)
    assert fetch(hub)["jvn"] == {"source": "jvn", "status": "ok", "new": 0, "updated": 1, "unchanged": 1,
                                 "skipped": 0, "error": None, "note": None, "warning_count": 0, "warnings": [], "new_fields": []}
    updated = [a for a in hub.json("advisories", "list") if a["title"].startswith("[更新]")]
    assert len(updated) == 1
    shown = json.loads(hub.run("advisories", "show", updated[0]["id"][8:20]).stdout)  # a UUID prefix
    assert len(shown["versions"]) == 2 and shown["versions"][0] < shown["versions"][1]
    bundle = json.loads(hub.run("advisories", "show", updated[0]["id"], "--format", "stix").stdout)
    types = {o["type"] for o in bundle["objects"]}
    assert types == {"report", "vulnerability", "identity", "marking-definition", "extension-definition"}
    assert bundle["objects"][0]["name"].startswith("[更新]")


def test_refetch_builds_only_what_changed_and_an_older_copy_stays_behind(hub, data):
    """A re-fetched feed: items whose raw text is held unchanged are not built again, and another
    copy of one of them in the same feed, older than the held one, does not replace it."""
    from ceptoar.core.model import Source
    from ceptoar.normalize import Known, jvn
    from ceptoar.pipeline import ingest_bytes
    from ceptoar.store import Store

    store = Store(hub.db)
    source = Source(id="jvn", kind="jvn", name="JVN")
    body = (data / "jvn/vulsdata_jvndb_2023.rdf").read_text(encoding="utf-8")
    assert ingest_bytes(store, source, body.encode()).new == 2
    # The stream itself: every item held, nothing built.
    stream = jvn.stream(body.encode(), source)
    stream.known = lambda raw: ("k", "v")
    assert [type(e) for e in stream] == [Known, Known]
    # The held first item, then an older copy of it with another title: the held copy stands.
    start = body.index("<item ")
    end = body.index("</item>", start) + len("</item>")
    item = body[start:end]
    older = item.replace("<title>", "<title>[古い写し] ").replace("2023-10-16T17:18+09:00", "2001-01-01T00:00+09:00")
    assert older != item and "2001-01-01" in older
    again = ingest_bytes(store, source, (body[:end] + "\n" + older + body[end:]).encode())
    assert (again.new, again.updated, again.unchanged) == (0, 0, 2), again
    titles = [a["title"] for a in hub.json("advisories", "list")]
    assert len(titles) == 2 and not any("古い写し" in t for t in titles)
    # A changed item is built and stored as before.
    changed = ingest_bytes(store, source, body.replace("<title>Linux", "<title>[更新] Linux", 1).encode())
    assert (changed.new, changed.updated, changed.unchanged) == (0, 1, 1), changed
    # The held copy and a changed one at the same `modified`: the changed copy stands, and it is said.
    body = body.replace("<title>Linux", "<title>[更新] Linux", 1)
    start = body.index("<item ")
    end = body.index("</item>", start) + len("</item>")
    twice = body[:end] + "\n" + body[start:end].replace("[更新]", "[再更新]") + body[end:]
    again = ingest_bytes(store, source, twice.encode())
    assert (again.new, again.updated, again.unchanged) == (0, 1, 2), again
    assert len(again.warnings) == 1 and "given twice" in again.warnings[0] and "the changed copy stands" in again.warnings[0]
    assert any("[再更新]" in a["title"] for a in hub.json("advisories", "list"))


def test_list_fields_and_filters(hub, feed_server):
    add(hub, "myjvn", feed_server.url("/jvn/spiegel_go-myjvn_getVulnOverviewList_2018-03-13_extracted.rdf"), "jvn")
    add(hub, "kev", feed_server.url("/cisa_kev/vulsdata_kev_2022-08-18_partial.json"), "kev", "--lang", "en")
    fetch(hub)
    rows = hub.json("advisories", "list", "--cve", "CVE-2017-10853")
    assert len(rows) == 1
    a = rows[0]
    assert set(a) >= {"id", "title", "source", "published", "modified", "url", "identifiers", "cves", "cvss", "cpes",
                      "tlp", "tags", "status"}
    assert a["cves"] == ["CVE-2017-10852", "CVE-2017-10853", "CVE-2017-10854"]
    assert {"version": "3.0", "score": 8.8, "severity": "High",
            "vector": "CVSS:3.0/AV:A/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"} in a["cvss"]
    assert a["cpes"] == ["cpe:/h:corega:cg-wgr1200"]
    assert {"JVNDB-2018-000024", "JVN#15201064", "CWE-78"} <= set(a["identifiers"])
    assert a["tlp"] == "CLEAR" and a["status"] == "new" and a["published"] == "2018-03-09T12:04:48+09:00"
    assert a["url"] == "https://jvndb.jvn.jp/ja/contents/2018/JVNDB-2018-000024.html"
    assert [r["source"] for r in hub.json("advisories", "list", "--source", "kev")] == ["kev"]
    assert len(hub.json("advisories", "list", "--since", "2018-03-09")) == 2  # the KEV entry is 2022
    assert len(hub.json("advisories", "list", "--since", "2022-01-01")) == 1
    assert [r["source"] for r in hub.json("advisories", "list", "--tag", "kev")] == ["kev"]
    assert len(hub.json("advisories", "list", "--limit", "1")) == 1
    table = hub.run("advisories", "list").stdout
    assert "CG-WGR1200" in table


def test_same_cve_from_two_sources_is_one_vulnerability(hub, feed_server, data):
    kev = json.loads((data / "cisa_kev/vulsdata_kev_2022-08-18_partial.json").read_text())
    kev["vulnerabilities"][0]["cveID"] = "CVE-2022-22292"  # the Android CVE of the JVN 2022 file
    feed_server.route("/kev.json", json.dumps(kev))
    add(hub, "kev", feed_server.url("/kev.json"), "kev")
    add(hub, "jvn", feed_server.url("/jvn/vulsdata_jvndb_2022.rdf"), "jvn")
    fetch(hub)
    both = hub.json("advisories", "list", "--cve", "CVE-2022-22292")
    assert sorted(a["source"] for a in both) == ["jvn", "kev"]
    bundles = [json.loads(hub.run("advisories", "show", a["id"], "--format", "stix").stdout) for a in both]
    vulns = [[o for o in b["objects"] if o["type"] == "vulnerability"] for b in bundles]
    assert vulns[0][0]["id"] == vulns[1][0]["id"]
    merged = vulns[0][0]
    assert props(merged)["kev"]["due_date"] == "2022-09-08"
    assert {c["score"] for c in props(merged)["cvss"]} == {4.6, 7.8}


BAD = {
    "http500": dict(body=b"oops", status=500),
    "http404": dict(body=b"gone", status=404),
    "html": dict(body=HTML, headers={"Content-Type": "text/html"}),
    "empty": dict(body=b""),
    "xxe": dict(body=XXE),
    "bomb": dict(body=BOMB),
    "sjis": dict(body=SJIS_AS_UTF8, headers={"Content-Type": "application/rdf+xml; charset=UTF-8"}),
    "nocharset": dict(body="<rdf:RDF><item><title>医療機関向け注意喚起</title></item></rdf:RDF>".encode("shift_jis"),
                      headers={"Content-Type": "application/rdf+xml"}),
    "slow": dict(body=b"<rdf:RDF/>", delay=3),
    "drip": dict(body=b"<" + b"x" * 200 + b"/>", drip=0.02),
    "huge": dict(body=b"<rdf:RDF>" + b" " * 300_000 + b"</rdf:RDF>"),
}
REASONS = {"http500": "HTTP 500", "http404": "HTTP 404", "html": "HTML", "empty": "empty body", "xxe": "entity",
           "bomb": "entity", "sjis": "charset", "nocharset": "charset", "slow": "timed out", "drip": "timed out", "huge": "cap",
           "malformed": "malformed XML", "refused": "connection failed"}


def test_each_bad_source_fails_alone(hub, feed_server):
    for name, route in BAD.items():
        add(hub, name, feed_server.route(f"/{name}", **route), "jvn")
    add(hub, "malformed", feed_server.url("/jvn/myjvn_np_dataFeed_jvndb_rss_hnd.xml"), "jvn")
    add(hub, "refused", "http://127.0.0.1:9/feed.rdf", "jvn")
    add(hub, "good", feed_server.url("/jvn/vulsdata_jvndb_new.rdf"), "jvn")
    result = hub.run("fetch", "--format", "json", "--timeout", "1.5", "--max-bytes", "100000", ok=None)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    out = {r["source"]: r for r in json.loads(result.stdout)}
    assert out["good"]["status"] == "ok" and out["good"]["new"] == 2
    listed = {s["id"]: s for s in hub.json("sources", "list")}
    for name, reason in REASONS.items():
        assert out[name]["status"] == "error", name
        assert reason in out[name]["error"], (name, out[name]["error"])
        assert listed[name]["last_error"] == out[name]["error"] and "\n" not in out[name]["error"]
        assert listed[name]["last_status"] == "error"
        assert hub.json("advisories", "list", "--source", name) == []
    assert len(hub.json("advisories", "list", "--source", "good")) == 2


def test_a_malformed_entry_is_skipped_and_named_the_rest_kept(hub, feed_server, data):
    kev = json.loads((data / "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json").read_text())
    del kev["vulnerabilities"][1000]["cveID"]
    kev["vulnerabilities"][1001]["vendorProject"] = ["not", "text"]
    feed_server.route("/kev.json", json.dumps(kev))
    add(hub, "kev", feed_server.url("/kev.json"), "kev")
    result = hub.run("fetch", "--format", "json")
    out = json.loads(result.stdout)[0]
    assert out["status"] == "ok" and out["new"] == 1403 and out["skipped"] == 1
    assert out["warnings"][0] == "skipped KEV entry 1001: it has no cveID"
    assert any("vendorProject is not text: dropped" in w for w in out["warnings"])
    assert "warning: skipped KEV entry 1001" in result.stderr
    (src,) = hub.json("sources", "list")
    assert src["last_status"] == "ok" and "1 item(s) skipped" in src["last_note"]
    assert len(hub.json("advisories", "list", "--source", "kev")) == 1403


def test_a_document_that_cannot_be_read_commits_nothing(hub, feed_server, data):
    body = (data / "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json").read_bytes()
    feed_server.route("/kev.json", body[: len(body) // 2])
    add(hub, "kev", feed_server.url("/kev.json"), "kev")
    out = fetch(hub, ok=False)
    assert out["kev"]["status"] == "error" and "malformed JSON" in out["kev"]["error"]
    assert hub.json("advisories", "list", "--source", "kev") == []


def test_error_clears_after_recovery_and_keeps_etag_only_on_success(hub, feed_server, data):
    feed_server.route("/f.rdf", b"broken", status=503)
    add(hub, "f", feed_server.url("/f.rdf"), "jvn")
    fetch(hub, ok=False)
    feed_server.route("/f.rdf", (data / "jvn/vulsdata_jvndb.rdf").read_bytes(), etag='"e1"')
    assert fetch(hub)["f"]["new"] == 1
    (src,) = [s for s in hub.json("sources", "list") if s["id"] == "f"]
    assert src["last_status"] == "ok" and src["last_error"] is None and src["last_fetched"]


def test_rolie_index_is_followed_to_csaf_documents(hub, feed_server, data):
    index = json.loads((data / "cisa_icsma/cisagov_CSAF_cisa-csaf-ot-feed-tlp-white.json").read_text())
    local = {p.name.removeprefix("cisagov_CSAF_") for p in (data / "cisa_icsma").glob("cisagov_CSAF_icsma-*.json")}
    index["feed"]["entry"] = [e for e in index["feed"]["entry"] if e["content"]["src"].rsplit("/", 1)[1] in local]
    assert len(index["feed"]["entry"]) == 5
    for e in index["feed"]["entry"]:
        name = e["content"]["src"].rsplit("/", 1)[1]
        feed_server.route(f"/docs/{name}", (data / f"cisa_icsma/cisagov_CSAF_{name}").read_bytes())
    feed_server.route("/rolie.json", json.dumps(index))
    hub.run("sources", "add", "csaf", feed_server.url("/rolie.json"), "--kind", "csaf", "--lang", "en")
    # Map the index's internet URLs to the local server, as a mirror would.
    from ceptoar.store import Store
    store = Store(hub.db)
    row = store.sources.get("csaf")
    prefix = "https://raw.githubusercontent.com/cisagov/CSAF/develop/csaf_files/OT/white/"
    store.sources.upsert(row | {"options": {"include": "^ICSMA-", "max_documents": 3,
                                           "url_map": {prefix + "2022/": feed_server.url("/docs/"),
                                                       prefix + "2023/": feed_server.url("/docs/"),
                                                       prefix + "2024/": feed_server.url("/docs/")}}})
    assert fetch(hub)["csaf"]["new"] == 3  # capped; the rest next run
    assert fetch(hub)["csaf"]["new"] == 2
    assert fetch(hub)["csaf"] == {"source": "csaf", "status": "ok", "new": 0, "updated": 0, "unchanged": 0,
                                  "skipped": 0, "error": None, "note": None, "warning_count": 0, "warnings": [], "new_fields": []}
    medical = hub.json("advisories", "list", "--tag", "medical-suggested")
    assert len(medical) == 5
    vue = hub.json("advisories", "list", "--cve", "CVE-2024-22100")
    assert vue[0]["identifiers"][0] == "ICSMA-24-060-01" and vue[0]["cvss"][0]["score"] == 7.8


def test_ingest_local_file_and_stix(hub, data):
    hub.run("sources", "add", "partner", "https://partner.example/taxii", "--kind", "stix", "--tlp", "AMBER")
    out = json.loads(hub.run("ingest", str(data / "stix/elastic_labs_cisa_ais_sample_stix.json"), "--source",
                             "partner", "--format", "json").stdout)
    # The AIS report, and one wrapper report for the `location` object no report references.
    assert out[0]["status"] == "ok" and out[0]["new"] == 2
    ais = [a for a in hub.json("advisories", "list", "--source", "partner") if a["title"].startswith("AA23-325A")]
    assert ais[0]["tlp"] == "AMBER"  # the source's TLP is the floor; the bundle's own says CLEAR
    bundle = json.loads(hub.run("advisories", "show", ais[0]["id"], "--format", "stix").stdout)
    assert sum(o["type"] == "indicator" for o in bundle["objects"]) == 18
    again = json.loads(hub.run("ingest", str(data / "stix/elastic_labs_cisa_ais_sample_stix.json"), "--source",
                               "partner", "--format", "json").stdout)
    assert again[0]["new"] == 0 and again[0]["unchanged"] == 2
    bad = hub.run("ingest", str(data / "jvn/vulsdata_jvndb_feed_checksum.txt"), "--source", "partner", ok=None)
    assert bad.exit_code == 1 and "no object with a type and a valid id" in bad.output  # a JSON list, not STIX


def test_user_mistakes_are_one_line_errors(tmp_path, hub):
    fresh = Hub(tmp_path / "new.db")
    r = fresh.run("advisories", "list", ok=None)
    assert r.exit_code == 1 and "ceptoar init" in r.output and "Traceback" not in r.output
    for args, message in [
        (("advisories", "show", "abc"), "too short"),
        (("advisories", "show", "deadbeef00"), "no advisory"),
        (("fetch", "nosuch"), "no source"),
        (("sources", "disable", "nosuch"), "no source"),
        (("sources", "add", "Bad Id", "https://x.example/", "--kind", "rss"), "source id"),
        (("sources", "add", "x", "ftp://x.example/", "--kind", "rss"), "http(s) URL"),
        (("sources", "add", "x", "https://x.example/", "--kind", "rss", "--tlp", "PURPLE"), "unknown TLP"),
        (("advisories", "list", "--since", "yesterday"), "not a date"),
    ]:
        r = hub.run(*args, ok=None)
        assert r.exit_code != 0 and message in r.output, (args, r.output)


def test_disable_and_enable(hub, feed_server, tmp_path):
    add(hub, "x", feed_server.url("/jvn/vulsdata_jvndb_new.rdf"), "jvn")
    for s in hub.json("sources", "list"):
        hub.run("sources", "disable", s["id"])
    hub.run("sources", "enable", "x")
    assert list(fetch(hub)) == ["x"]
    hub.run("init", "--sources", str(tmp_path / "sources.toml"))  # reloading keeps the operator's choice
    assert [s["id"] for s in hub.json("sources", "list") if s["enabled"]] == ["x"]


def test_demo_runs_offline(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ceptoar.cli", "demo", "--demo-db", str(tmp_path / "demo.db")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not-modified" in r.stdout and "電子カルテ" in r.stdout
    assert "【医療セプター】セキュリティ情報" in r.stdout and "(medical): " in r.stdout and "poster:" in r.stdout
