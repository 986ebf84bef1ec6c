"""FIRST's EPSS daily file: the probability that each CVE is exploited in the next 30 days, and its
percentile among all scored CVEs.

The file is CSV, usually gzip-compressed, opened by one comment line naming the model and the score
date (`#model_version:v2026.06.15,score_date:2026-09-29T12:00:22Z`), then the header
`cve,epss,percentile` and one row per CVE (about 300,000). It is read as a stream, a row at a time,
never held whole in its decompressed form: `read` returns the file's facts and an iterator of rows.
A row that is not a CVE with two numbers from 0 to 1 is a warning naming its line, never a failed
source; a body that is no EPSS file at all, or whose every row is unreadable, is a FeedError.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from ceptoar.core.model import CVE_RE
from ceptoar.normalize import FeedError

MAX_DECOMPRESSED = 256 << 20  # an EPSS file is about 12 MB decompressed: past this it is a bomb
COLUMNS = ("cve", "epss", "percentile")


@dataclass
class EpssFile:
    model_version: str | None = None
    score_date: str | None = None
    warnings: list[str] = field(default_factory=list)
    rows: Iterator[tuple[str, float, float]] = iter(())
    read: int = 0  # rows read so far, usable or not


class _Capped(io.RawIOBase):
    """A decompressing reader that stops at MAX_DECOMPRESSED."""

    def __init__(self, raw: bytes):
        self._gz = gzip.GzipFile(fileobj=io.BytesIO(raw))
        self._n = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            data = self._gz.read(len(b))
        except (OSError, EOFError, zlib.error) as e:
            raise FeedError(f"the EPSS file's gzip stream is broken ({e})") from None
        self._n += len(data)
        if self._n > MAX_DECOMPRESSED:
            raise FeedError(f"the EPSS file decompresses past {MAX_DECOMPRESSED >> 20} MiB: refused")
        b[:len(data)] = data
        return len(data)


def _fraction(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) and 0 <= v <= 1 else None


def read(raw: bytes) -> EpssFile:
    """The file's model and score date, and its rows as they are read (`rows`: (CVE, probability,
    percentile)); warnings name the line of each row left out."""
    stream = io.BufferedReader(_Capped(raw)) if raw[:2] == b"\x1f\x8b" else io.BytesIO(raw)
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="strict", newline="")
    out = EpssFile()
    try:
        first = text.readline()
    except UnicodeDecodeError:
        raise FeedError("the EPSS file is not UTF-8 text") from None
    line = 1
    if first.startswith("#"):
        for part in first[1:].strip().split(","):
            key, _, value = part.partition(":")
            if key.strip() == "model_version":
                out.model_version = value.strip()[:40] or None
            elif key.strip() == "score_date":
                out.score_date = value.strip()[:40] or None
        first, line = text.readline(), 2
    header = [h.strip().lower() for h in first.strip().split(",")]
    if not set(COLUMNS) <= set(header):
        raise FeedError(f"not an EPSS file: line {line} is not the header {','.join(COLUMNS)}")
    at = [header.index(c) for c in COLUMNS]

    def rows() -> Iterator[tuple[str, float, float]]:
        n, usable = line, 0
        try:
            for fields in csv.reader(text):
                n += 1
                out.read += 1
                if not fields:
                    continue
                try:
                    cve, p, pct = (fields[i].strip() for i in at)
                except IndexError:
                    out.warnings.append(f"line {n}: {len(fields)} column(s), not {len(header)}: left out")
                    continue
                prob, rank = _fraction(p), _fraction(pct)
                if not CVE_RE.fullmatch(cve):
                    out.warnings.append(f"line {n}: {cve[:40]!r} is not a CVE id: left out")
                elif prob is None or rank is None:
                    bad = p if prob is None else pct
                    out.warnings.append(f"line {n}: {bad[:40]!r} is not a number from 0 to 1: left out")
                else:
                    usable += 1
                    yield cve.upper(), prob, rank
        except UnicodeDecodeError:
            raise FeedError(f"the EPSS file is not UTF-8 text (after line {n})") from None
        except csv.Error as e:
            raise FeedError(f"the EPSS file's line {n + 1} cannot be read as CSV ({e})") from None
        if not usable:
            raise FeedError(f"nothing usable: none of the EPSS file's {out.read:,} row(s) is a CVE with its scores")

    out.rows = rows()
    return out
