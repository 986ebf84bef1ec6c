"""Sources, fetch and ingest: where advisories come from."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.cli.options import send_now
from ceptoar.core.errors import CeptoarError
from ceptoar.core.output import echo, emit, format_option, progress_line, to_json
from ceptoar.fetch.http import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT
from ceptoar.normalize.kinds import KINDS
from ceptoar.ops import catalogue
from ceptoar.pipeline import Limits, fetch_source, ingest_file

SOURCE_COLUMNS = ["id", "kind", "enabled", "tlp", "last_fetched", "last_status", "last_error", "last_note", "url"]


# --- sources --------------------------------------------------------------------------------

@main.group()
def sources() -> None:
    """The feed catalogue and each source's fetch state."""


@sources.command("list")
@format_option()
@pass_hub
def sources_list(hub: Hub, fmt: str) -> None:
    """List sources with their last fetch outcome."""
    rows = [{k: r.get(k) for k in ("id", "name", "kind", "url", "enabled", "tlp", "lang", "interval", "options",
                                   "last_fetched", "last_status", "last_error", "last_note")}
            for r in hub.ready_store().sources.list()]
    emit(rows, fmt, SOURCE_COLUMNS, widths={"last_error": 40, "url": 60})


@sources.command("show")
@click.argument("source_id")
@format_option(("json", "table"), default="json")
@pass_hub
def sources_show(hub: Hub, source_id: str, fmt: str) -> None:
    """One source: its definition, fetch state and health, its last run's warnings (how many, the
    first ten, each naming the item or entry and where it was) and the fields its items carry that
    their format's schema does not name (`unknown_fields`: path → count in its last run, total,
    first and last seen)."""
    row = hub.ready_store().sources.get(source_id)
    if row is None:
        raise CeptoarError(f"no source {source_id!r} (see `ceptoar sources list`)")
    shown = {k: v for k, v in row.items() if k not in ("etag", "last_modified", "last_warnings")} \
        | {"warnings": row["last_warnings"]}
    if fmt == "json":
        echo(to_json(shown))
        return
    for key, value in shown.items():
        if key not in ("warnings", "unknown_fields", "options"):
            echo(f"{key:15} {'' if value is None else value}")
    echo(f"{'options':15} {to_json(row['options'], indent=None)}")
    for w in shown["warnings"]:
        echo(f"{'warning':15} {w}")
    for path, f in sorted(shown["unknown_fields"].items()):
        echo(f"{'unknown field':15} {path}: {f['count']:,} in its last run ({f['total']:,} in all), first seen "
             f"{f['first_seen'][:10]}, last {f['last_seen'][:10]}")


@sources.command("add")
@click.argument("source_id")
@click.argument("url")
@click.option("--kind", required=True, type=click.Choice(sorted(KINDS)))
@click.option("--name")
@click.option("--tlp", default="CLEAR", show_default=True)
@click.option("--lang", default="ja", show_default=True)
@click.option("--interval", type=int, default=3600, show_default=True)
@click.option("--auto-publish", "auto_publish", help="Filter whose matches are published on arrival.")
@click.option("--urgent/--no-urgent", default=True, show_default=True,
              help="Alert a facility on arrival, before review, when a KEV-listed or critical advisory of this "
                   "(CLEAR) source matches a register row exposed to the internet or remotely maintained.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A source option (repeatable), e.g. --option password_env=PARTNER_TAXII_SECRET.")
@pass_hub
def sources_add(hub: Hub, source_id: str, url: str, kind: str, name: str | None, tlp: str, lang: str,
                interval: int, auto_publish: str | None, urgent: bool, options: tuple[str, ...]) -> None:
    """Add a source (or redefine one added before)."""
    store = hub.ready_store()
    opts = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--option")
        opts[key.strip()] = int(value) if value.isdigit() else value
    src = {"id": source_id, "url": url, "kind": kind, "name": name, "tlp": tlp, "lang": lang, "interval": interval,
           "auto_publish": auto_publish, "urgent": urgent, "options": opts}
    new = catalogue.add_source(store, src, hub.actor)
    echo(f"{'added' if new else 'updated'} source {source_id} ({kind}, TLP:{catalogue.check_source(src)['tlp']})")


@sources.command("disable")
@click.argument("source_id")
@pass_hub
def sources_disable(hub: Hub, source_id: str) -> None:
    """Stop fetching a source (its advisories stay)."""
    catalogue.set_enabled(hub.ready_store(), source_id, False, hub.actor)
    echo(f"disabled {source_id}")


@sources.command("enable")
@click.argument("source_id")
@pass_hub
def sources_enable(hub: Hub, source_id: str) -> None:
    """Fetch a source again."""
    catalogue.set_enabled(hub.ready_store(), source_id, True, hub.actor)
    echo(f"enabled {source_id}")


# --- fetch and ingest -------------------------------------------------------------------------

def _limits(timeout: float, max_bytes: int) -> Limits:
    return Limits(timeout=timeout, max_bytes=max_bytes)


limit_options = [
    click.option("--timeout", type=float, default=DEFAULT_TIMEOUT, show_default=True, help="Seconds per request."),
    click.option("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, show_default=True, help="Body size cap."),
]


def with_limits(f):
    for opt in reversed(limit_options):
        f = opt(f)
    return f


FETCH_COLUMNS = ["source", "status", "new", "updated", "unchanged", "skipped", "error"]


@main.command()
@click.argument("source_ids", nargs=-1)
@click.option("--due", is_flag=True, help="Only the enabled sources whose interval has passed (for cron; "
                                          "`ceptoar run` does this by itself), then schedule their next fetch.")
@format_option(("table", "json"))
@with_limits
@click.option("--run-seconds", type=click.FloatRange(min=1), default=None,
              help="Seconds one source's whole run may take (download, normalizing, storing) when the source "
                   "sets no run_seconds option of its own; default 600, an upstream TAXII pull 900.")
@pass_hub
def fetch(hub: Hub, source_ids: tuple[str, ...], due: bool, fmt: str, timeout: float, max_bytes: int,
          run_seconds: float | None) -> None:
    """Fetch the enabled sources (or those named) and ingest what changed.

    Exit status 0 when every source succeeded, 1 when any failed; the others are ingested anyway.
    """
    import random
    from datetime import UTC, datetime

    from ceptoar.ops.worker import is_due, reschedule

    store = hub.ready_store()
    known = {r["id"]: r for r in store.sources.list()}
    unknown = [s for s in source_ids if s not in known]
    if unknown:
        raise click.ClickException(f"no source {', '.join(unknown)} (see `ceptoar sources list`)")
    rows = [known[s] for s in source_ids] if source_ids else [r for r in known.values() if r["enabled"]]
    if due:
        rows = [r for r in rows if is_due(r, datetime.now(UTC))]
    results = []
    for i, row in enumerate(rows, 1):
        progress_line(f"[{i}/{len(rows)}] {row['id']}: fetching {row['url']}")
        res = fetch_source(store, row, Limits(timeout=timeout, max_bytes=max_bytes, run_seconds=run_seconds),
                           progress=progress_line)
        detail = res.error or f"{res.new} new, {res.updated} updated, {res.unchanged} unchanged"
        progress_line(f"[{i}/{len(rows)}] {row['id']}: {res.status}: {detail}" + (f" ({res.note})" if res.note else ""))
        _warn(res)
        results.append(res)
        if due:
            reschedule(store, row["id"], datetime.now(UTC), random.Random(), res.wait)
    send_now(store, hub.actor, err=True)  # alerts on arrival, before review (the urgent path)
    emit([r.as_dict() for r in results], fmt, FETCH_COLUMNS, widths={"error": 60})
    if any(r.status == "error" for r in results):
        sys.exit(1)


@main.command()
@click.option("--source", "source_ids", multiple=True, help="Only this source (repeatable; default: every source).")
@format_option(("table", "json"))
@pass_hub
def renormalize(hub: Hub, source_ids: tuple[str, ...], fmt: str) -> None:
    """Rebuild sources' facts from their stored raw entries with this hub's normalizers (after a
    normalizer fix): new versions only where the result differs; analyst decisions are kept."""
    from ceptoar.pipeline import renormalize as rebuild

    store = hub.ready_store()
    known = {r["id"]: r for r in store.sources.list()}
    unknown = [s for s in source_ids if s not in known]
    if unknown:
        raise click.ClickException(f"no source {', '.join(unknown)} (see `ceptoar sources list`)")
    results = []
    for row in [known[s] for s in source_ids] if source_ids else list(known.values()):
        res = rebuild(store, row, hub.actor, progress_line)
        _warn(res)
        results.append(res)
    emit([r.as_dict() for r in results], fmt, FETCH_COLUMNS, widths={"error": 60})


def _warn(res) -> None:
    """What a fetch skipped or dropped, one line each on stderr (the JSON output has them too)."""
    for w in res.warnings[:50]:
        echo(f"{res.source}: warning: {w}", err=True)
    if len(res.warnings) > 50:
        echo(f"{res.source}: … and {len(res.warnings) - 50} more warnings", err=True)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", "source_id", required=True, help="Source the file comes from (decides the format).")
@format_option(("table", "json"))
@with_limits
@pass_hub
def ingest(hub: Hub, file: Path, source_id: str, fmt: str, timeout: float, max_bytes: int) -> None:
    """Ingest a local file with the normalization of SOURCE's kind."""
    store = hub.ready_store()
    row = store.sources.get(source_id)
    if row is None:
        raise click.ClickException(f"no source {source_id!r} (add it with `ceptoar sources add`)")
    res = ingest_file(store, file, row, _limits(timeout, max_bytes), progress=progress_line)
    _warn(res)
    emit([res.as_dict()], fmt, FETCH_COLUMNS, widths={"error": 60})
    if res.status == "error":
        sys.exit(1)


