"""Headless Chromium from Debian's package (tests/packages.sh), as the tests drive it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def find() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require() -> str:
    browser = find()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs it with tests/packages.sh")
        pytest.skip("no Chromium here (tests/packages.sh installs it)")
    return browser


def run(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """Load a page in a fresh profile; `args` say what to produce (--dump-dom, --screenshot=…)."""
    profile = tmp / f"profile-{page.stem}-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run([require(), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=3000", *args,
                           page.as_uri()], check=True, capture_output=True, text=True, timeout=90)


def webdriver():
    """Selenium driving Debian's chromium through Debian's chromedriver (headless), or a skip."""
    driver_path = shutil.which("chromedriver")
    browser = require()
    if driver_path is None:
        if os.environ.get("CI"):
            pytest.fail("chromedriver is missing: .ci/run installs chromium-driver with tests/packages.sh")
        pytest.skip("no chromedriver here (tests/packages.sh installs chromium-driver)")
    from selenium import webdriver as wd
    from selenium.webdriver.chrome.service import Service

    options = wd.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=390,1200"):
        options.add_argument(flag)
    return wd.Chrome(service=Service(driver_path), options=options)
