"""A published hub database, members with different grants and clearances, and real server
processes (`ceptoar serve`, gunicorn) for the TAXII tests."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from ceptoar.publishing import triage
from ceptoar.sharing import members
from ceptoar.store import Store
from tests.conftest import DATA, ROOT, Hub, copied, new_db, scratch

TAXII = "application/taxii+json;version=2.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 20, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text() if log else ''}")
        try:
            requests.get(url, timeout=5)  # a first answer may wait for a worker's first connection
            return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not start")


@functools.cache
def _logs() -> Path:
    """Where this test process's servers write their logs."""
    return scratch("servers")


class ServerProcess:
    def __init__(self, db: Path, gunicorn: bool = False, workers: int = 3):
        self.db, self.gunicorn, self.workers = db, gunicorn, workers
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        # A file, not a pipe: a pipe nobody reads fills up and blocks the server's access log.
        self.log_path = _logs() / f"server-{self.port}.log"

    def start(self) -> ServerProcess:
        env = dict(os.environ, CEPTOAR_DB=str(self.db), CEPTOAR_TAXII_BIND=f"127.0.0.1:{self.port}",
                   CEPTOAR_TAXII_WORKERS=str(self.workers))
        if self.gunicorn:
            cmd = [str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "taxii_server/gunicorn.conf.py")]
        else:
            cmd = [sys.executable, "-m", "ceptoar.cli", "--db", str(self.db), "serve", "--port", str(self.port)]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        wait_for(self.base + "/taxii2/", self.proc, log=self.log_path)
        return self

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@dataclass
class World:
    db: Path
    hub: Hub
    secrets: dict[str, str] = field(default_factory=dict)
    uuids: dict[str, str] = field(default_factory=dict)
    amber_report: str = ""
    green_report: str = ""

    def auth(self, member: str) -> tuple[str, str]:
        return (member, self.secrets[member])


_built: World | None = None


def build_world(tmp: Path) -> World:
    """A world of its own in `tmp`: built once per test process, then copied for each caller."""

    def build(folder: Path) -> str:
        global _built
        _built = _build_world(folder)
        return _built.db

    db = copied("world", tmp, build)
    (tmp / "sources.toml").write_text("")
    return World(db=db, hub=Hub(db), secrets=dict(_built.secrets), uuids=dict(_built.uuids),
                 amber_report=_built.amber_report, green_report=_built.green_report)


def _build_world(tmp: Path) -> World:
    hub = Hub(new_db(tmp))
    empty = tmp / "sources.toml"
    empty.write_text("")
    hub.run("init", "--sources", str(empty))
    for sid, kind, path in [("kev", "kev", "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json"),
                            ("icsma", "csaf", "cisa_icsma/cisagov_CSAF_icsma-24-200-01.json"),
                            ("icsma2", "csaf", "cisa_icsma/cisagov_CSAF_icsma-24-060-01.json")]:
        hub.run("sources", "add", sid, f"https://feeds.example/{sid}", "--kind", kind)
        hub.run("ingest", str(DATA / path), "--source", sid)
    store = Store(hub.db)
    world = World(db=hub.db, hub=hub)
    kev_ids = [r["id"] for r in store.advisories.list(source="kev", search="Microsoft")]
    triage.publish(store, kev_ids, "test")
    amber = store.advisories.list(source="icsma")[0]["id"]
    triage.triage(store, amber, "test", tlp="AMBER", medical=True, severity="critical")
    triage.retag(store, [amber], ["jma"], [], "test")
    triage.publish(store, [amber], "test")
    green = store.advisories.list(source="icsma2")[0]["id"]
    triage.triage(store, green, "test", tlp="GREEN", medical=True)
    triage.publish(store, [green], "test")
    triage.retag(store, [green], ["jma"], [], "test")  # a second published version
    world.amber_report, world.green_report = amber, green
    for mid, clearance, grants in [
        ("assoc-green", "GREEN", [("kev", True, False), ("medical", True, False), ("jma-amber", True, False)]),
        ("assoc-amber", "AMBER", [("jma-amber", True, False), ("medical", True, True)]),
        ("assoc-clear", "CLEAR", [("medical", True, False)]),
        ("writer", "GREEN", [("medical", False, True)]),
        ("gone", "GREEN", [("kev", True, False)]),
    ]:
        members.add(store, mid, f"Association {mid}", clearance)
        for cid, r, w in grants:
            members.grant(store, mid, cid, r, w)
        world.secrets[mid] = members.new_secret(store, mid)
    store.members.set_enabled("gone", False)
    world.uuids = {c["id"]: c["uuid"] for c in store.collections.list()}
    return world


REGISTER_HEADER = ("category,vendor,product,version,cpe,purl,aliases,internet_exposed,remote_maintenance,"
                   "maintenance_vendor,note\n")


def sakura_clinic(hub, folder: Path) -> None:
    """A clinic of assoc-green whose register holds one internet-exposed FortiOS VPN appliance and a
    Windows PC that is not exposed; its director subscribed with the clinic, and a subscriber of the
    same association with no facility."""
    (folder / "f.csv").write_text("facility_id,name,facility_type,prefecture,member,phone\n"
                                  "sakura,さくら診療所,clinic,東京都,assoc-green,03-1234-5678\n", encoding="utf-8")
    hub.run("facilities", "import", str(folder / "f.csv"))
    (folder / "r.csv").write_text(REGISTER_HEADER + "VPN装置,フォーティネット,FortiOS,7.0.1,,,,yes,no,,\n"
                                  "端末OS,Microsoft,Windows,11,,,,no,no,,\n", encoding="utf-8")
    hub.run("inventory", "import", "sakura", str(folder / "r.csv"))
    hub.run("subscribers", "add", "inchou@sakura.example.jp", "--member", "assoc-green", "--clearance", "GREEN",
            "--facility", "sakura")
    hub.run("subscribers", "add", "other@clinic.example.jp", "--member", "assoc-green", "--clearance", "GREEN")
