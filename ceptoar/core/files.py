"""Files the hub writes: private to the operator (0600, folders it creates 0700), written whole,
and only inside the folder asked for. Names that come from data (e-mail addresses, ids) never
choose where a file goes."""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from pathlib import Path

from ceptoar.core.errors import CeptoarError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._+-]{0,200}$")


class FileError(CeptoarError):
    pass


def private_dir(path: Path) -> Path:
    """The folder, created 0700 (with its missing parents) if it does not exist."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        os.chmod(path, PRIVATE_DIR)
    return path


def child(directory: Path, name: str) -> Path:
    """`directory/name` for a plain file name: no separators, no `..`, no control characters, not
    hidden, and resolving inside the folder."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise FileError(f"refused to write a file named {name!r}: not a plain file name")
    base = directory.resolve()
    path = (base / name).resolve()
    if path.parent != base:
        raise FileError(f"refused to write {name!r} outside {directory}")
    return path


def write_private(path: Path, data: bytes | str) -> None:
    """Write the whole file at once, readable by the operator only."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, PRIVATE_FILE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_private(*paths: Path) -> None:
    """Tighten files the hub owns (a database made by an earlier version, its WAL and SHM)."""
    for p in paths:
        try:
            if p.exists() and p.stat().st_uid == os.getuid() and p.stat().st_mode & 0o077:
                os.chmod(p, PRIVATE_FILE)
        except OSError:
            pass


class CsvError(CeptoarError, ValueError):
    """A CSV that cannot be read as a whole (its header, or a row the csv module refuses)."""


def csv_rows(text: str, required: tuple[str, ...], columns: tuple[str, ...]):
    """The rows of an uploaded CSV (UTF-8, a header first, a BOM allowed) as (line number, row).
    A missing column, or a row the csv module cannot read (a field past its size limit, a stray
    NUL), is a CsvError naming the line, never a traceback."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    try:
        missing = [c for c in required if c not in (reader.fieldnames or [])]
    except csv.Error as e:
        raise CsvError(f"line 1: unreadable CSV header ({e})") from None
    if missing:
        raise CsvError(f"the CSV header lacks {', '.join(missing)} (columns: {', '.join(columns)})")

    def rows():
        try:
            for row in reader:
                yield reader.line_num, row
        except csv.Error as e:
            raise CsvError(f"line {reader.line_num + 1}: unreadable CSV ({e})") from None
    return rows()
