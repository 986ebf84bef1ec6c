"""A real PostgreSQL server for the tests, started from Debian's `postgresql` package.

initdb in a temporary folder (as the `postgres` user when the tests run as root, since initdb
refuses root), a free port on loopback, durability off (the data is thrown away). Each test gets a
database of its own, created from template1 (which already holds pg_trgm).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def binaries() -> Path | None:
    """The folder of initdb/pg_ctl, or None when PostgreSQL's server is not installed."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent  # a symlink (/usr/local/bin) to the whole folder
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="ceptoar-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "ceptoar"
        self._as_postgres = os.geteuid() == 0
        self._names = itertools.count(1)

    def _run(self, *args: str) -> None:
        cmd = [str(a) for a in args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self) -> PostgresServer:
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
        self.root.chmod(0o700)
        # C.UTF-8: pg_trgm sees Japanese characters as letters (under plain C it would skip them).
        self._run(self.bindir / "initdb", "-D", self.data, "-U", self.user, "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        options = (f"-p {self.port} -k {self.root} -h 127.0.0.1 -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=400")
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-o", options, "-l", self.root / "log", "-w",
                  "-t", "60", "start")
        self.admin("CREATE EXTENSION IF NOT EXISTS pg_trgm", database="template1")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)

    def database(self, template: str = "template1") -> str:
        """A new database (empty, or a copy of `template`, which nobody may be connected to); its URL."""
        name = f"hub_{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)

    def standby(self) -> PostgresServer:
        """A hot standby of this server: a base backup taken with pg_basebackup (-R writes the
        replication settings), started on a port of its own, streaming from this one."""
        replica = PostgresServer(self.bindir)
        if replica._as_postgres:
            shutil.chown(replica.root, "postgres")
        replica.root.chmod(0o700)
        replica._run(self.bindir / "pg_basebackup", "-D", replica.data, "-R", "-X", "stream", "-h", "127.0.0.1",
                     "-p", str(self.port), "-U", self.user, "--no-sync", "-c", "fast")
        options = (f"-p {replica.port} -k {replica.root} -h 127.0.0.1 -c fsync=off -c hot_standby=on "
                   "-c max_connections=400")
        replica._run(self.bindir / "pg_ctl", "-D", replica.data, "-o", options, "-l", replica.root / "log", "-w",
                     "-t", "60", "start")
        return replica

    def stop(self) -> None:
        try:
            self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
