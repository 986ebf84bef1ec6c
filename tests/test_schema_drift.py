"""Schema drift is visible (issue 32, part 3): a field a KEV, CSAF or JVN item carries that its
format's schema (as the hub knows it) does not name is listed per source with its count and when it
was seen (`fetch` JSON `new_fields`, `sources show`), `status` warns once per new field, and the
worker tells the operator by mail, once. The newest KEV schema is read whole: the real catalog
brings no unknown field, and its urgency facts reach the analyst and the digest's order.

Feeds are real documents from ../shared/data with the new fields added where a case needs them."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ceptoar.clinics.digest.render import rank_key
from ceptoar.core import settings
from ceptoar.ops.worker import Worker
from ceptoar.store import Store
from tests.conftest import DATA

KEV = json.loads((DATA / "cisa_kev/vulsdata_kev_2022-08-18_partial.json").read_text(encoding="utf-8"))
FULL_KEV = (DATA / "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json").read_bytes()
JVN = (DATA / "jvn/vulsdata_jvndb_2022.rdf").read_text(encoding="utf-8")
ICSMA = json.loads((DATA / "cisa_icsma/cisagov_CSAF_icsma-24-060-01.json").read_text(encoding="utf-8"))


def fetch(hub, name: str) -> dict:
    (out,) = json.loads(hub.run("fetch", name, "--format", "json").stdout)
    assert out["status"] == "ok", out
    return out


def problems(hub) -> list[str]:
    return json.loads(hub.run("status", "--format", "json", ok=None).stdout)["problems"]


def test_new_kev_fields_are_listed_warned_once_and_mailed_once(hub, feed_server, smtp):
    controller, sink = smtp
    drifted = dict(KEV, vulnerabilities=[v | {"epssScore": 0.97, "exploitMaturity": "weaponized"}
                                         for v in KEV["vulnerabilities"]])
    hub.run("sources", "add", "kev", feed_server.route("/kev.json", json.dumps(drifted)), "--kind", "kev")
    out = fetch(hub, "kev")
    assert out["new_fields"] == ["vulnerabilities[].epssScore", "vulnerabilities[].exploitMaturity"]
    shown = json.loads(hub.run("sources", "show", "kev").stdout)["unknown_fields"]
    assert set(shown) == set(out["new_fields"])
    assert shown["vulnerabilities[].epssScore"]["count"] == len(KEV["vulnerabilities"]) == 1
    table = hub.run("sources", "show", "kev", "--format", "table").stdout
    assert "unknown field   vulnerabilities[].epssScore: 1 in its last run (1 in all), first seen" in table
    warned = [p for p in problems(hub) if "new field" in p]
    assert [w.split(" (")[0] for w in warned] == ["source kev: new field vulnerabilities[].epssScore",
                                                  "source kev: new field vulnerabilities[].exploitMaturity"]
    # The same fields again (a changed catalogue): not new, still one line each in status.
    drifted["catalogVersion"] = "2022.08.19"
    drifted["vulnerabilities"][0]["shortDescription"] += " (updated)"
    feed_server.route("/kev.json", json.dumps(drifted))
    again = fetch(hub, "kev")
    assert again["new_fields"] == [] and again["updated"] == 1
    assert json.loads(hub.run("sources", "show", "kev").stdout)["unknown_fields"][
        "vulnerabilities[].epssScore"]["total"] == 2
    assert len([p for p in problems(hub) if "new field" in p]) == 2
    # The worker tells the operator, once.
    store = Store(hub.db)
    cfg = replace(settings.load(hub.db), smtp_host="127.0.0.1", smtp_port=controller.port,
                  operator_email="ops@ceptoar.example.jp", public_url="https://hub.example.jp")
    store.execute("UPDATE sources SET enabled = 1")
    now = [datetime.now(UTC) + timedelta(days=1)]
    worker = Worker(store, cfg, clock=lambda: now[0], log=lambda m: None, seed=1)
    worker.tick()
    (mail,) = sink.parsed("ops@ceptoar.example.jp")
    assert "new fields: kev (2)" in mail["Subject"]
    assert "vulnerabilities[].epssScore" in mail.get_content() and "vulnerabilities[].exploitMaturity" in \
        mail.get_content()
    now[0] += timedelta(days=1)
    worker.tick()
    assert len(sink.parsed("ops@ceptoar.example.jp")) == 1


def test_the_newest_kev_schema_is_read_whole(hub, feed_server):
    """cisagov/kev-data's catalogue of 2025-08-25 (cwes, notes): nothing in it is unknown; what it
    says of urgency is in the analyst's view and orders the digest."""
    hub.run("sources", "add", "kev", feed_server.route("/kev.json", FULL_KEV), "--kind", "kev")
    out = fetch(hub, "kev")
    assert out["new"] == 1404 and out["new_fields"] == []
    assert json.loads(hub.run("sources", "show", "kev").stdout)["unknown_fields"] == {}
    (adv,) = hub.json("advisories", "list", "--status", "all", "--cve", "CVE-2023-4966")
    shown = hub.json("advisories", "show", adv["id"])
    assert shown["kev"]["known_ransomware_campaign_use"] == "Known" and shown["kev"]["due_date"] == "2023-11-08"
    assert "ransomware" in shown["tags"]
    base = {"kev": True, "medical": False, "severity": "high"}
    assert sorted([base | {"ransomware": False, "n": 1}, base | {"ransomware": True, "n": 2}], key=rank_key)[0]["n"] == 2


def test_csaf_and_jvn_fields_their_schemas_do_not_name(hub, feed_server):
    doc = json.loads(json.dumps(ICSMA))
    doc["document"]["x_vendor_rating"] = "urgent"
    doc["vulnerabilities"][0]["exploitability"] = {"status": "active"}
    doc["sbom"] = []
    hub.run("sources", "add", "csaf", feed_server.route("/csaf.json", json.dumps(doc)), "--kind", "csaf")
    assert fetch(hub, "csaf")["new_fields"] == ["sbom", "document.x_vendor_rating",
                                                "vulnerabilities[].exploitability"]
    first = JVN.index("<sec:cvss ")
    text = JVN[:first] + "<sec:cwe id=\"CWE-79\"/>\n    " + JVN[first:]
    hub.run("sources", "add", "jvn", feed_server.route("/jvn.rdf", text), "--kind", "jvn")
    out = fetch(hub, "jvn")
    assert out["new_fields"] == ["item.sec:cwe"]
    assert json.loads(hub.run("sources", "show", "jvn").stdout)["unknown_fields"]["item.sec:cwe"]["count"] == 1
    # The real feeds as they are: nothing unknown.
    hub.run("sources", "add", "jvn2", feed_server.url("/jvn/vulsdata_jvndb_2023.rdf"), "--kind", "jvn")
    hub.run("sources", "add", "csaf2", feed_server.url("/cisa_icsma/cisagov_CSAF_icsma-24-060-01.json"), "--kind",
            "csaf")
    assert fetch(hub, "jvn2")["new_fields"] == [] and fetch(hub, "csaf2")["new_fields"] == []
