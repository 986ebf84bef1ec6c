"""Analyst triage end to end through the CLI, on a database ingested from ../shared/data."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from ceptoar.core.extensions import props
from ceptoar.publishing.filters import FilterError, compile_filter
from ceptoar.store import Store, StoreError
from tests.conftest import DATA, Hub, copied, new_db

FILES = {
    "jvn2022": ("jvn", "jvn/vulsdata_jvndb_2022.rdf"),
    "myjvn": ("jvn", "jvn/spiegel_go-myjvn_getVulnOverviewList_2018-03-13_extracted.rdf"),
    "kev": ("kev", "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json"),
    "icsma": ("csaf", "cisa_icsma/cisagov_CSAF_icsma-24-200-01.json"),
    "icsma2": ("csaf", "cisa_icsma/cisagov_CSAF_icsma-24-060-01.json"),
}


def _load(folder: Path) -> str:
    hub = Hub(new_db(folder))
    (folder / "sources.toml").write_text("# no sources\n")
    hub.run("init", "--sources", str(folder / "sources.toml"))
    for sid, (kind, path) in FILES.items():
        hub.run("sources", "add", sid, f"https://feeds.example/{sid}", "--kind", kind)
        hub.run("ingest", str(DATA / path), "--source", sid)
    return hub.db


@pytest.fixture
def loaded(tmp_path):
    """A hub with the files of FILES ingested (made once, copied for each test)."""
    return Hub(copied("triage-loaded", tmp_path, _load))


def one(hub, *filters):
    rows = hub.json("advisories", "list", *filters)
    assert len(rows) == 1, rows
    return rows[0]


def test_search_japanese_english_identifiers(loaded):
    assert one(loaded, "--search", "コレガ")["identifiers"][0] == "JVNDB-2018-000024"
    assert one(loaded, "--search", "Vue PACS")["title"] == "Philips Vue PACS"
    assert one(loaded, "--search", "JVN#15201064")["identifiers"][0] == "JVNDB-2018-000024"
    assert {r["source"] for r in loaded.json("advisories", "list", "--search", "Android")} == {"jvn2022", "kev"}
    short = loaded.json("advisories", "list", "--search", "脆弱")  # two characters: below the trigram size
    store = Store(loaded.db)
    found = [store.advisories.get(r["id"]) for r in short]
    assert len(found) >= 5
    assert all("脆弱" in (a["title"] or "") + (a["description"] or "") + json.dumps(a["identifiers"], ensure_ascii=False)
               for a in found)
    assert loaded.json("advisories", "list", "--search", "存在しない語句") == []
    assert len(loaded.json("advisories", "list", "--search", "dicom", "--medical")) == 1


def test_status_and_medical_filters(loaded):
    assert len(loaded.json("advisories", "list")) == 3 + 2 + 1404 + 2
    medical = loaded.json("advisories", "list", "--medical")
    assert {r["source"] for r in medical} >= {"icsma", "icsma2"}
    assert all("medical-suggested" in r["tags"] for r in medical)
    assert loaded.json("advisories", "list", "--status", "published") == []


def test_triage_publish_and_versions(loaded):
    pacs = one(loaded, "--source", "icsma")
    assert pacs["severity"] is None and pacs["medical"] is None and pacs["collections"] == []
    loaded.run("--actor", "analyst-a", "advisories", "triage", pacs["id"], "--severity", "critical",
               "--medical", "--note", "病院の PACS で広く使われている")
    loaded.run("--actor", "analyst-a", "advisories", "publish", pacs["id"][8:20])
    shown = json.loads(loaded.run("advisories", "show", pacs["id"]).stdout)
    assert shown["status"] == "published" and shown["severity"] == "critical" and shown["medical"] is True
    assert "medical" in shown["tags"] and "medical-suggested" not in shown["tags"]
    assert set(shown["collections"]) == {"medical", "critical-high"}
    assert shown["notes"][0]["text"] == "病院の PACS で広く使われている" and shown["notes"][0]["actor"] == "analyst-a"
    assert len(shown["versions"]) == 2  # as ingested, as published
    bundle = json.loads(loaded.run("advisories", "show", pacs["id"], "--format", "stix").stdout)
    report = bundle["objects"][0]
    assert props(report)["severity"] == "critical" and props(report)["medical"] is True
    assert "medical" in report["labels"]
    # A change to published content is a new version, in the same collections.
    loaded.run("advisories", "tag", pacs["id"], "jma")
    shown = json.loads(loaded.run("advisories", "show", pacs["id"]).stdout)
    assert len(shown["versions"]) == 3 and "jma-amber" in shown["collections"]
    # Publishing again without a change adds nothing.
    loaded.run("advisories", "publish", pacs["id"])
    assert len(json.loads(loaded.run("advisories", "show", pacs["id"]).stdout)["versions"]) == 3


def test_membership_travels_with_references_and_tlp(loaded, tmp_path):
    pacs = one(loaded, "--source", "icsma")
    loaded.run("advisories", "triage", pacs["id"], "--tlp", "AMBER", "--medical")
    loaded.run("advisories", "publish", pacs["id"])
    shown = json.loads(loaded.run("advisories", "show", pacs["id"]).stdout)
    assert shown["collections"] == []  # AMBER matches no CLEAR/GREEN collection and carries no member tag
    loaded.run("advisories", "tag", pacs["id"], "jda")
    assert json.loads(loaded.run("advisories", "show", pacs["id"]).stdout)["collections"] == ["jda-amber"]
    store = Store(loaded.db)
    members = [r["object_id"] for r in store.rows("SELECT object_id FROM membership WHERE collection = 'jda-amber'")]
    types = {m.split("--")[0] for m in members}
    assert types == {"report", "vulnerability", "identity", "marking-definition", "extension-definition"}
    assert sum(t.startswith("vulnerability--") for t in members) == 13
    # One placement, one moment: each row its own date_added (a reader paging with added_after never
    # meets a tie at a page's end), all within the same millisecond's neighbourhood.
    stamps = [r["date_added"] for r in store.rows("SELECT date_added FROM membership WHERE collection = 'jda-amber' "
                                                  "ORDER BY seq")]
    assert len(set(stamps)) == len(stamps) and stamps == sorted(stamps)
    span = datetime.fromisoformat(stamps[-1].rstrip("Z")) - datetime.fromisoformat(stamps[0].rstrip("Z"))
    assert span.total_seconds() < 1
    # Every pinned object is served at AMBER in that collection: the report's TLP, whatever its own marking.
    assert {r["tlp_rank"] for r in store.rows("SELECT tlp_rank FROM membership WHERE collection = 'jda-amber'")} == {2}


def test_revoke_reaches_every_holding_collection(loaded):
    adv = one(loaded, "--source", "icsma2")
    loaded.run("advisories", "triage", adv["id"], "--severity", "high")
    loaded.run("advisories", "publish", adv["id"])
    before = json.loads(loaded.run("advisories", "show", adv["id"]).stdout)["collections"]
    assert before == ["critical-high", "medical"]
    loaded.run("advisories", "revoke", adv["id"], "--reason", "duplicate of ICSMA-24-060-01 update")
    bundle = json.loads(loaded.run("advisories", "show", adv["id"], "--format", "stix").stdout)
    assert bundle["objects"][0]["revoked"] is True
    store = Store(loaded.db)
    for c in before:
        versions = [json.loads(store.scalar("SELECT json FROM objects WHERE id = ? AND modified = ? AND origin = 'hub'",
                                            (adv["id"], r["modified"]))).get("revoked", False)
                    for r in store.rows("SELECT modified FROM membership WHERE collection = ? AND object_id = ? "
                                        "ORDER BY seq", (c, adv["id"]))]
        assert versions == [False, True]
    r = loaded.run("advisories", "publish", adv["id"], ok=None)
    assert r.exit_code == 1 and "revoked" in r.output


def test_reject_and_state_rules(loaded):
    adv = one(loaded, "--source", "myjvn", "--search", "WP All Import")
    loaded.run("advisories", "reject", adv["id"], "--reason", "not used in medical settings")
    assert loaded.json("advisories", "list", "--status", "rejected")[0]["id"] == adv["id"]
    r = loaded.run("advisories", "revoke", adv["id"], "--reason", "x", ok=None)
    assert r.exit_code == 1 and "only published" in r.output
    other = one(loaded, "--source", "icsma")
    loaded.run("advisories", "publish", other["id"])
    r = loaded.run("advisories", "reject", other["id"], "--reason", "x", ok=None)
    assert r.exit_code == 1 and "revoke" in r.output


def test_bulk_publish_asks_unless_yes(loaded):
    r = loaded.run("advisories", "publish", "--source", "kev", "--search", "Citrix", input="n\n", ok=None)
    assert r.exit_code == 1 and "Publish" in r.output
    assert loaded.json("advisories", "list", "--status", "published") == []
    r = loaded.run("advisories", "publish", "--source", "kev", "--search", "Citrix", input="y\n")
    n = len(loaded.json("advisories", "list", "--status", "published"))
    assert n == len(loaded.json("advisories", "list", "--status", "published", "--search", "Citrix")) > 5
    loaded.run("advisories", "publish", "--source", "icsma", "--medical", "--yes")
    kev = loaded.json("collections", "list")
    assert next(c for c in kev if c["id"] == "kev")["advisories"] == n
    assert loaded.run("advisories", "publish", ok=None).exit_code == 2  # neither ids nor a selection


def test_collections_crud_and_backfill(loaded):
    loaded.run("advisories", "publish", "--source", "kev", "--search", "Fortinet", "--yes")
    published = len(loaded.json("advisories", "list", "--status", "published"))
    out = loaded.run("collections", "add", "ransomware", "--title", "Ransomware", "--filter",
                     "tag = ransomware and tlp <= GREEN").stdout
    ransomware = [r for r in loaded.json("advisories", "list", "--status", "published") if "ransomware" in r["tags"]]
    assert f"{len(ransomware)} published advisories entered it" in out and 0 < len(ransomware) < published
    shown = json.loads(loaded.run("collections", "show", "ransomware").stdout)
    assert shown["advisories"] == len(ransomware) and shown["uuid"]
    by_uuid = json.loads(loaded.run("collections", "show", shown["uuid"]).stdout)
    assert by_uuid["id"] == "ransomware"
    ids = [c["id"] for c in loaded.json("collections", "list")]
    assert ids == sorted(ids) and "ransomware" in ids and "medical" in ids
    bad = loaded.run("collections", "add", "x", "--title", "X", "--filter", "tlp <= PURPLE", ok=None)
    assert bad.exit_code == 1 and "position 8" in bad.output
    loaded.run("collections", "remove", "ransomware")
    assert "ransomware" not in [c["id"] for c in loaded.json("collections", "list")]
    assert loaded.run("collections", "remove", "ransomware", ok=None).exit_code == 1


def test_audit_records_every_mutation_and_is_append_only(loaded):
    adv = one(loaded, "--source", "icsma")
    loaded.run("--actor", "suzuki", "advisories", "tag", adv["id"], "jma", "hospitals")
    loaded.run("--actor", "suzuki", "advisories", "untag", adv["id"], "hospitals")
    loaded.run("--actor", "tanaka", "advisories", "triage", adv["id"], "--tlp", "GREEN")
    loaded.run("--actor", "tanaka", "advisories", "publish", adv["id"])
    rows = loaded.json("audit", "list", "--actor", "suzuki")
    assert [r["action"] for r in rows] == ["tag", "untag"] and rows[0]["target"] == adv["id"]
    assert rows[0]["details"]["added"] == ["jma", "hospitals"]
    assert [r["action"] for r in loaded.json("audit", "list", "--action", "publish")] == ["publish"]
    assert loaded.json("audit", "list", "--since", "2999-01-01") == []
    import os
    env = os.environ.get("CEPTOAR_ACTOR")
    os.environ["CEPTOAR_ACTOR"] = "env-analyst"
    try:
        loaded.run("advisories", "tag", adv["id"], "x1")
    finally:
        os.environ.pop("CEPTOAR_ACTOR") if env is None else os.environ.__setitem__("CEPTOAR_ACTOR", env)
    assert loaded.json("audit", "list", "--limit", "1")[0]["actor"] == "env-analyst"
    store = Store(loaded.db)
    with pytest.raises(StoreError, match="append-only"):
        store.execute("DELETE FROM audit")
    with pytest.raises(StoreError, match="append-only"):
        store.execute("UPDATE audit SET actor = 'x'")


def test_auto_publish_rule_from_the_catalogue(hub, feed_server, tmp_path):
    catalogue = tmp_path / "auto.toml"
    catalogue.write_text(f'''
[[source]]
id = "csaf"
kind = "csaf"
url = "{feed_server.url('/cisa_icsma/cisagov_CSAF_icsma-24-060-01.json')}"
auto_publish = "medical and tlp <= GREEN"

[[source]]
id = "kev"
kind = "kev"
url = "{feed_server.url('/cisa_kev/vulsdata_kev_2022-08-18_partial.json')}"
''', encoding="utf-8")
    hub.run("init", "--sources", str(catalogue))
    hub.run("fetch")
    published = hub.json("advisories", "list", "--status", "published")
    assert [r["source"] for r in published] == ["csaf"] and "medical" in published[0]["collections"]
    assert hub.json("audit", "list", "--action", "publish")[0]["actor"] == "auto-publish:csaf"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[source]]\nid = "x"\nkind = "rss"\nurl = "https://x.example/"\nauto_publish = "medical and"\n')
    r = hub.run("init", "--sources", str(bad), ok=None)
    assert r.exit_code == 1 and "auto_publish" in r.output and "position" in r.output


@pytest.mark.parametrize(("expr", "row", "expected"), [
    ("medical and tlp <= GREEN", {"medical": True, "tlp": "GREEN"}, True),
    ("medical and tlp <= GREEN", {"medical": True, "tlp": "AMBER"}, False),
    ("tlp < AMBER+STRICT", {"tlp": "AMBER"}, True),
    ("severity >= high", {"severity": "medium"}, False),
    ("severity >= high", {"severity": None}, False),
    ("cvss >= 7", {"max_cvss": 7.0}, True),
    ("not kev", {"kev": False}, True),
    ("kev = false or source = jvn", {"kev": True, "source": "jvn"}, True),
    ("tag = 'with space' and tag != noise", {"tags": ["with space"]}, True),
    ("(severity = low or severity = critical) and not (cvss < 5)", {"severity": "critical", "max_cvss": 4.0}, False),
])
def test_filter_language(expr, row, expected):
    assert compile_filter(expr)(row) is expected


@pytest.mark.parametrize(("expr", "position"), [
    ("", 1), ("tlp", 4), ("tlp <=", 7), ("tlp <= PURPLE", 8), ("(medical", 9), ("medical and", 12),
    ("bogus = 1", 1), ("medical = maybe", 11), ("tag > x", 5), ("medical; drop table", 8),
])
def test_filter_errors_name_the_position(expr, position):
    with pytest.raises(FilterError, match=f"position {position}:"):
        compile_filter(expr)


@pytest.mark.parametrize("query", ["CVE-2024", "脆弱性", "Microsoft Windows", "ICSMA-24", "windows", "CVE-2021-44228",
                                   "2021-44228", "44228", "cve-2024-2", "2024-2"])
@pytest.mark.parametrize("status", ["all", "new"])
def test_search_is_the_newest_matches_whatever_the_batches(loaded, query, status):
    """Search reads the index newest first in growing batches and applies the other conditions to
    each: it must give exactly the newest matching advisories (by a scan of every row), with any
    limit, with a filter that rejects most hits, and without a limit."""
    store = Store(loaded.db)
    # The order searches promise: SQLite's full-text key (published second, then rowid), PostgreSQL's
    # (published time, then seq), newest first.
    key = "search_key" if store.dialect == "sqlite" else "published_utc, seq"
    rows = store.rows(f"SELECT id, title, description, identifiers, status, source, {key} FROM advisories")
    hits = sorted((r for r in rows if any(query.lower() in (c or "").lower()
                                          for c in (r["title"], r["description"], r["identifiers"]))
        and status in ("all", r["status"])),
        key=lambda r: (r["search_key"],) if "search_key" in r else (r["published_utc"] or "", r["seq"]), reverse=True)
    assert hits
    for limit in (1, 7, 30, None):
        got = [r["id"] for r in store.advisories.list(search=query, status=status, limit=limit)]
        assert got == [r["id"] for r in hits][:limit], limit
    for source in ("kev", "icsma"):
        got = [r["id"] for r in store.advisories.list(search=query, status=status, source=source, limit=3)]
        assert got == [r["id"] for r in hits if r["source"] == source][:3], source


def test_the_search_key_ingest_writes_is_the_one_the_index_defines(loaded):
    """Ingest writes each new advisory's full-text key itself (SQLite); it must be the key the
    schema defines from the row's published time and rowid, as the trigger computes it."""
    from ceptoar.store.schema import search_key

    store = Store(loaded.db)
    if store.dialect != "sqlite":
        pytest.skip("the full-text key is SQLite's")
    assert store.scalar("SELECT COUNT(*) FROM advisories WHERE search_key IS NOT NULL") > 50
    assert store.scalar(f"SELECT COUNT(*) FROM advisories WHERE search_key IS NOT {search_key('advisories')}") == 0


def test_renormalize_rebuilds_facts_from_raw_and_keeps_decisions(loaded):
    store = Store(loaded.db)
    # Every stored raw entry parses alone with its own normalizer: nothing changes on a rerun.
    first = loaded.json("renormalize")
    assert {r["source"]: r["skipped"] for r in first} == {s: 0 for s in FILES}
    assert sum(r["updated"] + r["new"] for r in first) == 0
    assert sum(r["unchanged"] for r in first) == len(loaded.json("advisories", "list", "--status", "all"))
    # The analyst decides; then a raw entry says more than the stored facts (as after a fix).
    adv = one(loaded, "--cve", "CVE-2021-44228")
    loaded.run("advisories", "triage", adv["id"], "--severity", "critical", "--tlp", "GREEN", "--note", "log4j")
    loaded.run("advisories", "publish", adv["id"])
    key, raw = next((k, r) for batch in store.sources.raw_entries("kev") for k, r in batch if "CVE-2021-44228" in r)
    catalog = json.loads(raw)
    catalog["vulnerabilities"][0]["shortDescription"] = "再正規化で読み直された説明"
    store.sources.write_raw([("kev", key, "stale", None, json.dumps(catalog, ensure_ascii=False))])
    (kev,) = loaded.json("renormalize", "--source", "kev")
    assert kev["updated"] == 1 and kev["new"] == 0 and kev["skipped"] == 0
    after = store.advisories.get(adv["id"])
    assert after["description"] == "再正規化で読み直された説明"
    assert (after["severity"], after["analyst_tlp"], after["status"]) == ("critical", "GREEN", "published")
    assert after["notes"] and after["notes"][0]["text"] == "log4j"
    assert one(loaded, "--cve", "CVE-2021-44228", "--status", "published")["pending_update"] is True
    # A raw entry that no longer parses is reported, and its advisory left as it was.
    store.sources.write_raw([("kev", key, "stale", None, "{not json")])
    (kev,) = loaded.json("renormalize", "--source", "kev")
    assert kev["skipped"] == 1 and store.advisories.get(adv["id"])["description"] == "再正規化で読み直された説明"
    assert loaded.run("renormalize", "--source", "nope", ok=False).exit_code == 1
