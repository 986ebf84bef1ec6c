"""Peak memory of one large ingest, as an operator runs it (`ceptoar ingest` in its own process):
a 30,000-item JVN iPedia feed and a 70,000-entry KEV catalog (made from ../shared/data).

    .venv/bin/python -m bench.memory [--no-write]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATA, run_peak, write_section  # noqa: E402
from bench.ingest import big_jvn_feed  # noqa: E402

CEPTOAR = [sys.executable, "-m", "ceptoar.cli"]


def kev_catalog(n: int) -> bytes:
    doc = json.loads((DATA / "cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json").read_text())
    vulns = doc["vulnerabilities"]
    doc["vulnerabilities"] = [dict(vulns[i % len(vulns)], cveID=f"CVE-2099-{100000 + i}") for i in range(n)]
    return json.dumps(doc).encode()


def peak(tmp: Path, kind: str, feed: Path) -> tuple[float, float, float]:
    db = tmp / f"{kind}.db"
    (tmp / "none.toml").write_text("")
    subprocess.run([*CEPTOAR, "--db", str(db), "init", "--sources", str(tmp / "none.toml")], check=True,
                   capture_output=True)
    subprocess.run([*CEPTOAR, "--db", str(db), "sources", "add", "s", "https://feeds.example/", "--kind", kind],
                   check=True, capture_output=True)
    t = time.perf_counter()
    tree: list[float] = []
    done, mib = run_peak([*CEPTOAR, "--db", str(db), "ingest", str(feed), "--source", "s"], tree)
    elapsed = time.perf_counter() - t
    if done.returncode:
        raise SystemExit(done.stdout + done.stderr)
    return mib, tree[0], elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = ["| feed | size | peak RSS, hub process (MiB) | peak RSS with its normalizing processes (MiB) | time (s) |",
            "|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, kind, make, name in (("JVN iPedia, 30,000 items", "jvn", lambda: big_jvn_feed(30000), "f.rdf"),
                                        ("KEV, 70,000 entries", "kev", lambda: kev_catalog(70000), "f.json")):
            feed = tmp / name
            feed.write_bytes(make())
            mib, together, seconds = peak(tmp, kind, feed)
            size = feed.stat().st_size / 1e6
            rows.append(f"| {label} | {size:.0f} MB | {mib:,.0f} | {together:,.0f} | {seconds:.1f} |")
    body = ("Each ingest in its own process (`ceptoar ingest`), peak resident memory from the kernel "
            "(the process's own VmHWM, read while it runs), and the peak of the sum of its and its children's "
            "resident memory (a large document is normalized by two child processes: ceptoar.ingest.offload). "
            "Before streaming (commit d0ac6e6, measured "
            "with `/usr/bin/time -f %M`): 1,080 MiB for the JVN feed and 1,200 MiB for the KEV catalog, every "
            "entry, raw text and serialized object held until one final write.\n\n" + "\n".join(rows))
    print(body)
    if not args.no_write:
        write_section("Ingest memory", "python -m bench.memory", body)


if __name__ == "__main__":
    main()
