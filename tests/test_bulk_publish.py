"""Bulk publish (issue 34): a backfill (the first 120 entries of CISA's real KEV catalogue,
../shared/data) is published in batches, each one transaction; what a batch-by-batch publish stores
is exactly what publishing the same advisories one at a time stores (collections, pins, placements,
matches), and a publish interrupted in its second batch leaves each advisory published or not, never
half."""

from __future__ import annotations

import json

import pytest

from ceptoar.facilities import registers
from ceptoar.publishing import triage
from ceptoar.store import Store
from tests.conftest import DATA, Hub, _initialized, copied

CATALOG = json.loads((DATA / "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json").read_text())


def backfill(hub, tmp_path, n: int = 120) -> tuple[Store, list[str]]:
    part = CATALOG | {"vulnerabilities": CATALOG["vulnerabilities"][:n], "count": n}
    (tmp_path / "kev.json").write_text(json.dumps(part), encoding="utf-8")
    hub.run("sources", "add", "kev", "https://feeds.example/kev", "--kind", "kev")
    hub.run("ingest", str(tmp_path / "kev.json"), "--source", "kev")
    hub.run("members", "add", "jma", "--name", "JMA", "--clearance", "green")
    (tmp_path / "f.csv").write_text("facility_id,name,facility_type,prefecture,member\n"
                                    "sakura,さくら診療所,clinic,東京都,jma\n", encoding="utf-8")
    hub.run("facilities", "import", str(tmp_path / "f.csv"))
    first = CATALOG["vulnerabilities"][:n]
    rows = "".join(f"その他,{v['vendorProject']},{v['product']},,,,,yes,no,,\n" for v in first[:40:4])
    (tmp_path / "r.csv").write_text("category,vendor,product,version,cpe,purl,aliases,internet_exposed,"
                                    "remote_maintenance,maintenance_vendor,note\n" + rows, encoding="utf-8")
    hub.run("inventory", "import", "sakura", str(tmp_path / "r.csv"))
    store = Store(hub.db)
    return store, [a["id"] for a in store.advisories.list(source="kev", status="new", limit=n)]


def published_state(store: Store) -> dict:
    """What a publish leaves, with the version timestamps taken out (they differ run to run)."""
    pins = store.rows("SELECT advisory, object_id, origin, type, spec_version, pin_rank FROM pins ORDER BY 1, 2, 3")
    return {"placements": store.rows("SELECT collection, advisory FROM placements ORDER BY 1, 2"),
            "pins": pins,
            "membership": store.rows("SELECT collection, object_id, origin, tlp_rank FROM membership ORDER BY 1, 2, 3"),
            "matches": store.rows("SELECT advisory, profile, confidence FROM matches ORDER BY 1, 2"),
            "status": store.rows("SELECT id, status FROM advisories ORDER BY id"),
            "alerts": store.rows("SELECT advisory FROM alert_queue ORDER BY 1"),
            "audit": sorted(a["target"] for a in store.audit.list(action="publish"))}


def test_batches_store_what_one_at_a_time_stores(hub, tmp_path, tmp_path_factory, monkeypatch):
    store, ids = backfill(hub, tmp_path)
    monkeypatch.setattr(triage, "BATCH", 25)
    done = []
    out = triage.publish(store, ids, "analyst", progress=lambda d, t: done.append((d, t)))
    assert done == [(25, 120), (50, 120), (75, 120), (100, 120), (120, 120)] and len(out) == 120
    batched = published_state(store)
    assert batched["matches"] and batched["alerts"] and len(batched["placements"]) >= 120
    hub2_dir = tmp_path_factory.mktemp("one-by-one")  # the same world again, published one at a time
    hub2 = Hub(copied("initialized", hub2_dir, _initialized))
    store2, ids2 = backfill(hub2, hub2_dir)
    assert ids2 == ids  # the same stable ids
    for aid in ids2:
        triage.publish(store2, [aid], "analyst")
    assert published_state(store2) == batched


def test_an_interrupted_bulk_publish_leaves_no_advisory_half_published(hub, tmp_path, monkeypatch):
    store, ids = backfill(hub, tmp_path, 60)
    monkeypatch.setattr(triage, "BATCH", 25)
    real, calls = registers.match_published, []

    def failing(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the analyst's Ctrl-C, in the middle of the second batch's writes
        return real(*args, **kw)

    monkeypatch.setattr(registers, "match_published", failing)
    with pytest.raises(KeyboardInterrupt):
        triage.publish(store, ids, "analyst")
    status = {r["id"]: r["status"] for r in store.rows("SELECT id, status FROM advisories")}
    published = {a for a in ids if status[a] == "published"}
    assert published == set(ids[:25])  # the first batch whole, nothing of the second
    with_pub = {a for (a,) in store.execute("SELECT DISTINCT advisory FROM publications")}
    with_pins = {a for (a,) in store.execute("SELECT DISTINCT advisory FROM pins")}
    placed = {a for (a,) in store.execute("SELECT DISTINCT advisory FROM placements")}
    audited = {a["target"] for a in store.audit.list(action="publish")}
    assert with_pub == with_pins == audited == published and placed <= published
    monkeypatch.setattr(registers, "match_published", real)
    triage.publish(store, [a for a in ids if a not in published], "analyst")  # the rest, once resumed
    assert {r["status"] for r in store.rows("SELECT status FROM advisories")} == {"published"}


def test_a_refused_advisory_stops_the_publish_before_anything_is_written(hub, tmp_path):
    store, ids = backfill(hub, tmp_path, 30)
    triage.publish(store, ids[:1], "analyst")
    triage.revoke(store, ids[:1], "wrong", "analyst")
    with pytest.raises(triage.TriageError, match="is revoked"):
        triage.publish(store, ids[1:] + ids[:1], "analyst")
    assert store.scalar("SELECT COUNT(*) FROM advisories WHERE status = 'published'") == 0
