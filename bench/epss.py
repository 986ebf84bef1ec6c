"""FIRST's EPSS daily file at its real size (300,000 rows, gzip), fetched as an operator's `ceptoar
fetch` would (its own process, the file on loopback), with 1,404 advisories (CISA's KEV catalogue)
whose CVEs it scores: wall time and peak resident memory. Target: ≤ 15 s and ≤ 100 MiB.

The rows are made here (the real file's shape: its comment line, its header, CVE ids in order,
five-decimal fractions); the KEV catalogue's CVEs are among them.

    python -m bench.epss [--rows 300000] [--write]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import run_peak, write_section  # noqa: E402
from ceptoar.ops.devserver import serve_directory  # noqa: E402

CEPTOAR = [sys.executable, "-m", "ceptoar.cli"]
KEV = Path(__file__).resolve().parents[2] / "shared/data/cisa_kev/cisagov_kev-data_known_exploited_vulnerabilities.json"


def epss_file(rows: int, cves: list[str]) -> bytes:
    rand = random.Random(0)
    ids = sorted(set(cves) | {f"CVE-{1999 + i % 27}-{10000 + i}" for i in range(rows - len(set(cves)))},
                 key=lambda c: (int(c.split("-")[1]), int(c.split("-")[2])))
    lines = ["#model_version:v2026.06.15,score_date:2026-09-29T12:00:22Z", "cve,epss,percentile"]
    lines += [f"{c},{rand.random() ** 6:.5f},{rand.random():.5f}" for c in ids]
    return gzip.compress(("\n".join(lines) + "\n").encode())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ceptoar-bench-epss-"))
    www = tmp / "www"
    www.mkdir()
    cves = [v["cveID"] for v in json.loads(KEV.read_text())["vulnerabilities"]]
    body = epss_file(args.rows, cves)
    (www / "epss.csv.gz").write_bytes(body)
    (www / "kev.json").write_bytes(KEV.read_bytes())
    server, base = serve_directory(www)
    db = tmp / "hub.db"
    (tmp / "none.toml").write_text("")
    run = [*CEPTOAR, "--db", str(db)]
    subprocess.run([*run, "init", "--sources", str(tmp / "none.toml")], check=True, capture_output=True)
    subprocess.run([*run, "sources", "add", "kev", f"{base}/kev.json", "--kind", "kev"], check=True,
                   capture_output=True)
    subprocess.run([*run, "fetch", "kev"], check=True, capture_output=True)
    subprocess.run([*run, "sources", "add", "epss", f"{base}/epss.csv.gz", "--kind", "epss"], check=True,
                   capture_output=True)
    t = time.perf_counter()
    done, peak = run_peak([*run, "fetch", "epss", "--format", "json"])
    seconds = time.perf_counter() - t
    server.shutdown()
    out = json.loads(done.stdout)[0]
    scored = subprocess.run([*run, "advisories", "list", "--status", "all", "--format", "json", "--limit", "5000"],
                            capture_output=True, text=True)
    with_epss = sum(a["epss"] is not None for a in json.loads(scored.stdout))
    body_text = (f"FIRST's EPSS file of {args.rows:,} rows ({len(body) / 1e6:.1f} MB gzip), fetched with `ceptoar "
                 "fetch` (its own process, on loopback) into a hub holding CISA's KEV catalogue (1,404 advisories)."
                 "\n\n| rows | s | peak MiB | status | scores written | advisories scored |\n"
                 "|---:|---:|---:|---|---:|---:|\n"
                 f"| {args.rows:,} | {seconds:.1f} | {peak:.0f} | {out['status']} | {out['new']:,} | {with_epss:,} |"
                 "\n\nTargets: ≤ 15 s and ≤ 100 MiB.\n")
    print(body_text)
    if args.write:
        write_section("EPSS daily file", "python -m bench.epss " + " ".join(sys.argv[1:]), body_text)


if __name__ == "__main__":
    main()
