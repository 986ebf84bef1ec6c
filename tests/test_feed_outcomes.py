"""Every feed outcome says what happened (issue 36): a feed that yields nothing fails its source,
naming why; entries of the wrong shape are warnings with their position, in the fetch's result, in
`sources show` and in `status`; three runs in a row with nothing usable reach the operator by mail
even when every HTTP status was 200; ambiguous JSON is refused saying where; every JSON the hub
prints is strict; a source's run_seconds bounds normalizing too, and the fetch says how far it got.

Each case is served by a local HTTP server (the feeds are real documents from ../shared/data,
changed only where a case needs them wrong)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ceptoar.core import settings
from ceptoar.ops.worker import Worker
from ceptoar.store import Store
from tests.conftest import DATA

JVN = (DATA / "jvn/vulsdata_jvndb_2022.rdf").read_text(encoding="utf-8")
KEV = json.loads((DATA / "cisa_kev/vulsdata_kev_2022-08-18_partial.json").read_text(encoding="utf-8"))
ICSMA = "/cisa_icsma/cisagov_CSAF_icsma-24-060-01.json"


def strict(text: str):
    """The text as one strict JSON document (no NaN or Infinity, nothing after it)."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))


def problems(hub) -> list[str]:
    return strict(hub.run("status", "--format", "json", ok=None).stdout)["problems"]


def fetched(hub, *args: str) -> dict:
    r = hub.run("fetch", *args, "--format", "json", ok=None)
    (out,) = strict(r.stdout)
    assert r.exit_code == (1 if out["status"] == "error" else 0), r.stdout
    return out


def test_a_jvn_feed_outside_the_rss_namespace_fails_naming_it(hub, feed_server):
    """JVN's items under another default namespace: not `ok` with nothing, but failed, saying what
    is missing; `sources show` and `status` say it too."""
    foreign = JVN.replace('xmlns="http://purl.org/rss/1.0/"', 'xmlns="http://example.org/not-rss/"', 1)
    hub.run("sources", "add", "jvn", feed_server.route("/jvn.rdf", foreign), "--kind", "jvn")
    out = fetched(hub)
    items = JVN.count("<item ")
    assert out["status"] == "error" and out["new"] == 0
    assert f"{items} <item> element(s), none in the RSS 1.0 namespace" in out["error"]
    shown = strict(hub.run("sources", "show", "jvn").stdout)
    assert shown["last_status"] == "error" and "RSS 1.0 namespace" in shown["last_error"] and shown["failures"] == 1
    assert any(p.startswith("source jvn: its last run failed (1 in a row)") for p in problems(hub))
    # The same feed as JVN writes it: its items are read.
    feed_server.route("/jvn.rdf", JVN)
    assert fetched(hub)["new"] == items


def test_rolie_entries_of_the_wrong_shape_are_warnings_with_their_position(hub, feed_server):
    doc = {"feed": {"entry": ["text", {"content": 5}, {"link": "x", "id": "ICSMA-0"},
                              {"id": "ICSMA-24-060-01", "updated": "2024-02-27T00:00:00Z",
                               "content": {"src": feed_server.url(ICSMA)}}]}}
    hub.run("sources", "add", "csaf", feed_server.route("/rolie.json", json.dumps(doc)), "--kind", "csaf")
    out = fetched(hub)
    assert out["status"] == "ok" and out["new"] == 1
    assert out["warning_count"] == 3 and [w.split(":")[0] for w in out["warnings"]] == [
        "skipped ROLIE entry 1", "skipped ROLIE entry 2", "skipped ROLIE entry 3"], out["warnings"]
    shown = strict(hub.run("sources", "show", "csaf").stdout)
    assert shown["warning_count"] == 3 and shown["warnings"] == out["warnings"]
    assert any(p.startswith("source csaf: 3 warning(s) in its last run, the first: skipped ROLIE entry 1") for p in problems(hub))
    # An index none of whose entries leads to a document fails the source.
    feed_server.route("/rolie.json", json.dumps({"feed": {"entry": doc["feed"]["entry"][:3]}}))
    out = fetched(hub)
    assert out["status"] == "error" and "ROLIE" in out["error"], out


def test_nothing_usable_three_times_reaches_the_operator(hub, feed_server, smtp):
    """A catalogue served with HTTP 200 whose every entry is unreadable: each run fails its source,
    and the third in a row sends the feed-health mail naming it and why."""
    controller, sink = smtp
    broken = dict(KEV, vulnerabilities=["x", {"cveID": 5}, {"vendorProject": "Acme"}])
    hub.run("sources", "add", "kev", feed_server.route("/kev.json", json.dumps(broken)), "--kind", "kev",
            "--interval", "300")
    store = Store(hub.db)
    cfg = replace(settings.load(hub.db), smtp_host="127.0.0.1", smtp_port=controller.port,
                  operator_email="ops@ceptoar.example.jp", public_url="https://hub.example.jp")
    assert cfg.failure_threshold == 3
    now = [datetime(2026, 12, 1, 1, 0, tzinfo=UTC)]
    worker = Worker(store, cfg, clock=lambda: now[0], log=lambda m: None, seed=1)
    for run in range(1, 4):
        report = worker.tick()
        (result,) = report.fetched
        assert result.status == "error" and result.error.startswith("nothing usable: every item (3) skipped"), result
        assert store.sources.get("kev")["failures"] == run
        assert bool(sink.parsed("ops@ceptoar.example.jp")) is (run == 3)
        now[0] += timedelta(days=1)  # past any back-off
    (mail,) = sink.parsed("ops@ceptoar.example.jp")
    assert "source failing: kev" in mail["Subject"]
    assert "nothing usable" in mail.get_content() and "KEV entry 1" in mail.get_content()
    assert all(path == "/kev.json" for path, _ in feed_server.hits)  # HTTP 200 each time


def test_a_kev_catalogue_with_a_key_twice_is_refused_saying_where(hub, feed_server):
    text = json.dumps(KEV, indent=1)
    head, _, tail = text.rpartition("\n}")
    twice = head + ',\n "vulnerabilities": []\n}' + tail
    hub.run("sources", "add", "kev", feed_server.route("/kev.json", twice), "--kind", "kev")
    out = fetched(hub)
    first = twice.index('"vulnerabilities"')
    second = twice.rindex('"vulnerabilities"')
    line = twice.count("\n", 0, second) + 1
    assert out["status"] == "error" and "holds 'vulnerabilities' twice" in out["error"], out
    assert f"line {twice.count(chr(10), 0, first) + 1} column" in out["error"]
    assert f"the second at line {line} column 2" in out["error"]
    assert hub.json("advisories", "list", "--status", "all") == []


def test_wrong_property_types_are_warnings_and_every_json_printed_is_strict(hub, feed_server):
    report = {"type": "report", "spec_version": "2.1", "id": "report--6b1f2a3e-4c5d-4e6f-8a7b-9c0d1e2f3a4b",
              "created": "2026-11-01T00:00:00.000Z", "modified": "2026-11-01T00:00:00.000Z",
              "name": 12345, "description": ["a", "b"], "published": 20261101, "labels": "c2", "confidence": "high",
              "revoked": "no", "lang": 5, "external_references": {"source_name": "cve", "external_id": "CVE-2024-0001"},
              "report_types": ["threat-report"], "object_refs": ["indicator--6b1f2a3e-4c5d-4e6f-8a7b-9c0d1e2f3a4c"],
              "x_big": 10 ** 60, "x_tiny": 1.5e-300, "x_neg_zero": -0.0}
    ind = {"type": "indicator", "spec_version": "2.1", "id": "indicator--6b1f2a3e-4c5d-4e6f-8a7b-9c0d1e2f3a4c",
           "created": "2026-11-01T00:00:00.000Z", "modified": "2026-11-01T00:00:00.000Z", "name": None,
           "pattern_type": "stix", "pattern": "[ipv4-addr:value = '203.0.113.9']", "valid_from": "2026-11-01T00:00:00Z",
           "object_marking_refs": "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9"}
    bundle = {"type": "bundle", "id": "bundle--6b1f2a3e-4c5d-4e6f-8a7b-9c0d1e2f3a4d", "objects": [report, ind]}
    hub.run("sources", "add", "stix", feed_server.route("/b.json", json.dumps(bundle)), "--kind", "stix")
    out = fetched(hub)
    assert out["status"] == "ok" and out["new"] == 1
    rid, iid = report["id"], ind["id"]
    wrong = [(rid, "name", "an integer", "a string"), (rid, "description", "a list", "a string"),
             (rid, "published", "an integer", "a string"), (rid, "lang", "an integer", "a string"),
             (rid, "labels", "a string", "a list"), (rid, "external_references", "an object", "a list"),
             (rid, "revoked", "a string", "true or false"), (rid, "confidence", "a string", "an integer"),
             (iid, "name", "null", "a string"), (iid, "object_marking_refs", "a string", "a list")]
    assert out["warnings"] == [f"{o}: {p} is {got}, not {want}: kept as received, read as absent"
                               for o, p, got, want in wrong]
    assert out["warning_count"] == 11  # and the indicator is not sent on: its markings cannot be read
    shown = strict(hub.run("sources", "show", "stix").stdout)
    assert (shown["warning_count"], shown["warnings"]) == (11, out["warnings"])
    (adv,) = strict(hub.run("advisories", "list", "--status", "all", "--format", "json").stdout)
    for fmt in ("json", "stix", "source"):
        strict(hub.run("advisories", "show", adv["id"], "--format", fmt).stdout)
    served = strict(hub.run("advisories", "show", adv["id"], "--format", "stix").stdout)
    kept = next(o for o in served["objects"] if o["id"] == rid)
    assert kept["name"] == 12345 and kept["x_big"] == 10 ** 60  # kept as received
    strict(hub.run("sources", "list", "--format", "json").stdout)
    strict(hub.run("status", "--format", "json", ok=None).stdout)


def indicators(n: int) -> bytes:
    return json.dumps({"type": "bundle", "id": "bundle--00000000-0000-4000-8000-00000000000b", "objects": [
        {"type": "indicator", "spec_version": "2.1", "id": f"indicator--00000000-0000-4000-8000-{i:012d}",
         "created": "2026-11-01T00:00:00.000Z", "modified": "2026-11-01T00:00:00.000Z", "name": f"C2 {i}",
         "pattern_type": "stix", "pattern": f"[ipv4-addr:value = '198.51.100.{i % 256}']",
         "valid_from": "2026-11-01T00:00:00Z"} for i in range(n)]}).encode()


def test_run_seconds_bounds_normalizing_and_says_how_far_it_got(hub, feed_server):
    """The run's time is counted from its start: a download that used it up leaves normalizing
    to stop at its next check, saying where; nothing of the run is kept. The source's own
    run_seconds stands over the command's."""
    url = feed_server.route("/bundle.json", indicators(1500), delay=1.2)
    hub.run("sources", "add", "big", url, "--kind", "stix")
    out = fetched(hub, "--run-seconds", "1")
    assert out["status"] == "error", out
    assert out["error"].startswith("the run of big took longer than its run_seconds (1 s): stopped reading "
                                   "object 1,000 of 1,500;"), out["error"]
    assert "nothing of this run is kept" in out["error"]
    assert hub.json("advisories", "list", "--status", "all") == []
    assert strict(hub.run("sources", "show", "big").stdout)["last_error"] == out["error"]
    hub.run("sources", "add", "big", url, "--kind", "stix", "--option", "run_seconds=120")
    out = fetched(hub, "--run-seconds", "1")
    assert out["status"] == "ok" and out["new"] == 1, out
    (stored,) = hub.json("advisories", "list", "--status", "all")
    bundle = strict(hub.run("advisories", "show", stored["id"], "--format", "source").stdout)
    assert sum(o["type"] == "indicator" for o in bundle["objects"]) == 1500


def test_a_bundle_of_fifteen_thousand_objects_is_stored_whole_and_recognised_again(hub, feed_server):
    """Past RAW_FIRST (4 Mi characters) the raw entry is written before its objects and the objects
    are let go one by one: what is stored is still all of it, and the same bundle again is unchanged."""
    body = indicators(15000)
    assert len(body) > 4 << 20
    hub.run("sources", "add", "big", feed_server.route("/bundle.json", body), "--kind", "stix")
    assert fetched(hub)["new"] == 1
    (stored,) = hub.json("advisories", "list", "--status", "all")
    source = strict(hub.run("advisories", "show", stored["id"], "--format", "source").stdout)
    assert [o["id"] for o in source["objects"] if o["type"] == "indicator"] == [
        o["id"] for o in json.loads(body)["objects"]]
    served = strict(hub.run("advisories", "show", stored["id"], "--format", "stix").stdout)
    assert sum(o["type"] == "indicator" for o in served["objects"]) == 15000
    feed_server.route("/bundle.json", body + b"\n")  # the same bundle, a new body: read again, nothing new
    again = fetched(hub)
    assert (again["new"], again["updated"], again["unchanged"]) == (0, 0, 1), again
