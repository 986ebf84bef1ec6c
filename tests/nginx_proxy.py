"""A real nginx with TLS in front of a hub process, configured from taxii_server/nginx.conf.example."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.taxii_fixtures import free_port


def nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        if os.environ.get("CI"):
            pytest.fail("nginx is missing: .ci/run installs it with tests/packages.sh")
        pytest.skip("no nginx here (tests/packages.sh installs it)")
    return found


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def self_signed(directory: Path, name: str, subject: str) -> tuple[Path, Path]:
    """(certificate, key) of a new self-signed certificate (a server's, or a CA's)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", subject,
            "-keyout", str(key), "-out", str(cert))
    return cert, key


def issued(directory: Path, name: str, subject: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """(certificate, key) of a client certificate issued by `ca`."""
    cert, key, csr = directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.csr"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", str(key), "-out", str(csr))
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
            "-days", "1", "-out", str(cert))
    return cert, key


class Nginx:
    """nginx serving the example site on a free loopback port, proxying to `upstream`."""

    def __init__(self, directory: Path, upstream: str, *, server: tuple[Path, Path], members_ca: Path,
                 proxy_key: str = "CHANGE-ME-openssl-rand-hex-32", port: int | None = None):
        self.dir = directory
        self.port = port or free_port()
        site = (ROOT / "taxii_server/nginx.conf.example").read_text()
        for old, new in [("listen 443 ssl;", f"listen 127.0.0.1:{self.port} ssl;"),
                         ("/etc/ssl/ceptoar/fullchain.pem", str(server[0])),
                         ("/etc/ssl/ceptoar/privkey.pem", str(server[1])),
                         ("/etc/ssl/ceptoar/members-ca.pem", str(members_ca)),
                         ("http://127.0.0.1:8000", upstream),
                         ("CHANGE-ME-openssl-rand-hex-32", proxy_key)]:
            assert old in site, old
            site = site.replace(old, new)
        d = directory
        self.conf = d / "nginx.conf"
        self.conf.write_text(f"""daemon off; pid {d}/nginx.pid; error_log {d}/error.log;
events {{}}
http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
{site} }}""")
        self.base = f"https://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Nginx:
        self.proc = subprocess.Popen([nginx(), "-c", str(self.conf), "-p", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(self.base + "/taxii2/", verify=False, timeout=2)
                return self
            except requests.ConnectionError:
                assert time.monotonic() < deadline, (self.dir / "error.log").read_text()
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)
