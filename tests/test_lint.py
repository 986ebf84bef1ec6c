"""The code base stays ruff-clean (rules in pyproject.toml) and keeps its layers (import-linter)."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_ruff_clean():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "ceptoar", "tests", "bench"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_rooms_import_only_the_rooms_below_them():
    """The layers contract in pyproject.toml ([tool.importlinter]) holds."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout + r.stderr
