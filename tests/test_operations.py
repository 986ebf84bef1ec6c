"""Running the hub as a service: the worker on an injected clock (fetches when due, back-off, feed
health mail to a real SMTP server, digests at their JST time), SIGTERM mid-fetch, TAXII reads and a
command during a long ingest, backup and restore, audit retention, /healthz and /metrics, settings,
and a wheel installed (not editable) into a fresh venv."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import requests

from ceptoar.clinics.digest import subscribers as subs
from ceptoar.core import settings
from ceptoar.core.model import JST
from ceptoar.ops.worker import TickReport, Worker, expected_gap, next_due
from ceptoar.publishing import collections as colls
from ceptoar.publishing import triage
from ceptoar.sharing import members
from ceptoar.store import Store
from ceptoar.store.schema import SCHEMA_VERSION
from tests.conftest import DATA, ENGINE, ROOT, Route
from tests.taxii_fixtures import ServerProcess

JVN = (DATA / "jvn/vulsdata_jvndb_2022.rdf").read_bytes()


class Clock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> datetime:
        self.now += timedelta(**kw)
        return self.now


def test_the_worker_fetches_when_due_backs_off_and_tells_the_operator(hub, feed_server, smtp, tmp_path):
    controller, sink = smtp
    good = feed_server.route("/good.rdf", JVN)
    bad = feed_server.route("/bad.rdf", b"oops", status=500)
    hub.run("sources", "add", "good", good, "--kind", "jvn", "--interval", "3600")
    hub.run("sources", "add", "bad", bad, "--kind", "jvn", "--interval", "3600")
    store = Store(hub.db)
    members.add(store, "jma", "JMA", "GREEN")
    colls.add(store, "all", "All", "tlp <= GREEN")
    members.grant(store, "jma", "all", True, False)
    subs.add(store, {"email": "clinic@clinic.example.jp", "member": "jma", "clearance": "GREEN"})
    cfg = replace(settings.load(hub.db), smtp_host="127.0.0.1", smtp_port=controller.port,
                  operator_email="ops@ceptoar.example.jp", public_url="https://hub.example.jp", failure_threshold=2)
    log: list[str] = []
    # 05:00 JST on a Tuesday: before the daily digest (07:00), not a weekly day (Monday).
    clock = Clock(datetime(2026, 11, 23, 20, 0, tzinfo=UTC))
    worker = Worker(store, cfg, clock=clock, log=log.append, seed=1)

    first = worker.tick()
    assert {r.source: r.status for r in first.fetched} == {"good": "ok", "bad": "error"}
    assert first.digests == [] and sink.messages == []
    assert [r.source for r in worker.tick().fetched] == []  # nothing due again yet
    due = {s["id"]: s["next_due"] for s in store.sources.list()}
    assert due["good"] < due["bad"]  # the failing source backs off
    clock.advance(hours=5)
    second = worker.tick()
    assert {r.source for r in second.fetched} == {"good", "bad"}
    assert ("bad", "failing") in second.health
    mails = sink.parsed("ops@ceptoar.example.jp")
    assert len(mails) == 1 and "source failing: bad" in mails[0]["Subject"]
    assert "HTTP 500" in mails[0].get_content()
    assert store.audit.list(action="source-health")[-1]["target"] == "bad"
    # The source is repaired; the next fetch after its back-off recovers it (and says so).
    feed_server.routes["/bad.rdf"] = Route(JVN)
    clock.advance(days=1)
    third = worker.tick()
    assert ("bad", "ok") in third.health
    assert "source recovered: bad" in sink.parsed("ops@ceptoar.example.jp")[-1]["Subject"]


def test_the_worker_sends_the_daily_digest_at_its_jst_time_once(hub, smtp):
    controller, sink = smtp
    hub.run("sources", "add", "kev", "https://feeds.example/kev", "--kind", "kev")
    hub.run("ingest", str(DATA / "cisa_kev/vulsdata_kev_2022-08-18_partial.json"), "--source", "kev")
    store = Store(hub.db)
    members.add(store, "jma", "JMA", "GREEN")
    colls.add(store, "all", "All", "tlp <= GREEN")
    members.grant(store, "jma", "all", True, False)
    subs.add(store, {"email": "clinic@clinic.example.jp", "member": "jma", "clearance": "GREEN"})
    triage.publish(store, [a["id"] for a in store.advisories.list(status="new")], "analyst")
    cfg = replace(settings.load(hub.db), smtp_host="127.0.0.1", smtp_port=controller.port,
                  public_url="https://hub.example.jp", digest_daily_at="07:00")
    store.execute("UPDATE sources SET enabled = 0")  # digests only
    # the next 07:00 JST after now: what was just published is within its day
    jst_now = datetime.now(UTC).astimezone(JST)
    seven = jst_now.replace(hour=7, minute=0, second=0, microsecond=0)
    seven = seven if seven > jst_now else seven + timedelta(days=1)
    clock = Clock(seven.astimezone(UTC) - timedelta(minutes=1))
    worker = Worker(store, cfg, clock=clock, log=lambda m: None)
    assert worker.tick().digests == []
    clock.advance(minutes=2)
    assert worker.tick().digests == [f"daily-{seven:%Y-%m-%d}"]
    assert len(sink.parsed("clinic@clinic.example.jp")) == 1
    clock.advance(hours=3)
    assert not [d for d in worker.tick().digests if d.startswith("daily")]
    assert len(sink.parsed("clinic@clinic.example.jp")) == 1


def test_schedules_back_off_and_quiet_sources():
    import random

    now = datetime(2026, 11, 22, tzinfo=UTC)
    rand = random.Random(0)
    assert timedelta(minutes=54) <= next_due(now, 3600, 0, rand) - now <= timedelta(minutes=66)
    assert next_due(now, 3600, 3, rand) - now >= timedelta(hours=7)
    assert next_due(now, 3600, 30, rand) - now <= timedelta(days=1, hours=3)
    assert expected_gap(["2026-11-01", "2026-11-02"]) is None
    assert expected_gap([f"2026-11-{d:02d}" for d in (1, 3, 5, 7, 9, 11)]) == timedelta(days=2)


def test_a_quiet_source_is_reported(hub, tmp_path):
    store = Store(hub.db)
    hub.run("sources", "add", "nco", "https://feeds.example/nco", "--kind", "rss")
    with store.transaction():
        for i in range(8):  # one advisory a day in early November, then nothing
            store.execute("INSERT INTO advisories (id, source, entry_key, source_report, first_seen, updated_at, "
                          "source_tlp, tlp, tlp_rank) VALUES (?, 'nco', ?, ?, ?, ?, 'CLEAR', 'CLEAR', 0)",
                          (f"report--{i}", f"k{i}", f"report--{i}", f"2026-11-0{i + 1}T00:00:00.000000Z",
                           "2026-11-01T00:00:00Z"))
        store.execute("UPDATE sources SET last_new = '2026-11-08T00:00:00.000000Z', failures = 0 WHERE id = 'nco'")
    worker = Worker(store, settings.load(hub.db), log=lambda m: None)
    report = TickReport()
    worker.watch_health(datetime(2026, 11, 30, tzinfo=UTC), report)
    assert report.health == [("nco", "quiet")] and store.sources.get("nco")["health"] == "quiet"
    assert hub.run("status", ok=None).exit_code == 1


@pytest.mark.sqlite_only
def test_sigterm_mid_fetch_leaves_nothing_partial(hub, feed_server, tmp_path):
    slow = feed_server.route("/slow.json", (DATA / "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json")
                             .read_bytes(), delay=2.0)
    hub.run("sources", "add", "kev", slow, "--kind", "kev")
    env = dict(os.environ, CEPTOAR_DB=str(hub.db), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "ceptoar.cli", "run", "--every", "1"], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1.2)  # the fetch has started: the feed answers after 2 s
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopping after the current piece of work" in err and "worker stopped" in err
    n = Store(hub.db).count("advisories")
    assert n in (0, 1404)  # the source whole, or not at all
    assert Store(hub.db).leases.get("worker") is None


def test_taxii_reads_and_a_command_during_a_long_ingest(hub, tmp_path):
    store = Store(hub.db)
    colls.add(store, "all", "All", "tlp <= RED")
    hub.run("sources", "add", "kev", "https://feeds.example/kev", "--kind", "kev")
    hub.run("ingest", str(DATA / "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json"), "--source", "kev")
    triage.publish(store, [a["id"] for a in store.advisories.list(status="new", limit=200)], "analyst")
    reader_secret = (members.add(store, "jma", "JMA", "RED"), members.grant(store, "jma", "all", True, False),
                     members.new_secret(store, "jma"))[2]
    uuid = store.collections.get("all")["uuid"]
    server = ServerProcess(hub.db, gunicorn=True, workers=2).start()
    big = tmp_path / "big.rdf"
    from bench.ingest import big_jvn_feed

    big.write_bytes(big_jvn_feed(12000))
    hub.run("sources", "add", "jvn", "https://feeds.example/jvn", "--kind", "jvn")
    statuses, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            r = requests.get(f"{server.base}/ceptoar/collections/{uuid}/objects/", params={"limit": 50},
                             auth=("jma", reader_secret), headers={"Accept": "application/taxii+json;version=2.1"})
            statuses.append(r.status_code)

    env = dict(os.environ, CEPTOAR_DB=str(hub.db), CEPTOAR_BUSY_SECONDS="120")
    try:
        ingest = subprocess.Popen([sys.executable, "-m", "ceptoar.cli", "ingest", str(big), "--source", "jvn"],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2.0)  # the ingest is writing
        readers = [threading.Thread(target=read) for _ in range(2)]
        for t in readers:
            t.start()
        aid = store.advisories.list(source="kev", status="published", limit=1)[0]["id"]
        triage_cmd = subprocess.run([sys.executable, "-m", "ceptoar.cli", "advisories", "triage", aid, "--note",
                                     "during the ingest"], cwd=ROOT, env=env, capture_output=True, text=True,
                                    timeout=300)
        out, err = ingest.communicate(timeout=300)
        stop.set()
        for t in readers:
            t.join()
    finally:
        server.stop()
    assert ingest.returncode == 0, err
    assert triage_cmd.returncode == 0 or ("busy" in triage_cmd.stderr and "Traceback" not in triage_cmd.stderr)
    assert "Traceback" not in triage_cmd.stderr
    assert statuses and all(s == 200 for s in statuses), sorted(set(statuses))
    # every request is in the audit log (spooled while the ingest held the lock, then moved in)
    audited = [r for r in Store(hub.db).audit.list(member="jma") if r["path"] and "/objects/" in r["path"]]
    assert len(audited) >= len(statuses)


@pytest.mark.sqlite_only
def test_backup_while_serving_and_restore(hub, tmp_path):
    store = Store(hub.db)
    hub.run("sources", "add", "kev", "https://feeds.example/kev", "--kind", "kev")
    hub.run("ingest", str(DATA / "cisa_kev/vulsdata_kev_2022-08-18_partial.json"), "--source", "kev")
    before = store.count("advisories")
    server = ServerProcess(hub.db, gunicorn=True, workers=1).start()
    try:
        assert requests.get(server.base + "/healthz").status_code == 200
        assert "backed up" in hub.run("backup", str(tmp_path / "b1.db")).output
        assert hub.run("backup", str(tmp_path / "b1.db"), ok=None).exit_code == 1  # never overwritten
    finally:
        server.stop()
    copy = sqlite3.connect(tmp_path / "b1.db")
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("SELECT COUNT(*) FROM advisories").fetchone()[0] == before
    assert oct((tmp_path / "b1.db").stat().st_mode & 0o777) == "0o600"
    status = json.loads(hub.run("status", "--format", "json", ok=None).stdout)
    assert status["last_backup"].endswith("b1.db")
    # more data, then the backup restored: refused while the hub is in use, done with --force
    hub.run("ingest", str(DATA / "cisa_icsma/cisagov_CSAF_icsma-24-200-01.json"), "--source", "kev", ok=None)
    store.leases.acquire("worker", "elsewhere:1|x", "the worker", 60)
    refused = hub.run("restore", str(tmp_path / "b1.db"), ok=None)
    assert refused.exit_code == 1 and "running hub" in refused.output
    hub.run("restore", str(tmp_path / "b1.db"), "--force")
    assert Store(hub.db).count("advisories") == before
    assert Store(hub.db).audit.list(action="restore")


def test_audit_prune_archives_first_and_the_log_stays_append_only(hub, tmp_path):
    store = Store(hub.db)
    store.audit.add("old", "x")
    with store.transaction():
        store.execute("UPDATE meta SET value = value WHERE key = 'next_key'")
    n = store.count("audit")
    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    time.sleep(1.1)
    store.audit.add("new", "y")
    out = hub.run("audit", "prune", "--before", cutoff.isoformat(), "--archive", str(tmp_path / "arch"))
    assert f"pruned {n} audit entries" in out.output
    archive = next((tmp_path / "arch").iterdir())
    lines = [json.loads(line) for line in archive.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == n and lines[0]["actor"] and any(x["actor"] == "old" for x in lines)
    left = [r["actor"] for r in store.audit.list()]
    assert "old" not in left and "new" in left and store.audit.list(action="audit-prune")
    from ceptoar.core.errors import StoreError

    with pytest.raises(StoreError, match="append-only"):
        store.execute("DELETE FROM audit")


def test_healthz_and_metrics(hub, tmp_path):
    from ceptoar.sharing.taxii.app import create_app

    hub.run("sources", "add", "kev", "https://feeds.example/kev", "--kind", "kev")
    client = create_app(str(hub.db), metrics_token=None).test_client()
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json == {"status": "ok"}
    client.get("/taxii2/")
    m = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    text = m.get_data(as_text=True)
    assert m.status_code == 200 and 'ceptoar_http_requests_total{status="401"}' in text
    assert 'ceptoar_source_consecutive_failures{source="kev"} 0.0' in text and "ceptoar_flash_queue 0.0" in text
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 403
    guarded = create_app(str(hub.db), metrics_token="s3cret").test_client()
    assert guarded.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"},
                       headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert guarded.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 403


def test_settings_one_place_and_a_send_needs_a_public_url(hub, monkeypatch, tmp_path, smtp):
    controller, _ = smtp
    monkeypatch.setenv("CEPTOAR_CONFIG", str(tmp_path / "ceptoar-config"))
    (tmp_path / "ceptoar-config").mkdir(exist_ok=True)
    (tmp_path / "ceptoar-config" / "settings.toml").write_text('digest_daily_at = "06:30"\nfailure_threshold = 5\n')
    monkeypatch.setenv("CEPTOAR_FAILURE_THRESHOLD", "4")
    cfg = settings.load(str(tmp_path / "hub.db"))
    assert (cfg.digest_daily_at, cfg.failure_threshold) == ("06:30", 4)
    (tmp_path / "ceptoar-config" / "settings.toml").write_text("no_such = 1\n")
    with pytest.raises(settings.SettingsError, match="no_such"):
        settings.load(str(tmp_path / "hub.db"))
    (tmp_path / "ceptoar-config" / "settings.toml").unlink()
    monkeypatch.delenv("CEPTOAR_PUBLIC_URL", raising=False)
    hub.public_url = None
    r = hub.run("digest", "send", "--frequency", "daily", "--smtp-host", "127.0.0.1", "--smtp-port",
                str(controller.port), ok=None)
    assert r.exit_code != 0 and "CEPTOAR_PUBLIC_URL" in r.output
    assert hub.run("digest", "send", "--frequency", "daily", "--dry-run", ok=None).exit_code == 0


@pytest.mark.skipif(ENGINE == "postgresql", reason="an install test: one engine is enough")
def test_a_wheel_installed_into_a_fresh_venv_runs_init_and_demo(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, timeout=300, capture_output=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-r", str(ROOT / "requirements.lock")], check=True, timeout=600, capture_output=True)
    subprocess.run([*pip, "--no-deps", *map(str, wheels.glob("*.whl"))], check=True, timeout=300,
                   capture_output=True)
    work = tmp_path / "elsewhere"  # not the checkout: only what the wheel installed
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CEPTOAR_", "PYTHONPATH"))}
    ceptoar = str(venv / "bin" / "ceptoar")
    init = subprocess.run([ceptoar, "--db", "hub.db", "init"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=120)
    assert init.returncode == 0, init.stderr
    assert "ceptoar_feeds" in init.stdout and (work / "ceptoar-config" / "relay.toml").exists()
    demo = subprocess.run([ceptoar, "demo"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr


@pytest.mark.sqlite_only
def test_migrates_a_database_made_by_the_previous_hub(tmp_path):
    """Schema 8 (commit 49b105c) → 9: feed health from the fetch history, the prunable audit log;
    → 10: the analyst's text for clinics."""
    import shutil

    from tests.conftest import Hub

    db = tmp_path / "hub.db"
    shutil.copy(ROOT / "tests" / "fixtures" / "released-schema8.db", db)
    hub = Hub(db)
    assert hub.run("advisories", "list", ok=None).exit_code == 1  # refused until `init` upgrades it
    (tmp_path / "none.toml").write_text("")
    out = hub.run("init", "--sources", str(tmp_path / "none.toml")).output
    assert f"from schema 8 to {SCHEMA_VERSION}" in out and (tmp_path / "hub.db.before-schema-8").exists()
    store = Store(db)
    assert store.meta("schema_version") == str(SCHEMA_VERSION)
    rows = hub.json("advisories", "list", "--status", "all")
    assert len(rows) == 6 and {r["status"] for r in rows} >= {"published", "revoked"}
    assert all(r["clinic"] == {} for r in rows)  # step 10: no clinic text yet
    published = next(r for r in rows if r["status"] == "published")
    hub.run("advisories", "triage", published["id"], "--summary-ja", "院内の端末を確認してください。")
    assert hub.json("advisories", "show", published["id"])["clinic"] == {"summary_ja": "院内の端末を確認してください。"}
    for s in store.sources.list():
        assert s["health"] == "ok" and s["failures"] == 0
        assert s["last_new"]  # backfilled from the advisories' arrival
    n = store.count("audit")
    assert n > 20
    hub.run("audit", "prune", "--before", "2999-01-01", "--archive", str(tmp_path / "arch"))
    assert store.count("audit") == 1 and store.audit.list()[0]["action"] == "audit-prune"
    assert len(next((tmp_path / "arch").iterdir()).read_text().splitlines()) == n
    assert hub.run("status", ok=None).exit_code in (0, 1)


def test_registers_matched_by_facility_row_are_matched_by_profile_after_upgrade(tmp_path):
    """A database of the hub at schema 11 (matches stored per facility row): upgraded, the same
    matches at the same confidences, rows alike sharing one profile, queued alerts kept."""
    import shutil

    from tests.conftest import Hub

    db = tmp_path / "hub.db"
    shutil.copy(ROOT / "tests" / "fixtures" / "released-schema11.db", db)
    hub = Hub(db)
    (tmp_path / "none.toml").write_text("")
    assert f"from schema 11 to {SCHEMA_VERSION}" in hub.run("init", "--sources", str(tmp_path / "none.toml")).output
    found = {(m["facility"], m["title"], m["row"], m["confidence"]) for m in hub.json("matches", "list")}
    assert found == {(f, t, n, c) for f in ("sakura", "aoba")
                     for t, n, c in (("Microsoft Windows Runtime Remote Code Execution Vulnerability", 1, "product"),
                                     ("Philips Vue PACS", 2, "version"))}
    store = Store(db)
    assert store.count("row_profiles") == 2 and store.count("matches") == 2
    assert store.count("targeted_alerts") == 2
    assert hub.json("inventory", "list", "aoba")[0]["product"] == "Windows"


def test_a_second_worker_stops_with_a_clear_message(hub):
    store = Store(hub.db)
    store.leases.acquire("worker", "otherhost:4242|abcd", "the worker (ceptoar run)", 120)
    r = hub.run("run", "--once", ok=None)
    assert r.exit_code == 1 and "already running" in r.output and "otherhost" in r.output
    assert "Traceback" not in r.output
    store.leases.release("worker", "otherhost:4242|abcd")
    assert hub.run("run", "--once").exit_code == 0
    assert store.leases.get("worker") is None  # released on the way out


def test_a_large_feed_is_stored_a_chunk_at_a_time_and_still_all_or_nothing(hub, monkeypatch):
    from ceptoar import pipeline
    from ceptoar.core.model import Source

    monkeypatch.setattr(pipeline, "CHUNK", 100)
    store = Store(hub.db)
    hub.run("sources", "add", "kev", "https://feeds.example/kev", "--kind", "kev")
    body = (DATA / "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json").read_bytes()
    source = Source(id="kev", kind="kev", name="KEV")
    seen: list[str] = []

    def fail(result):
        raise RuntimeError("the disk went away at the end")

    with pytest.raises(RuntimeError):
        pipeline.ingest_bytes(store, source, body, progress=seen.append, before_commit=fail)
    assert store.count("advisories") == 0 and store.count("raw_entries") == 0  # 15 chunks, none kept
    assert len(seen) >= 13 and seen[-1].endswith("1,404 entries stored")
    res = pipeline.ingest_bytes(store, source, body)
    assert (res.new, store.count("advisories")) == (1404, 1404)
    again = pipeline.ingest_bytes(store, source, body)
    assert (again.new, again.updated, again.unchanged) == (0, 0, 1404)
