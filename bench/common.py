"""Helpers shared by the benchmarks: machine facts and writing a section of BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import re
import sqlite3
import statistics
import subprocess
import threading
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


def paired_ms(fa, fb, repeat: int) -> tuple[float, float]:
    """Median wall times (ms) of `fa()` and `fb()` over `repeat` calls each, taken alternately, so
    that the machine's drift during the run falls on both alike (for ratios to a floor)."""
    ta, tb = [], []
    for _ in range(repeat):
        for fn, times in ((fa, ta), (fb, tb)):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(ta), statistics.median(tb)


def run_peak(cmd: list[str], tree: list[float] | None = None, **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    """Run `cmd` (as subprocess.run, output captured) and return it with its own peak resident memory
    in MiB: VmHWM of its address space, read every 20 ms while it runs. Not getrusage's ru_maxrss: a
    child started by vfork and exec inherits the high-water mark of the parent's address space, so a
    benchmark that built a large database in memory would see its own peak reported as the child's.
    `tree`, when given, receives the peak of the resident memory of the process and its children
    together (the sum of their VmRSS at each reading)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    peak_kb, tree_kb, done = 0, 0, threading.Event()

    def field(pid: int, name: str) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1])
        return 0

    def family(pid: int) -> list[int]:
        kids = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
        return [pid, *(p for k in kids for p in family(k))]

    def watch() -> None:
        nonlocal peak_kb, tree_kb
        while not done.is_set():
            try:
                peak_kb = max(peak_kb, field(proc.pid, "VmHWM:"))
                tree_kb = max(tree_kb, sum(field(p, "VmRSS:") for p in family(proc.pid)))
            except (OSError, ValueError):
                pass
            done.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    done.set()
    watcher.join()
    if tree is not None:
        tree.append(tree_kb / 1024)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), peak_kb / 1024
