"""One contract for the store on both engines: every repository does the same on SQLite (in memory)
and on a real PostgreSQL server (started by the tests from Debian's package; skipped with the
reason when its binaries are absent). Plus `migrate-store` copying a hub across engines."""

from __future__ import annotations

import threading
import time

import pytest

from ceptoar.clinics.digest import subscribers as subs
from ceptoar.core.errors import CeptoarError, Conflict, StoreError
from ceptoar.core.model import TLP_ORDER
from ceptoar.ops import catalogue
from ceptoar.pipeline import ingest_file
from ceptoar.publishing import collections as colls
from ceptoar.publishing import triage
from ceptoar.sharing import members
from ceptoar.store import Store, utcnow
from ceptoar.store.copy import copy_store, tables
from ceptoar.store.schema import SCHEMA_VERSION
from tests.conftest import DATA, ENGINE, postgres_server

ENGINES = ["sqlite", "postgresql"]
# Both engines in every run: the PostgreSQL run of the whole suite need not repeat it.
pytestmark = pytest.mark.skipif(ENGINE == "postgresql", reason="the default run covers both engines")


def new_store(engine: str) -> Store:
    target = ":memory:" if engine == "sqlite" else postgres_server().database()
    store = Store(target)
    store.migrate()
    return store


@pytest.fixture(params=ENGINES)
def store(request):
    s = new_store(request.param)
    yield s
    s.close()


def add_source(store: Store, sid: str, kind: str) -> dict:
    catalogue.add_source(store, {"id": sid, "url": f"https://feeds.example/{sid}", "kind": kind})
    return store.sources.get(sid)


@pytest.fixture(params=ENGINES)
def loaded(request):
    """KEV (1,404 advisories), a JVN feed in Japanese and a CSAF advisory, some published."""
    s = new_store(request.param)
    for sid, kind, path in [("kev", "kev", "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json"),
                            ("jvn", "jvn", "jvn/vulsdata_jvndb_2022.rdf"),
                            ("icsma", "csaf", "cisa_icsma/cisagov_CSAF_icsma-24-200-01.json")]:
        res = ingest_file(s, DATA / path, add_source(s, sid, kind))
        assert res.status == "ok", res.error
    yield s
    s.close()


def test_schema_and_seeds(store):
    assert {t for t, _ in tables()} <= set(store.table_names())
    assert store.meta("next_key") and int(store.meta("schema_version")) >= 8
    # the OASIS TLP marking definitions and the hub's identity are there, owned by the hub
    assert store.objects.owners(["marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487"])
    assert store.migrate() == int(store.meta("schema_version"))  # idempotent


def test_transactions_are_all_or_nothing_and_nest(store):
    add_source(store, "a", "kev")
    with pytest.raises(RuntimeError), store.transaction():
        store.sources.set_enabled("a", False)
        with store.transaction():  # joins the outer one
            store.sources.record_fetch("a", "error", "x")
        raise RuntimeError("boom")
    row = store.sources.get("a")
    assert row["enabled"] is True and row["last_status"] is None
    with pytest.raises(Conflict):
        with store.transaction():
            store.execute("INSERT INTO meta (key, value) VALUES ('next_key', 'dup')")
    assert store.meta("next_key") != "dup"
    assert store.sources.get("a")["enabled"] is True  # usable after the failure


def test_sources_raw_entries_and_followed(store):
    add_source(store, "s", "rss")
    assert [r["id"] for r in store.sources.list()] == ["s"] and store.sources.get("s")["options"] == {}
    store.sources.record_fetch("s", "ok", etag='"e1"', last_modified="Sat, 21 Nov 2026 00:00:00 GMT", note="n")
    assert store.sources.get("s")["etag"] == '"e1"'
    store.sources.record_fetch("s", "error", "HTTP 500")
    assert store.sources.get("s")["etag"] == '"e1"' and store.sources.get("s")["last_error"] == "HTTP 500"
    with store.transaction():
        store.sources.write_raw([("s", "k1", "h1", "v1", "raw one"), ("s", "k2", "h2", None, "raw 二")])
        store.sources.write_raw([("s", "k1", "h1b", "v2", "raw one again")])
    assert store.sources.raw_versions("s", ["k1", "k2", "k3"]) == {"k1": ("h1b", "v2"), "k2": ("h2", None)}
    assert [r for batch in store.sources.raw_entries("s", size=1) for r in batch] == [
        ("k1", "raw one again"), ("k2", "raw 二")]
    with store.transaction():
        store.sources.mark_followed("s", [("doc1", "2026-01-01"), ("doc2", "2026-01-02")])
        store.sources.mark_followed("s", [("doc1", "2026-02-01")])
    assert store.sources.followed("s") == {"doc1": "2026-02-01", "doc2": "2026-01-02"}
    catalogue.set_enabled(store, "s", False, "tester")
    assert store.sources.get("s")["enabled"] is False
    assert store.audit.list(actor="tester")[0]["action"] == "source-disable"


def test_search_finds_japanese_substrings_and_identifiers(loaded):
    def found(text, **kw):
        return [a["id"] for a in loaded.advisories.list(search=text, status="all", **kw)]

    two = found("脆弱")  # two characters: below a trigram
    assert two and all("脆弱" in (a["title"] or "") + (a["description"] or "") + str(a["identifiers"])
                       for a in loaded.advisories.list(ids=two, status="all"))
    assert len(found("Vue PACS")) == 1 and found("vue pacs") == found("Vue PACS")  # ASCII case ignored
    assert found("CVE-2021-44228") and found("50%") == [] and found("a_b_c_d") == []
    assert found("存在しない語句") == []
    newest = loaded.advisories.list(search="Microsoft", status="all")
    assert len(newest) > 50
    assert [a["published_utc"] for a in newest] == sorted((a["published_utc"] for a in newest), reverse=True)
    assert len(loaded.advisories.list(search="Microsoft", status="all", limit=5)) == 5
    # A limit gives the newest of all the hits, whether they are among the newest advisories (a
    # common word: PostgreSQL looks there first) or spread over the table (then found by the index).
    for word in ("Microsoft", "脆弱", "microsoft windows", "CVE-2021-44228", "Apache", "JVN", "存在しない語句"):
        every = found(word)
        for n in (1, 3, 50):
            assert found(word, limit=n) == every[:n], (word, n)
        queue = [a["id"] for a in loaded.advisories.list(search=word, status="new")]
        assert [a["id"] for a in loaded.advisories.list(search=word, status="new", limit=3)] == queue[:3]
        assert set(queue) <= set(every)
    # Pasted line breaks and tabs are spaces on both engines (PostgreSQL's text joins title and
    # description with one); other control characters are refused, not matched against everything.
    assert found("Microsoft\nWindows") == found("Microsoft Windows") and found("\n") == found(" ")
    for bad in ("\x00", "Micro\x1bsoft", "\x7f"):
        with pytest.raises(CeptoarError, match="control character"):
            found(bad)
    # After a large ingest (the worker's checkpoint: SQLite's WAL, PostgreSQL's ANALYZE) search is the same.
    loaded.checkpoint()
    assert loaded.advisories.list(search="Microsoft", status="all") == newest


def test_advisories_prefixes_filters_and_decisions(loaded):
    kev = loaded.advisories.list(cve="CVE-2021-44228", status="all")
    assert len(kev) == 1
    aid = kev[0]["id"]
    assert loaded.advisories.find(aid.split("--")[1][:8])["id"] == aid
    with pytest.raises(StoreError):
        loaded.advisories.find("zzzzzz")
    assert loaded.advisories.ids_by_prefix("report--") and len(loaded.advisories.ids_by_prefix("report--")) == 2
    with loaded.transaction():
        loaded.advisories.decide(aid, analyst_tlp="AMBER", severity="critical", medical=True,
                                 tags_added=["log4j"], decided_at=utcnow())
    a = loaded.advisories.get(aid)
    assert (a["tlp"], a["tlp_rank"], a["medical"]) == ("AMBER", TLP_ORDER.index("AMBER"), True)
    assert "log4j" in a["tags"] and "kev" in a["tags"]
    assert [x["id"] for x in loaded.advisories.list(tag="log4j", status="all")] == [aid]
    assert aid in [x["id"] for x in loaded.advisories.list(medical=True, status="all")]
    assert loaded.advisories.list(since="2099-01-01", status="all") == []
    assert "CVE-2021-44228" in loaded.advisories.kev_cves()


def test_publication_membership_pages_and_revocation(loaded):
    colls.add(loaded, "kev", "KEV", "tag = kev")
    kev = [a["id"] for a in loaded.advisories.list(source="kev", status="all", limit=30)]
    triage.publish(loaded, kev, "analyst")
    pubs = loaded.publications.latest(kev)
    assert set(pubs) == set(kev)
    pins = loaded.publications.pins(kev[0], pubs[kev[0]].version)
    assert pins[0].object_id == kev[0]  # the report first: pins keep their insertion order
    coll = loaded.collections.get("kev")
    assert coll is not None
    rows = loaded.membership.page("kev", TLP_ORDER.index("CLEAR"), limit=10)
    assert len(rows) == 10
    after = loaded.membership.page("kev", TLP_ORDER.index("CLEAR"), limit=10,
                                   cursor=(rows[-1]["date_added"], rows[-1]["seq"]))
    assert after and not {r["object_id"] for r in rows} & {r["object_id"] for r in after}
    triage.revoke(loaded, [kev[0]], "wrong", "analyst")
    assert loaded.advisories.get(kev[0])["status"] == "revoked"
    assert loaded.membership.collections_of([kev[0]])[kev[0]] == ["kev"]
    full = {k: v for k, v in loaded.membership.derive("kev").items()}
    stored = {(r["object_id"], r["modified"]) for r in loaded.rows(
        "SELECT object_id, modified FROM membership WHERE collection = ?", ("kev",))}
    assert set(full) == stored


def test_members_grants_secrets_and_certificates(store):
    assert members.add(store, "jma", "日本医師会", "GREEN", "tester") is True
    assert members.add(store, "jma", "日本医師会", "AMBER", "tester") is False
    colls.add(store, "c1", "C1", "tlp <= GREEN", actor="tester")
    members.grant(store, "jma", "c1", True, False, "tester")
    assert store.members.grants_of("jma") == {"c1": (True, False)}
    secret = members.new_secret(store, "jma", "tester")
    key_id = members.key_id_of(secret)
    assert store.members.by_key(key_id)["id"] == "jma"
    assert members.verify_secret(secret, store.members.by_key(key_id)["secret_hash"])
    members.set_certificate(store, "jma", fingerprint="ab" * 32, actor="tester")
    assert store.members.by_certificate("ab" * 32, None)["id"] == "jma"
    members.add(store, "other", "Other", "CLEAR")
    with pytest.raises(members.MemberError):
        members.set_certificate(store, "other", fingerprint="ab" * 32)
    members.ungrant(store, "jma", "c1", "tester")
    assert store.members.grants_of("jma") == {}
    members.set_enabled(store, "jma", False, "tester")
    assert store.members.get("jma")["enabled"] in (False, 0)
    actions = [r["action"] for r in store.audit.list(actor="tester")]
    assert actions == ["member-add", "member-update", "collection-add", "member-grant", "member-secret",
                       "member-cert", "member-ungrant", "member-disable"]


def test_subscribers_runs_and_deliveries(store):
    members.add(store, "jma", "JMA", "GREEN")
    assert subs.add(store, {"email": "a@clinic.example.jp", "member": "jma", "clearance": "GREEN"}, "t") == "added"
    subs.add(store, {"email": "b@clinic.example.jp", "member": "jma", "lang": "en"}, "t")
    segs = store.subscribers.segments("daily")
    assert {(s["member"], s["clearance"], s["lang"]) for s in segs} == {("jma", "GREEN", "ja"), ("jma", "CLEAR", "en")}
    got = store.subscribers.recipients("daily", "jma", "GREEN", "ja", None)
    assert [r["email"] for r in got] == ["a@clinic.example.jp"]
    run = store.deliveries.create_run("daily-x", "digest", "daily", "2026-11-22T00:00:00.000000Z")
    with store.transaction():
        store.deliveries.record(run["id"], "a@clinic.example.jp", "sent", "<m@x>", frequency="daily",
                                until=run["until"])
    assert store.deliveries.summary(run["id"]).get("sent") == 1
    # the digest cursor moved: the next run's segment has `since` set, and the recipient follows it
    assert store.subscribers.recipients("daily", "jma", "GREEN", "ja", None) == []
    assert store.subscribers.recipients("daily", "jma", "GREEN", "ja", run["until"])
    token = store.subscribers.get("a@clinic.example.jp")["token"]
    assert subs.unsubscribe(store, token, "subscriber", "web") == "a@clinic.example.jp"
    assert subs.add(store, {"email": "a@clinic.example.jp", "member": "jma"}) == "unsubscribed"
    store.deliveries.add_alert_period("summit", "2026-11-01T00:00:00.000000Z", "2026-12-01T00:00:00.000000Z", None)
    assert [p["name"] for p in store.deliveries.active_alert_periods("2026-11-22T00:00:00.000000Z")] == ["summit"]
    assert store.deliveries.queue_flash("report--x", "summit") is True
    assert store.deliveries.queue_flash("report--x", "summit") is False
    assert [f["advisory"] for f in store.deliveries.pending_flashes()] == ["report--x"]


def test_incidents_audit_and_leases(store):
    members.add(store, "jma", "JMA", "GREEN")
    inc = {"id": "incident--0123456789", "status": "reported", "prefecture": "東京都", "member": "jma",
           "created": utcnow(), "updated": utcnow(), "facility": "さくら"}
    store.incidents.save(inc)
    assert store.incidents.find("incident--012345")["facility"] == "さくら"
    assert [i["id"] for i in store.incidents.list(prefecture="東京都")] == [inc["id"]]
    store.audit.add("a1", "x", "t1", {"k": "値"})
    store.audit.add("a2", "y", "t2", member="m", http_status=200)
    assert [r["action"] for r in store.audit.list(limit=2)] == ["x", "y"]
    assert store.audit.list(member="m")[0]["details"] is None
    with pytest.raises(StoreError, match="append-only"):
        store.execute("DELETE FROM audit")
    with pytest.raises(StoreError, match="append-only"):
        store.execute("UPDATE audit SET actor = 'someone else'")
    assert store.leases.acquire("l", "h1", "work", 60) is None
    assert store.leases.acquire("l", "h2", "work", 60)["holder"] == "h1"
    assert store.leases.renew("l", "h1", 60) and not store.leases.renew("l", "h2", 60)
    store.leases.release("l", "h1")
    assert store.leases.acquire("l", "h2", "work", 0.01) is None
    time.sleep(0.05)
    assert store.leases.acquire("l", "h3", "work", 60) is None  # expired: taken over


def test_writers_take_turns(request):
    """Two connections writing read-modify-write at once lose nothing (SQLite's write lock, or the
    advisory lock every PostgreSQL write transaction holds)."""
    for engine in ENGINES:
        url = postgres_server().database() if engine == "postgresql" else str(request.config.rootpath / ".pytest-w.db")
        setup = Store(url)
        setup.migrate()
        setup.execute("INSERT INTO meta (key, value) VALUES ('counter', '0')")

        def bump(url=url):
            s = Store(url)
            for _ in range(25):
                with s.transaction():
                    n = int(s.meta("counter"))
                    s.execute("UPDATE meta SET value = ? WHERE key = 'counter'", (str(n + 1),))
            s.close()

        threads = [threading.Thread(target=bump) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert setup.meta("counter") == "100", engine
        setup.close()
        if engine == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                (request.config.rootpath / f".pytest-w.db{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_hub_copied_across_engines_keeps_every_row(loaded, engine, tmp_path):
    colls.add(loaded, "kev", "KEV", "tag = kev")
    kev = [a["id"] for a in loaded.advisories.list(source="kev", status="all", limit=20)]
    triage.publish(loaded, kev, "analyst")
    members.add(loaded, "jma", "JMA", "GREEN")
    target = str(tmp_path / "copy.db") if engine == "sqlite" else postgres_server().database()
    copy = Store(target)
    counts = copy_store(loaded, copy, actor="tester")
    assert counts["advisories"] == loaded.count("advisories") > 1400
    assert {t: copy.count(t) for t in counts} == {t: loaded.count(t) + (t == "audit") for t in counts}
    # the copy works: search, pins in order, pages, and new rows after the copied ones
    assert [a["id"] for a in copy.advisories.list(search="Vue PACS", status="all")] == \
        [a["id"] for a in loaded.advisories.list(search="Vue PACS", status="all")]
    pub = copy.publications.latest([kev[0]])[kev[0]]
    assert [p.object_id for p in copy.publications.pins(kev[0], pub.version)] == \
        [p.object_id for p in loaded.publications.pins(kev[0], pub.version)]
    copy.audit.add("after", "copy")
    assert copy.audit.list(limit=1)[0]["actor"] == "after"
    with pytest.raises(StoreError, match="already holds a hub"):
        copy_store(loaded, copy)
    copy.close()


def test_a_second_app_does_not_disturb_the_first(tmp_path):
    """The TAXII authentication is bound to its app: creating another app keeps the first working."""
    from ceptoar.ops import setup
    from ceptoar.sharing.taxii.app import create_app
    from tests.trust_helpers import Reader

    db = str(tmp_path / "hub.db")
    setup.init(Store(db))
    reader = Reader(db, "jma", "GREEN", ["medical"])
    assert reader.get("/taxii2/").status_code == 200
    create_app(str(tmp_path / "other.db"))
    assert reader.get("/taxii2/").status_code == 200


@pytest.mark.sqlite_only
def test_a_new_sqlite_database_has_16_kib_pages_and_an_older_one_moves_by_migrate_store(tmp_path):
    import shutil

    from tests.conftest import ROOT

    fresh = Store(tmp_path / "fresh.db")
    fresh.migrate()
    assert fresh.scalar("PRAGMA page_size") == 16384
    old = tmp_path / "old.db"
    shutil.copy(ROOT / "tests" / "fixtures" / "released-schema8.db", old)
    before = Store(old)
    assert before.scalar("PRAGMA page_size") == 4096
    before.migrate()
    assert before.scalar("PRAGMA page_size") == 4096  # a database in WAL mode keeps its page size
    moved = Store(tmp_path / "moved.db")
    copy_store(before, moved, actor="tester")
    assert moved.scalar("PRAGMA page_size") == 16384
    assert moved.count("advisories") == before.count("advisories") == 6


def test_postgresql_search_text_stands_apart_and_follows_the_advisory():
    """PostgreSQL's trigram index sits on a table of its own (schemas 21, 22), kept by triggers: a
    title or date change is found at once, a decision leaves the search row untouched (no index
    rewrite), and databases of schema 20 and 21 have the table made anew on migrate."""
    store = new_store("postgresql")
    source = add_source(store, "jvn", "jvn")
    assert ingest_file(store, DATA / "jvn/vulsdata_jvndb_2022.rdf", source).status == "ok"
    first = store.advisories.list(status="all", limit=1)[0]
    aid, word = first["id"], first["title"][:8]
    assert aid in [a["id"] for a in store.advisories.list(search=word, status="all")]
    assert store.count("advisory_search") == store.count("advisories")
    before = store.scalar("SELECT xmin::text FROM advisory_search WHERE advisory = ?", (aid,))
    triage.publish(store, [aid], "analyst")
    with store.transaction():
        store.advisories.decide(aid, severity="high", tags_added=["pacs"])
    assert store.scalar("SELECT xmin::text FROM advisory_search WHERE advisory = ?", (aid,)) == before
    store.execute("UPDATE advisories SET title = 'まったく新しい題名 ABC' WHERE id = ?", (aid,))
    assert [a["id"] for a in store.advisories.list(search="まったく新しい題名 abc", status="all")] == [aid]
    # Its place in the newest-first order follows the advisory's date.
    store.execute("UPDATE advisories SET published_utc = '2099-01-01T00:00:00Z' WHERE id = ?", (aid,))
    assert store.scalar("SELECT published_utc FROM advisory_search WHERE advisory = ?", (aid,)) == "2099-01-01T00:00:00Z"
    assert [a["id"] for a in store.advisories.list(search=word[:2], status="all", limit=1)] == [aid]
    # A database of schema 20: the text was an expression index on advisories.
    for stmt in ("DROP TABLE advisory_search", "DROP FUNCTION ceptoar_search_text() CASCADE",
                 "CREATE INDEX advisories_search ON advisories USING gin ((coalesce(title, '') || chr(10) || "
                 "coalesce(description, '') || chr(10) || identifiers) gin_trgm_ops)",
                 "UPDATE meta SET value = '20' WHERE key = 'schema_version'"):
        store.execute(stmt)
    store.migrate()
    assert store.upgraded_from == 20
    assert store.scalar("SELECT value FROM meta WHERE key = 'schema_version'") == str(SCHEMA_VERSION)
    assert store.count("advisory_search") == store.count("advisories")
    assert store.scalar("SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'advisories_search'") == 0
    assert [a["id"] for a in store.advisories.list(search="まったく新しい題名 abc", status="all")] == [aid]
    # A database of schema 21: the search table without the order, its text as written.
    store.execute("DROP TABLE advisory_search")
    store.execute("CREATE TABLE advisory_search (advisory TEXT PRIMARY KEY, text TEXT NOT NULL)")
    store.execute("INSERT INTO advisory_search SELECT id, title FROM advisories")
    store.execute("UPDATE meta SET value = '21' WHERE key = 'schema_version'")
    store.migrate()
    assert store.upgraded_from == 21 and store.count("advisory_search") == store.count("advisories")
    assert [a["id"] for a in store.advisories.list(search="まったく新しい題名 ABC", status="all", limit=1)] == [aid]
    assert store.scalar("SELECT COUNT(*) FROM advisory_search WHERE text <> lower(text)") == 0
    store.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_large_ingest_checkpoints_the_store(engine, tmp_path):
    """An ingest of 1,000 new or changed advisories or more checkpoints the store, by whatever command
    it ran: SQLite's WAL is folded into the database, PostgreSQL's grown tables are vacuumed and
    analyzed (a search chooses between the trigram index and a scan by their statistics, and prices
    the index by its pending entries)."""
    store = Store(tmp_path / "hub.db") if engine == "sqlite" else new_store(engine)
    store.migrate()

    def checkpointed() -> bool:
        if engine == "sqlite":
            return (tmp_path / "hub.db-wal").stat().st_size == 0
        return store.scalar("SELECT count(*) FROM pg_stat_user_tables WHERE relname IN "
                            "('advisories', 'advisory_search') AND last_analyze IS NOT NULL "
                            "AND last_vacuum IS NOT NULL") == 2

    small = ingest_file(store, DATA / "jvn/vulsdata_jvndb_2022.rdf", add_source(store, "jvn", "jvn"))
    assert small.status == "ok" and not checkpointed()
    kev = ingest_file(store, DATA / "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json",
                      add_source(store, "kev", "kev"))
    assert kev.new >= 1000 and checkpointed()
    store.close()
