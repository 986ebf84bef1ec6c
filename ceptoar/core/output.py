"""Output shared by every command: --format table|json|csv, and text that is safe to show.

Feed titles, member submissions and CSV rows are hostile: control characters (terminal escape and
OSC sequences, C1 controls, bidirectional overrides) are shown as visible escapes in every human-
readable line; JSON escapes them and refuses non-finite numbers; CSV cells that a spreadsheet
would run as a formula are neutralized (OWASP CSV injection guidance).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys

import click
from tabulate import tabulate
from wcwidth import wcswidth

from ceptoar.core.model import cvss_label

FORMATS = ("table", "json", "csv")


def format_option(choices: tuple[str, ...] = FORMATS, default: str = "table"):
    return click.option("--format", "fmt", type=click.Choice(choices), default=default, show_default=True,
                        help="Output format; JSON is stable for scripts.")


# C0 controls but tab and newline, DEL, C1 controls, bidirectional overrides and isolates, the
# line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def has_control(text: str, newlines: bool = True) -> bool:
    """Whether free text holds control characters (tabs and bidi overrides too); line breaks
    count only when `newlines` is false."""
    return bool(_UNSAFE.search(text)) or "\t" in text or (not newlines and "\n" in text)


def clean(text: str) -> str:
    """Text a terminal shows as it is: every control character as a visible escape."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else
                       f"\\u{ord(m.group()):04x}", text)


def echo(message: str = "", err: bool = False, nl: bool = True) -> None:
    click.echo(clean(str(message)), err=err, nl=nl)


def to_json(value, indent: int | None = 2) -> str:
    """Strict JSON (no NaN or Infinity) with every control character escaped, Japanese readable."""
    text = json.dumps(value, ensure_ascii=False, indent=indent, allow_nan=False)
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _cell(v, width: int | None) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        v = ", ".join(_flat(x) for x in v)
    s = clean(" ".join(str(v).split()))
    if width and wcswidth(s) > width:
        out = ""
        for ch in s:
            if wcswidth(out + ch) > width - 1:
                break
            out += ch
        s = out + "…"
    return s


def _flat(x) -> str:
    if isinstance(x, dict):
        if isinstance(x.get("score"), (int, float)):
            return cvss_label(x)
        return json.dumps(x, ensure_ascii=False)
    return str(x)


def csv_cell(v) -> str:
    """A value as one CSV cell: lists joined with ';', None empty; a cell a spreadsheet would
    evaluate (=, +, -, @, tab, CR first) gets a leading apostrophe."""
    if isinstance(v, list):
        text = ";".join(_flat(x) for x in v)
    else:
        text = "" if v is None else str(v)
    text = clean(text)
    return "'" + text if text.startswith(_FORMULA) else text


def csv_text(rows: list[dict], columns: list[str]) -> str:
    """Rows as CSV with a header, every cell made safe for spreadsheets (csv_cell)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([csv_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def emit(rows: list[dict], fmt: str, columns: list[str], widths: dict[str, int] | None = None) -> None:
    """Print rows: JSON gets every field, table and CSV the given columns."""
    widths = widths or {}
    if fmt == "json":
        click.echo(to_json(rows))
    elif fmt == "csv":
        click.echo(csv_text(rows, columns), nl=False)
    else:
        if not rows:
            click.echo("(none)", err=True)
            return
        click.echo(tabulate([[_cell(r.get(c), widths.get(c)) for c in columns] for r in rows],
                            headers=columns, tablefmt="simple", disable_numparse=True))


def progress_line(message: str) -> None:
    """Progress for a person at a terminal; silent when stderr is piped or captured."""
    if sys.stderr.isatty():
        echo(message, err=True)
