"""Registers stay TLP:RED toward every vendor (issue 33): over random vendors, facilities, registers
(rows naming vendors by name, alias, company words, or nobody), advisories published at random TLPs
and random vendor clearances, what each vendor would be told is exactly the matched rows it maintains
of the advisories its clearance allows — never another vendor's row, never another product of a
facility — and once told, it is not told again. Its answer page (the link in its request) shows the
same rows and no others, and an answer given there reaches only the rows it answers.

The model is the oracle: it knows which vendor each register name means. CI runs a bounded number of
examples; a longer run: CEPTOAR_VENDOR_EXAMPLES=200 .venv/bin/python -m pytest tests/test_vendor_isolation_random.py
"""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ceptoar.clinics import vendor_requests
from ceptoar.core.model import TLP_ORDER
from ceptoar.sharing.taxii.app import create_app
from ceptoar.store import Store
from tests.conftest import Hub, _initialized

VENDORS = {"va": ("保守A", []), "vb": ("保守B", ["B-Maint"]), "vc": ("保守C", [])}
# A register's name for its maintainer → the vendor it means (None: no registered vendor).
NAMES = {"株式会社保守A": "va", "保守Ａ": "va", "保守B": "vb", "B-Maint Co., Ltd.": "vb", "(株)保守C": "vc",
         "不明保守": None, "": None}
FACILITIES = [("f0", "一番診療所", "東京都"), ("f1", "二番歯科", "大阪府"), ("f2", "三番病院", "北海道"),
              ("f3", "四番薬局", "福岡県")]
PRODUCTS = [f"Device{i}" for i in range(4)]
KEV = {"title": "CISA Catalog of Known Exploited Vulnerabilities", "catalogVersion": "2026.12.01",
       "dateReleased": "2026-12-01T00:00:00.000Z", "count": 4, "vulnerabilities": [
           {"cveID": f"CVE-2099-{1000 + i}", "vendorProject": "Acme", "product": p, "vulnerabilityName": f"{p} flaw",
            "dateAdded": "2026-12-01", "shortDescription": "x", "requiredAction": "Apply updates.",
            "dueDate": "2026-12-22", "knownRansomwareCampaignUse": "Unknown", "notes": "", "cwes": []}
           for i, p in enumerate(PRODUCTS)]}
HEADER = "category,vendor,product,version,cpe,purl,aliases,internet_exposed,remote_maintenance,maintenance_vendor,note\n"

rows_st = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(sorted(NAMES))), min_size=1, max_size=4)
tlp_st = st.sampled_from(["CLEAR", "GREEN", "AMBER"])


@settings(max_examples=int(os.environ.get("CEPTOAR_VENDOR_EXAMPLES", "12")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(registers=st.lists(rows_st, min_size=4, max_size=4),
       published=st.lists(st.one_of(st.none(), tlp_st), min_size=4, max_size=4),
       clearance=st.fixed_dictionaries({v: tlp_st for v in VENDORS}), send_first=st.sampled_from(sorted(VENDORS)))
def test_no_vendor_learns_what_is_not_its_own(tmp_path_factory, registers, published, clearance, send_first):
    folder = tmp_path_factory.mktemp("vendors")
    hub = Hub(_initialized(folder))
    hub.run("members", "add", "jma", "--name", "JMA", "--clearance", "green")
    (folder / "f.csv").write_text("facility_id,name,facility_type,prefecture,member\n" + "".join(
        f"{fid},{name},clinic,{pref},jma\n" for fid, name, pref in FACILITIES), encoding="utf-8")
    hub.run("facilities", "import", str(folder / "f.csv"))
    for (fid, _n, _p), rows in zip(FACILITIES, registers, strict=True):
        text = HEADER + "".join(f"医療機器,Acme,{PRODUCTS[p]},1.0,,,,no,yes,\"{m}\",\n" for p, m in rows)
        (folder / f"{fid}.csv").write_text(text, encoding="utf-8")
        hub.run("inventory", "import", fid, str(folder / f"{fid}.csv"))
    for vid, (name, aliases) in VENDORS.items():
        hub.run("vendors", "add", vid, "--name", name, "--email", f"{vid}@vendor.example.jp",
                *[x for a in aliases for x in ("--alias", a)])
        hub.run("vendors", "clearance", vid, clearance[vid])
    (folder / "kev.json").write_text(json.dumps(KEV), encoding="utf-8")
    hub.run("sources", "add", "kev", "https://feeds.example/kev", "--kind", "kev")
    hub.run("ingest", str(folder / "kev.json"), "--source", "kev")
    store = Store(hub.db)
    ids = {a["cves"][0]: a["id"] for a in store.advisories.list(source="kev")}
    tlp_of = {}
    for i, tlp in enumerate(published):
        aid = ids[f"CVE-2099-{1000 + i}"]
        if tlp is not None:
            hub.run("advisories", "triage", aid, "--tlp", tlp)
            hub.run("advisories", "publish", aid)
            tlp_of[aid] = tlp

    def expected(told: set) -> dict[str, set]:
        out: dict[str, set] = {}
        for (fid, _n, _p), rows in zip(FACILITIES, registers, strict=True):
            for n, (p, name) in enumerate(rows, 1):
                vid, aid = NAMES[name], ids[f"CVE-2099-{1000 + p}"]
                if vid and aid in tlp_of and TLP_ORDER.index(tlp_of[aid]) <= TLP_ORDER.index(clearance[vid]) \
                        and (vid, aid, fid, n) not in told:
                    out.setdefault(vid, set()).add((aid, fid, n))
        return out

    def check(told: set) -> None:
        got = {}
        for req in vendor_requests.pending(store):
            vid = req.vendor["id"]
            got[vid] = {(aid, r["facility"], r["n"]) for aid, a in req.advisories.items() for r in a["rows"]}
            subject, text = vendor_requests.render(req)
            listed = {r["facility"] for a in req.advisories.values() for r in a["rows"]}
            for fid, name, _p in FACILITIES:
                assert (name in text) == (fid in listed), (vid, name)
            asked_products = {r["product"] for a in req.advisories.values() for r in a["rows"]}
            for p in set(PRODUCTS) - asked_products:
                assert p not in text, (vid, p)
            for other in set(VENDORS) - {vid}:
                assert VENDORS[other][0] not in text
        assert got == expected(told)

    check(set())
    # One vendor told (as a send records it): the others' pending requests are unchanged, it is not told again.
    first = next((r for r in vendor_requests.pending(store) if r.vendor["id"] == send_first), None)
    told = set(first.keys) if first else set()
    if first:
        with store.transaction():
            store.vendors.record_requests(first.keys)
    check(told)
    # Every vendor told: each one's answer pages show what it was told and nothing else; an answer
    # there for one product reaches only that product's rows of its own customers.
    told_to = {r.vendor["id"]: r for r in vendor_requests.pending(store)} | ({send_first: first} if first else {})
    with store.transaction():
        for req in told_to.values():
            store.vendors.record_requests(req.keys)
    client, link = create_app(str(hub.db)).test_client(), vendor_requests.linker(store, "http://hub.test")
    for vid, req in told_to.items():
        for aid, a in req.advisories.items():
            url = link(vid, aid, TLP_ORDER.index(a["tlp"])).removeprefix("http://hub.test")
            html = client.get(url).get_data(as_text=True)
            shown = {r["facility"] for r in a["rows"]}
            for fid, name, _p in FACILITIES:
                assert (name in html) == (fid in shown), (vid, aid, name)
            for p in set(PRODUCTS) - {r["product"] for r in a["rows"]}:
                assert p not in html, (vid, p)
            for other in set(VENDORS) - {vid}:
                assert VENDORS[other][0] not in html
    if told_to:
        vid, req = sorted(told_to.items())[0]
        aid, a = next(iter(req.advisories.items()))
        url = link(vid, aid, TLP_ORDER.index(a["tlp"])).removeprefix("http://hub.test")
        mine = sorted({row["facility"] for row in a["rows"]})
        r = client.post(url, data={"group": "0", "status": "under_investigation", "facility": mine})
        assert r.status_code == 200, r.get_data(as_text=True)[-400:]
        answered = {(k[0], k[1], k[2]) for k in store.vendors.answers()}
        assert answered == {(aid, row["facility"], row["n"]) for row in a["rows"]}
