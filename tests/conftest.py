"""Shared fixtures: the real feed files of ../shared/data, a loopback HTTP server that can also
misbehave on purpose, and a CLI runner on a fresh database."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from click.testing import CliRunner

from ceptoar.cli import main
from ceptoar.core.settings import default_config_dir
from ceptoar.ops.devserver import serve_directory
from ceptoar.store.engines import close_pools  # used here and by the tests that copy databases by template

pytest_plugins = ["tests.smtp_sink"]  # the `smtp` fixture: a real SMTP server (aiosmtpd)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
# The engine under the hub's tests: sqlite (default) or postgresql (a server the tests start).
ENGINE = os.environ.get("CEPTOAR_TEST_ENGINE", "sqlite")


def scratch(prefix: str) -> Path:
    """A folder of this test process's own, removed when it exits."""
    path = Path(tempfile.mkdtemp(prefix=f"ceptoar-{prefix}-"))
    atexit.register(shutil.rmtree, path, True)
    return path


if ENGINE == "postgresql" and "CEPTOAR_CONFIG" not in os.environ:
    # A PostgreSQL hub has no folder to keep its configuration beside: the tests' own, not ~/.config.
    os.environ["CEPTOAR_CONFIG"] = str(scratch("config"))


def pytest_collection_modifyitems(config, items):
    if ENGINE == "postgresql":
        skip = pytest.mark.skip(reason="SQLite only (the database file itself: copies, modes, WAL, disk full)")
        for item in items:
            if "sqlite_only" in item.keywords:
                item.add_marker(skip)


_postgres = None


def postgres_server():
    """A PostgreSQL server from Debian's package, started on first use, stopped at the end of the
    run; the test is skipped (with the reason) when the server binaries are not installed."""
    global _postgres
    if _postgres is None:
        from tests.postgres import PostgresServer, binaries

        bindir = binaries()
        if bindir is None:
            pytest.skip("PostgreSQL server binaries not found (install Debian's `postgresql` package)")
        _postgres = PostgresServer(bindir).start()
    return _postgres


def pytest_sessionfinish(session, exitstatus):
    if _postgres is not None:
        _postgres.stop()


def new_db(tmp: Path, name: str = "hub.db") -> str:
    """Where a new hub lives: a SQLite file in `tmp`, or a new PostgreSQL database when the run is
    on that engine (CEPTOAR_TEST_ENGINE=postgresql)."""
    if ENGINE == "postgresql":
        return postgres_server().database()
    return str(tmp / name)


_built: dict[str, str] = {}


def copied(key: str, tmp: Path, build) -> str:
    """A database of its own in `tmp`, a copy of one `build(folder)` made once per test process
    (a SQLite backup with its configuration folder; CREATE DATABASE … TEMPLATE on PostgreSQL):
    ingesting and publishing the same files again for every test is most of a test's time."""
    if key not in _built:
        _built[key] = str(build(scratch(key)))
        if ENGINE == "postgresql":  # a template database has no one connected to it
            close_pools()
            postgres_server().admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    f"WHERE datname = '{_built[key].rsplit('/', 1)[-1]}' "
                                    "AND pid <> pg_backend_pid()")
    source = _built[key]
    if ENGINE == "postgresql":
        return postgres_server().database(template=source.rsplit("/", 1)[-1])
    db = tmp / "hub.db"
    src, dst = sqlite3.connect(source), sqlite3.connect(db)
    src.backup(dst)
    src.close()
    dst.close()
    db.chmod(0o600)
    config = Path(source).parent / "ceptoar-config"
    if config.is_dir():
        shutil.copytree(config, tmp / "ceptoar-config", dirs_exist_ok=True)
    return str(db)


@pytest.fixture(autouse=ENGINE == "postgresql")
def pools_closed_after():
    """Each test has databases of its own: their connection pools end with it."""
    yield
    close_pools()


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # before the response
    drip: float = 0.0  # between 1-byte chunks of the body
    etag: str | None = None


class FaultHandler(BaseHTTPRequestHandler):
    routes: dict[str, Route] = {}
    hits: list[tuple[str, dict]] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.hits.append((self.path, dict(self.headers)))
        route = self.routes.get(self.path)
        if route is None:
            path = DATA / self.path.lstrip("/")
            route = Route(body=path.read_bytes()) if path.is_file() and DATA.resolve() in path.resolve().parents else Route(
                b"not found", 404)
        time.sleep(route.delay)
        if route.etag and self.headers.get("If-None-Match") == route.etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(route.status)
        headers = {"Content-Length": str(len(route.body))} | route.headers
        if route.etag:
            headers["ETag"] = route.etag
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            if route.drip:
                for i in range(len(route.body)):
                    self.wfile.write(route.body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(route.drip)
            else:
                self.wfile.write(route.body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class FeedServer:
    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.hits: list[tuple[str, dict]] = []
        handler = type("Handler", (FaultHandler,), {"routes": self.routes, "hits": self.hits})
        self.server, self.base = serve_directory(DATA, 0, handler=lambda *a, directory=None: handler(*a))

    def route(self, path: str, body: bytes | str = b"", **kw) -> str:
        self.routes[path] = Route(body.encode() if isinstance(body, str) else body, **kw)
        return self.base + path

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="session")
def data() -> Path:
    assert DATA.is_dir(), f"../shared/data not found at {DATA}"
    return DATA


@pytest.fixture
def feed_server():
    s = FeedServer()
    yield s
    s.server.shutdown()


class Hub:
    """Runs `ceptoar` commands on one database, the way a user would."""

    # Unsubscribe links in the mail the commands send point here (a real send without one is refused).
    public_url: str | None = "https://hub.example.jp"

    def __init__(self, db: Path):
        self.db = db
        self.runner = CliRunner()

    def run(self, *args: str, ok: bool | None = True, input: str | None = None):
        env = {"CEPTOAR_PUBLIC_URL": os.environ.get("CEPTOAR_PUBLIC_URL", self.public_url)} if self.public_url \
            else {"CEPTOAR_PUBLIC_URL": None}
        result = self.runner.invoke(main, ["--db", str(self.db), *args], catch_exceptions=False, input=input,
                                    env=env)
        if ok is True:
            assert result.exit_code == 0, f"ceptoar {' '.join(args)} → {result.exit_code}\n{result.output}"
        if args and args[0] == "init" and result.exit_code == 0:
            real_contacts(Path(os.environ.get("CEPTOAR_CONFIG") or default_config_dir(str(self.db))))
        return result

    def json(self, *args: str, ok: bool | None = True):
        result = self.run(*args, "--format", "json", ok=ok)
        return json.loads(result.stdout)


def real_contacts(config: Path) -> None:
    """A configuration folder as an operator leaves it: the examples' placeholder telephone numbers
    ("03-0000-0000 (example)") replaced, so that `incidents report` takes incidents (it refuses to
    send a clinic to a placeholder; tests of that refusal put one back)."""
    for name in ("contacts.toml", "relay.toml"):
        file = config / name
        if file.exists():
            text = re.sub(r'"0(\d)-0000-(\d{4}) \(example\)"', r'"0\1-5555-\2"', file.read_text(encoding="utf-8"))
            file.write_text(text.replace(" (example)", ""), encoding="utf-8")


def _initialized(folder: Path) -> str:
    empty = folder / "sources.toml"
    empty.write_text("# no sources\n")
    h = Hub(new_db(folder))
    h.run("init", "--sources", str(empty))
    return h.db


@pytest.fixture
def hub(tmp_path) -> Hub:
    """A hub whose catalogue is empty: tests add loopback sources and never reach the internet
    (`ceptoar init` run once per test process, its database copied for each test)."""
    (tmp_path / "sources.toml").write_text("# no sources\n")
    return Hub(copied("initialized", tmp_path, _initialized))
