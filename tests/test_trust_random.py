"""Randomized sequences of feeds, members, upstream changes and analyst decisions against a real
gunicorn: whatever happens, every reader receives only what was published, at the TLP in force.

Each example works in its own sources, collections and members (the database and the server live
for the whole run). The model below is the oracle: it knows what each source said (every text
carries a canary naming its origin, entry and version), what the analyst decided and what was
published, and from that alone what each reader may receive. After the steps, members at every
clearance read every endpoint over HTTP (objects, object by id, versions, manifest; match[version]
all / first / last / exact; match[id], match[type], added_after; `next` at small limits), and every
digest (preview and sent) and both exports are checked for subscribers at every clearance.

CI runs a bounded number of examples; a longer run:
    CEPTOAR_TRUST_EXAMPLES=300 .venv/bin/python -m pytest tests/test_trust_random.py
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import shutil
from dataclasses import dataclass, field

import pytest
import requests
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from ceptoar.clinics import exposure
from ceptoar.core.extensions import hub_objects, props
from ceptoar.core.model import TLP_BY_ID, TLP_ORDER, marking_definition, vulnerability_id
from ceptoar.publishing.publication import REVOKED_LABEL, REVOKED_NAME
from ceptoar.store import Store
from ceptoar.store.schema import NEWER_RANK
from tests.conftest import Hub, new_db
from tests.taxii_fixtures import TAXII, ServerProcess
from tests.trust_helpers import TLP, sid

HUB_FIXED = {o["id"]: o for o in hub_objects()}

EXAMPLES = int(os.environ.get("CEPTOAR_TRUST_EXAMPLES", "8"))
TLPS = ["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]
CVES = ["CVE-2024-21887", "CVE-2024-22100", "CVE-2023-46805"]
CANARY = re.compile(r"\b(PUB|CLOSED|MEMBER)(\d+)\|([\w-]+)\|v(\d+)")
SOURCE_TLP = {"PUB": "CLEAR", "CLOSED": "AMBER", "MEMBER": "AMBER"}


@dataclass
class Adv:
    kind: str  # PUB | CLOSED | MEMBER
    key: str
    id: str = ""
    source_tlp: str = "CLEAR"  # as the source marks it now
    analyst_tlp: str | None = None
    medical: bool = False
    status: str = "new"
    title: str = ""  # the newest source title
    published_title: str | None = None  # the title as last explicitly published
    titles: set = field(default_factory=set)  # every title ever published
    ranks: list = field(default_factory=list)  # TLP rank of every publication
    collections: set = field(default_factory=set)  # every collection any version entered
    indicators: set = field(default_factory=set)  # every indicator id any version referenced
    cves: set = field(default_factory=set)
    noted: bool = False  # an exposure note was published with it

    @property
    def tlp(self) -> str:
        return self.analyst_tlp or self.source_tlp

    @property
    def rank(self) -> int:
        return TLP_ORDER.index(self.tlp)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust")
    hub = Hub(new_db(tmp))
    (tmp / "none.toml").write_text("")
    hub.run("init", "--sources", str(tmp / "none.toml"))
    server = ServerProcess(hub.db, gunicorn=True, workers=2).start()
    yield hub, server, tmp
    server.stop()


class TrustMachine(RuleBasedStateMachine):
    world = None
    counter = 0

    @initialize()
    def setup(self):
        TrustMachine.counter += 1
        self.n = n = TrustMachine.counter
        self.hub, self.server, tmp = self.world
        self.dir = tmp / f"ex{n}"
        self.dir.mkdir()
        self.store = Store(self.hub.db)
        self.sources = {"PUB": f"pub{n}", "CLOSED": f"closed{n}", "MEMBER": f"member-w{n}"}
        h = self.hub
        h.run("sources", "add", f"pub{n}", "https://pub.example/", "--kind", "stix", "--auto-publish", "tlp <= GREEN")
        h.run("sources", "add", f"closed{n}", "https://closed.example/", "--kind", "stix", "--tlp", "AMBER")
        mine = f"(source = pub{n} or source = closed{n} or source = member-w{n})"
        self.filters = {f"all{n}": lambda a: True, f"green{n}": lambda a: a.rank <= 1, f"med{n}": lambda a: a.medical}
        h.run("collections", "add", f"all{n}", "--title", "all", "--filter", mine)
        h.run("collections", "add", f"green{n}", "--title", "green", "--filter", f"{mine} and tlp <= GREEN")
        h.run("collections", "add", f"med{n}", "--title", "med", "--filter", f"{mine} and medical")
        self.uuids = {c["id"]: c["uuid"] for c in self.store.collections.list(counts=False)}
        self.readers = {}
        for tlp in TLPS:
            mid = f"r{n}-{tlp.lower().replace('+', '-')}"
            h.run("members", "add", mid, "--name", mid, "--clearance", tlp)
            for cid in self.filters:
                h.run("members", "grant", mid, cid)
            secret = h.run("members", "secret", mid).stdout.strip()
            self.readers[tlp] = (mid, secret)
            h.run("subscribers", "add", f"{mid}@clinic.example.jp", "--member", mid, "--clearance", tlp)
        h.run("members", "add", f"w{n}", "--name", "writer", "--clearance", "GREEN")
        h.run("members", "grant", f"w{n}", f"all{n}", "--no-read", "--write")
        self.writer = (f"w{n}", h.run("members", "secret", f"w{n}").stdout.strip())
        self.advs: dict[tuple[str, str], Adv] = {}
        self.owner: dict[str, str] = {}  # indicator id → the first origin that stored it
        self.version = 0
        self.incidents: list[dict] = []

    # --- what sources, members and upstream hubs do ------------------------------------------------
    def _objects(self, kind: str, key: str, report_tlp, ind: int, ind_tlp, cve: int, redefine: bool,
                 rid: str | None = None) -> tuple[list[dict], Adv]:
        self.version += 1
        v, n = self.version, self.n
        adv = self.advs.setdefault((kind, key), Adv(kind, key))
        ind_id = sid("indicator", f"ex{n}-pool-{ind}")
        when = f"2026-11-{1 + v // 24:02d}T{v % 24:02d}:00:00.000Z"
        title = f"{kind}{n}|{key}|v{v}"
        rep = {"type": "report", "spec_version": "2.1", "id": rid or sid("report", f"ex{n}-{kind}-{key}"),
               "created": "2026-11-01T00:00:00.000Z", "modified": when, "name": title,
               "published": "2026-11-01T00:00:00.000Z", "report_types": ["threat-report"],
               "object_refs": [ind_id, vulnerability_id(CVES[cve])],
               "external_references": [{"source_name": "cve", "external_id": CVES[cve]}]}
        if report_tlp:
            rep["object_marking_refs"] = [TLP[report_tlp]]
        indicator = {"type": "indicator", "spec_version": "2.1", "id": ind_id, "created": "2026-11-01T00:00:00.000Z",
                     "modified": when, "name": f"IND {title}", "pattern_type": "stix",
                     "pattern": "[ipv4-addr:value = '192.0.2.1']", "valid_from": "2026-11-01T00:00:00Z"}
        if ind_tlp:
            indicator["object_marking_refs"] = [TLP[ind_tlp]]
        objects = [rep, indicator]
        if kind != "PUB":  # restricted facts under the hub's own vulnerability id
            objects.append({"type": "vulnerability", "spec_version": "2.1", "id": vulnerability_id(CVES[cve]),
                            "created": "2026-11-01T00:00:00.000Z", "modified": when, "name": CVES[cve],
                            "description": f"SECRET {title}"})
        if redefine:
            objects.append({"type": "marking-definition", "spec_version": "2.1", "id": TLP["GREEN"],
                            "created": "2022-10-01T00:00:00.000Z", "name": "TLP:GREEN", "definition_type": "tlp",
                            "definition": {"tlp": "clear"}, "x_note": f"REDEFINED {title}"})
        self.owner.setdefault(ind_id, kind)
        adv.title = title
        marks = [t for t in (SOURCE_TLP[kind], report_tlp, ind_tlp) if t]
        adv.source_tlp = max(marks, key=TLP_ORDER.index)
        adv.indicators.add(ind_id)
        adv.cves.add(CVES[cve])
        return objects, adv

    def _after_ingest(self, adv: Adv, auto: bool) -> None:
        if not adv.id:
            (row,) = [r for r in self.hub.json("advisories", "list", "--source", self.sources[adv.kind],
                                               "--status", "all") if r["source"] == self.sources[adv.kind]
                      and r["title"] == adv.title]
            adv.id = row["id"]
        if auto and adv.status in ("new", "published") and adv.rank <= 1:
            self._published(adv, explicit=True)

    def _published(self, adv: Adv, explicit: bool) -> None:
        if explicit:
            adv.published_title = adv.title
        adv.status = "published"
        adv.titles.add(adv.published_title)
        adv.ranks.append(adv.rank)
        adv.collections |= {c for c, f in self.filters.items() if f(adv)}

    @rule(kind=st.sampled_from(["PUB", "CLOSED"]), key=st.sampled_from(["a", "b", "c"]),
          report_tlp=st.sampled_from([None, "CLEAR", "GREEN", "AMBER", "RED"]), ind=st.integers(0, 3),
          ind_tlp=st.sampled_from([None, "GREEN", "RED"]), cve=st.integers(0, 2), redefine=st.booleans())
    def ingest(self, kind, key, report_tlp, ind, ind_tlp, cve, redefine):
        objects, adv = self._objects(kind, key, report_tlp, ind, ind_tlp, cve, redefine)
        path = self.dir / f"v{self.version}.json"
        path.write_text(json.dumps({"type": "bundle", "id": f"bundle--{sid('bundle', str(path))[8:]}",
                                    "objects": objects}), encoding="utf-8")
        self.hub.run("ingest", str(path), "--source", self.sources[kind])
        self._after_ingest(adv, auto=kind == "PUB")

    @rule(key=st.sampled_from(["m1", "m2"]), report_tlp=st.sampled_from([None, "GREEN", "RED"]),
          ind=st.integers(0, 3), cve=st.integers(0, 2), reuse=st.booleans(), redefine=st.booleans(),
          data=st.data())
    def member_submits(self, key, report_tlp, ind, cve, reuse, redefine, data):
        published = [a.id for a in sorted(self.advs.values(), key=lambda a: (a.kind, a.key))
                     if a.id and a.kind != "MEMBER"]
        rid = data.draw(st.sampled_from(published)) if reuse and published else None
        if rid:
            key = f"reuse-{rid[-12:]}"
        objects, adv = self._objects("MEMBER", key, report_tlp, ind, None, cve, redefine, rid=rid)
        url = f"{self.server.base}/ceptoar/collections/{self.uuids[f'all{self.n}']}/objects/"
        r = requests.post(url, json={"objects": objects}, auth=self.writer,
                          headers={"Accept": TAXII, "Content-Type": TAXII}, timeout=30)
        assert r.status_code == 202, r.text
        status = r.json()
        assert status["success_count"] == len(objects) and status["failure_count"] == 0
        apart = {s["id"] for s in status.get("successes", []) if "kept apart" in s.get("message", "")}
        assert vulnerability_id(CVES[cve]) in apart and (TLP["GREEN"] in apart) is redefine
        if rid:
            assert rid in apart
        self._after_ingest(adv, auto=False)

    def _pick(self, data, *statuses) -> Adv | None:
        # Ordered by the model's own keys: ids depend on the example's number, draws must not.
        choices = sorted((a for a in self.advs.values() if a.id and (not statuses or a.status in statuses)),
                         key=lambda a: (a.kind, a.key))
        return data.draw(st.sampled_from(choices)) if choices else None

    @precondition(lambda self: any(a.id for a in self.advs.values()))
    @rule(data=st.data(), tlp=st.sampled_from(TLPS))
    def retriage(self, data, tlp):
        adv = self._pick(data)
        before = adv.tlp
        self.hub.run("advisories", "triage", adv.id, "--tlp", tlp)
        adv.analyst_tlp = tlp
        if adv.status == "published" and tlp != before:
            self._published(adv, explicit=False)

    @precondition(lambda self: any(a.id for a in self.advs.values()))
    @rule(data=st.data(), medical=st.booleans())
    def decide_medical(self, data, medical):
        adv = self._pick(data)
        changed = adv.medical != medical
        self.hub.run("advisories", "triage", adv.id, "--medical" if medical else "--not-medical")
        adv.medical = medical
        if adv.status == "published" and changed:
            self._published(adv, explicit=False)

    @precondition(lambda self: any(a.id and a.status != "revoked" for a in self.advs.values()))
    @rule(data=st.data())
    def publish(self, data):
        adv = self._pick(data, "new", "published")
        self.hub.run("advisories", "publish", adv.id)
        self._published(adv, explicit=True)

    @precondition(lambda self: any(a.status == "published" for a in self.advs.values()))
    @rule(data=st.data())
    def revoke(self, data):
        adv = self._pick(data, "published")
        self.hub.run("advisories", "revoke", adv.id, "--reason", "random")
        adv.status = "revoked"

    @precondition(lambda self: any(a.status == "published" for a in self.advs.values()))
    @rule(data=st.data(), count=st.integers(5, 40))
    def exposure_noted(self, data, count):
        """The hub's TLP:GREEN note of registers matched (counts only), published with the advisory."""
        adv = self._pick(data, "published")
        exposure.publish_note(self.store, adv.id, {"facilities": count, "prefectures": [("東京都", count)], "other": 0,
                                                   "minimum": 5, "confidence": "product"}, "random")
        adv.noted = True
        self._published(adv, explicit=False)

    @rule()
    def incident_referenced(self):
        inc = self.hub.json("incidents", "report", "--facility", f"INCIDENT-SECRET clinic {self.n}",
                            "--facility-type", "clinic", "--prefecture", "東京都", "--member",
                            self.readers["RED"][0], "--summary", "INCIDENT-SECRET summary")
        self.incidents.append(inc)
        objects, adv = self._objects("PUB", "inc", None, 0, None, 0, False)
        objects[0]["object_refs"] += [inc["stix_id"], inc["report_id"]]
        path = self.dir / f"v{self.version}.json"
        path.write_text(json.dumps({"type": "bundle", "id": f"bundle--{sid('bundle', str(path))[8:]}",
                                    "objects": objects}), encoding="utf-8")
        self.hub.run("ingest", str(path), "--source", self.sources["PUB"])
        self._after_ingest(adv, auto=True)

    # --- what every reader receives ---------------------------------------------------------------
    def _by_title(self, title: str) -> Adv:
        m = CANARY.search(title)
        return self.advs[(m.group(1), m.group(3))]

    def check_object(self, o: dict, rank: int, where: str) -> None:
        """One served or exported object, for a reader at `rank`."""
        text = json.dumps(o, ensure_ascii=False)
        assert "SECRET" not in text and "REDEFINED" not in text, (where, o)
        assert not o["id"].startswith("incident--") and all(
            o["id"] not in (i["stix_id"], i["report_id"]) for i in self.incidents), where
        marks = [TLP_ORDER.index(TLP_BY_ID[m]) for m in o.get("object_marking_refs", []) if m in TLP_BY_ID]
        assert all(m <= rank for m in marks), (where, o["id"], marks, rank)
        if o["type"] == "marking-definition":
            assert o == marking_definition(o["name"][4:]), where
            return
        if o["id"] in HUB_FIXED:  # the hub identity and its extension-definitions, public
            assert o == HUB_FIXED[o["id"]], where
            return
        mine = [a for a in self.advs.values() if a.ranks]
        if o["type"] == "report":
            if o.get("revoked"):
                adv = next(a for a in mine if a.id == o["id"])
                assert o["name"] == REVOKED_NAME and "description" not in o and o["labels"] == [REVOKED_LABEL], where
                assert adv.status == "revoked" and marks == [min(adv.ranks)], where
                return
            adv = self._by_title(o["name"])
            assert adv.id == o["id"] and adv.ranks, (where, o["id"])
            assert o["name"] in adv.titles, (where, o["name"], adv.titles)
            assert adv.rank <= rank, (where, o["id"], adv.tlp, rank)
            stored = self.store.objects.get(o["id"], o["modified"], "hub")
            assert stored is not None and stored.obj == o, where  # exactly a pinned published version
            assert self.store.publications.get(o["id"], o["modified"]) is not None, where
        elif o["type"] == "indicator":
            adv = self._by_title(o["name"])
            assert self.owner[o["id"]] == adv.kind, (where, o["id"], "served from an origin that does not hold it")
            assert any(a.kind == adv.kind and o["id"] in a.indicators and a.rank <= rank for a in mine), (where, o)
        elif o["type"] == "note":  # an exposure note: with an advisory the reader was served a version of
            adv = next(a for a in mine if a.id == o["object_refs"][0])
            assert o["id"] == exposure.note_id(adv.id) and adv.noted and len(marks) == 1 and marks[0] >= 1, (where, o)
            assert min(adv.ranks) <= rank and self.store.objects.get(o["id"], o["modified"], "hub").obj == o, where
        elif o["type"] == "vulnerability":
            assert marks == [0] and any(o["name"] in a.cves and a.rank <= rank for a in mine), (where, o)
        elif o["type"] == "identity":  # with a report the reader may see, or with a revocation
            assert any(self.sources[a.kind] == props(o).get("source")
                       and (a.rank <= rank or (a.status == "revoked" and min(a.ranks) <= rank)) for a in mine), (where, o, rank)
        else:
            raise AssertionError(f"{where}: unexpected {o['type']}")

    def _get(self, tlp: str, path: str, **params) -> requests.Response:
        r = requests.get(self.server.base + path, params=params, auth=self.readers[tlp],
                         headers={"Accept": TAXII}, timeout=30)
        assert r.status_code in (200, 404), (path, params, r.status_code, r.text)
        return r

    def _walk(self, tlp: str, path: str, **params) -> list[dict]:
        out, params = [], {"limit": 4, **params}
        while True:
            body = self._get(tlp, path, **params).json()
            out.extend(body.get("objects", body.get("versions", [])))
            if not body.get("more"):
                return out
            params = {**params, "next": body["next"]}

    def check_reader(self, tlp: str) -> None:
        rank = TLP_ORDER.index(tlp)
        for cid in self.filters:
            base = f"/ceptoar/collections/{self.uuids[cid]}/"
            every = self._walk(tlp, base + "objects/", **{"match[version]": "all"})
            keys = [(o["id"], o.get("modified", o.get("created"))) for o in every]
            assert len(keys) == len(set(keys)), "an object version served twice"
            for o in every:
                self.check_object(o, rank, f"{tlp} {cid} all")
            last = self._walk(tlp, base + "objects/")
            manifest = self._walk(tlp, base + "manifest/")
            assert sorted((m["id"], m["version"]) for m in manifest) == sorted(
                (o["id"], o.get("modified", o.get("created"))) for o in last)
            for o in last + self._walk(tlp, base + "objects/", **{"match[version]": "first"}):
                self.check_object(o, rank, f"{tlp} {cid} last/first")
            for kind in ("report", "indicator"):
                for o in self._walk(tlp, base + "objects/", **{"match[type]": kind}):
                    assert o["type"] == kind
                    self.check_object(o, rank, f"{tlp} {cid} type")
            first = self._get(tlp, base + "objects/", limit=2)
            if first.json().get("objects"):
                after = first.headers["X-TAXII-Date-Added-First"]
                for o in self._walk(tlp, base + "objects/", added_after=after):
                    self.check_object(o, rank, f"{tlp} {cid} added_after")
            for adv in self.advs.values():
                if not adv.id:
                    continue
                versions = self._walk(tlp, base + f"objects/{adv.id}/versions/")
                for v in versions:
                    for o in self._walk(tlp, base + f"objects/{adv.id}/", **{"match[version]": v}):
                        self.check_object(o, rank, f"{tlp} {cid} exact")
                for o in self._walk(tlp, base + "objects/", **{"match[id]": adv.id}):
                    self.check_object(o, rank, f"{tlp} {cid} match[id]")
                # Revocations reach every reader of every collection that held any version.
                if adv.status == "revoked" and cid in adv.collections and rank >= min(adv.ranks):
                    (tomb,) = self._walk(tlp, base + f"objects/{adv.id}/")
                    assert tomb.get("revoked") is True, (tlp, cid, adv.id)

    def check_digest_text(self, text: str, rank: int, where: str) -> None:
        assert "SECRET" not in text and "REDEFINED" not in text and "INCIDENT-SECRET" not in text, where
        for m in CANARY.finditer(text):
            if int(m.group(2)) != self.n:
                continue
            adv = self.advs[(m.group(1), m.group(3))]
            assert adv.status == "published" and adv.rank <= rank, (where, m.group(0))
            assert m.group(0) in {t for t in adv.titles if t}, (where, m.group(0), adv.titles)

    def teardown(self):
        if not hasattr(self, "n"):
            return
        for cid in self.filters:  # what is served is exactly what placements and pins derive
            served = {(r["object_id"], r["modified"]): r["tlp_rank"] for r in self.store.rows(
                "SELECT object_id, modified, tlp_rank FROM membership WHERE collection = ?", (cid,))}
            assert served == {k: r["rank"] for k, r in self.store.membership.derive(cid).items()}, cid
            # Each row's lowest newer rank (what a page of latest versions reads) is the one derived.
            stale = self.store.rows(
                f"SELECT object_id, modified, newer_rank, {NEWER_RANK} AS derived FROM membership WHERE collection = ?",
                (cid,))
            assert all(r["newer_rank"] == r["derived"] for r in stale), (cid, stale)
        for tlp in TLPS:
            self.check_reader(tlp)
            rank = TLP_ORDER.index(tlp)
            mid = self.readers[tlp][0]
            self.check_digest_text(self.hub.run("digest", "preview", "--member", mid, "--clearance", tlp).output,
                                   rank, f"preview {tlp}")
            bundle = json.loads(self.hub.run("export", "bundle", "--status", "all", "--clearance", tlp).stdout)
            for o in bundle["objects"]:
                if any(int(c.group(2)) == self.n for c in CANARY.finditer(json.dumps(o))):
                    self.check_object(o, rank, f"export {tlp}")
                else:
                    assert "SECRET" not in json.dumps(o) and not o["id"].startswith("incident--")
            rows = self.hub.run("export", "csv", "--status", "all", "--clearance", tlp).stdout
            assert "SECRET" not in rows
            for line in rows.splitlines()[1:]:
                m = CANARY.search(line)
                if m and int(m.group(2)) == self.n:
                    adv = self.advs[(m.group(1), m.group(3))]
                    assert m.group(0) in adv.titles and adv.rank <= rank, line
        out = self.dir / "digests"
        self.hub.run("digest", "send", "--frequency", "daily", "--out", str(out))
        for tlp in TLPS:
            mid = self.readers[tlp][0]
            path = out / f"{mid}@clinic.example.jp.eml"
            if path.exists():
                msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                self.check_digest_text(msg.get_body(("plain",)).get_content(), TLP_ORDER.index(tlp), f"sent {tlp}")
                self.check_digest_text(msg.get_body(("html",)).get_content(), TLP_ORDER.index(tlp), f"html {tlp}")
        shutil.rmtree(out, ignore_errors=True)


def test_readers_receive_only_what_was_published(world):
    TrustMachine.world = world
    # No shrinking: examples share one database and server, so a replay is never exact; the failing
    # sequence of steps is printed as it ran.
    TrustMachine.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=14, deadline=None,
                                              suppress_health_check=list(HealthCheck),
                                              phases=[Phase.explicit, Phase.generate])
    TrustMachine.TestCase().runTest()

