"""Helpers shared by the benchmarks: machine facts and writing a section of BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import re
import sqlite3
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def machine() -> str:
    return (f"{platform.python_implementation()} {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"{os.cpu_count()} cores, {platform.machine()}")


def write_section(name: str, command: str, body: str) -> None:
    """Replace (or append) the section `name` of BENCHMARKS.md."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\nFigures from `bench/`; " \
        "each section says the command that produced it. Machines are noisy: compare ratios.\n"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    section = f"## {name}\n\nCommand: `{command}` ({stamp}; {machine()})\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def median_ms(fn, repeat: int) -> float:
    """Median wall time of `fn()` over `repeat` calls, in milliseconds."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)
