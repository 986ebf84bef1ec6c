"""Listing output shared by every command: --format table|json|csv."""

from __future__ import annotations

import csv
import io
import json
import sys

import click
from tabulate import tabulate
from wcwidth import wcswidth

FORMATS = ("table", "json", "csv")


def format_option(choices: tuple[str, ...] = FORMATS, default: str = "table"):
    return click.option("--format", "fmt", type=click.Choice(choices), default=default, show_default=True,
                        help="Output format; JSON is stable for scripts.")


def _cell(v, width: int | None) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        v = ", ".join(_flat(x) for x in v)
    s = " ".join(str(v).split())
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
        if "score" in x:
            return f"{x.get('score')} (v{x.get('version')})"
        return json.dumps(x, ensure_ascii=False)
    return str(x)


def csv_cell(v) -> str:
    """A value as one CSV cell: lists joined with ';', None empty."""
    if isinstance(v, list):
        return ";".join(_flat(x) for x in v)
    return "" if v is None else str(v)


def emit(rows: list[dict], fmt: str, columns: list[str], widths: dict[str, int] | None = None) -> None:
    """Print rows: JSON gets every field, table and CSV the given columns."""
    widths = widths or {}
    if fmt == "json":
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([csv_cell(r.get(c)) for c in columns])
        click.echo(buf.getvalue(), nl=False)
    else:
        if not rows:
            click.echo("(none)", err=True)
            return
        click.echo(tabulate([[_cell(r.get(c), widths.get(c)) for c in columns] for r in rows],
                            headers=columns, tablefmt="simple", disable_numparse=True))


def progress_line(message: str) -> None:
    """Progress for a person at a terminal; silent when stderr is piped or captured."""
    if sys.stderr.isatty():
        click.echo(message, err=True)
