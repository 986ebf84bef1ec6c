"""The code base stays ruff-clean (rules in pyproject.toml)."""

import subprocess
import sys

from tests.conftest import ROOT


def test_ruff_clean():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "ceptoar", "tests", "bench"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
