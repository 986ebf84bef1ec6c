"""Helpers for the trust-model tests: STIX bundles written to files, a member's view over TAXII
(in-process app on the real store), and small builders."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

from ceptoar.sharing import members
from ceptoar.sharing.taxii.app import create_app
from ceptoar.store import Store

TAXII = "application/taxii+json;version=2.1"
TLP = {"CLEAR": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
       "GREEN": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
       "AMBER": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
       "RED": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1"}


def sid(kind: str, name: str) -> str:
    return f"{kind}--{uuid.uuid5(uuid.NAMESPACE_URL, name)}"


def report(name: str, refs: list[str], *, tlp: str | None = "CLEAR", modified: str = "2026-11-01T00:00:00.000Z",
           rid: str | None = None, **extra) -> dict:
    r = {"type": "report", "spec_version": "2.1", "id": rid or sid("report", name), "created": "2026-11-01T00:00:00.000Z",
         "modified": modified, "name": name, "published": "2026-11-01T00:00:00.000Z", "report_types": ["threat-report"],
         "object_refs": refs} | extra
    if tlp:
        r["object_marking_refs"] = [TLP[tlp]]
    return r


def indicator(name: str, *, oid: str | None = None, modified: str = "2026-11-01T00:00:00.000Z", **extra) -> dict:
    return {"type": "indicator", "spec_version": "2.1", "id": oid or sid("indicator", name),
            "created": "2026-11-01T00:00:00.000Z", "modified": modified, "name": name, "pattern_type": "stix",
            "pattern": "[ipv4-addr:value = '192.0.2.1']", "valid_from": "2026-11-01T00:00:00Z"} | extra


def write_bundle(path: Path, objects: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}),
                    encoding="utf-8")
    return path


class Reader:
    """A member reading TAXII in-process against the real store, as a client would over HTTP."""

    def __init__(self, db: Path, member: str, clearance: str, grants: list[str]):
        store = Store(db)
        members.add(store, member, member, clearance)
        for cid in grants:
            members.grant(store, member, cid, True, False)
        secret = members.new_secret(store, member)
        self.client = create_app(str(db)).test_client()
        self.headers = {"Accept": TAXII,
                        "Authorization": "Basic " + base64.b64encode(f"{member}:{secret}".encode()).decode()}
        self.uuids = {c["id"]: c["uuid"] for c in store.collections.list(counts=False)}

    def get(self, path: str, **params):
        return self.client.get(path, query_string=params, headers=self.headers)

    def objects(self, cid: str, **params) -> list[dict]:
        """Every object of a collection, following `next` at a small page size."""
        out, params = [], {"limit": 3, **params}
        while True:
            r = self.get(f"/ceptoar/collections/{self.uuids[cid]}/objects/", **params)
            assert r.status_code == 200, r.get_data(as_text=True)
            body = r.get_json()
            out.extend(body.get("objects", []))
            if not body.get("more"):
                return out
            params = {**params, "next": body["next"]}

    def object(self, cid: str, oid: str, **params):
        return self.get(f"/ceptoar/collections/{self.uuids[cid]}/objects/{oid}/", **params)

    def text(self, cid: str) -> str:
        return json.dumps(self.objects(cid, **{"match[version]": "all"}), ensure_ascii=False)
