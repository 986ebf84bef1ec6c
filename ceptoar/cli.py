"""The command line: parse arguments, call one function, print. No SQL here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ceptoar import catalogue
from ceptoar.catalogue import CatalogueError
from ceptoar.model import parse_date, stix_time
from ceptoar.normalize import FeedError
from ceptoar.output import emit, format_option, progress_line
from ceptoar.paths import project_file
from ceptoar.pipeline import KINDS, Limits, fetch_source, ingest_file
from ceptoar.sources.http import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT
from ceptoar.store import Store, StoreError

SOURCE_COLUMNS = ["id", "kind", "enabled", "tlp", "last_fetched", "last_status", "last_error", "url"]
ADVISORY_COLUMNS = ["id", "source", "published", "tlp", "status", "cves", "cvss", "tags", "title"]
ADVISORY_FIELDS = ["id", "title", "source", "published", "modified", "stix_modified", "url", "identifiers",
                   "cves", "cvss", "cpes", "tlp", "tags", "status", "lang", "medical_signals", "first_seen"]


class HubGroup(click.Group):
    """Turns expected failures into one line on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (StoreError, CatalogueError, FeedError, ValueError) as e:
            raise click.ClickException(str(e)) from None


class Hub:
    def __init__(self, db_path: str):
        self.db_path = db_path
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.db_path)
        return self._store

    def ready_store(self) -> Store:
        self.store.require_initialized()
        return self.store


pass_hub = click.make_pass_decorator(Hub)


@click.group(cls=HubGroup)
@click.option("--db", "db_path", envvar="CEPTOAR_DB", default="ceptoar.db", show_default=True,
              type=click.Path(dir_okay=False), help="SQLite database (env CEPTOAR_DB).")
@click.version_option(package_name="ceptoar")
@click.pass_context
def main(ctx: click.Context, db_path: str) -> None:
    """CEPTOAR hub (医療セプター): ingest, triage and share security advisories."""
    ctx.obj = Hub(db_path)


@main.command()
@click.option("--sources", "sources_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Feed catalogue to load [default: feeds/sources.toml].")
@pass_hub
def init(hub: Hub, sources_path: Path | None) -> None:
    """Create or upgrade the database and load the feed catalogue (idempotent)."""
    path = sources_path or project_file("feeds/sources.toml")
    defs = catalogue.load(path)
    version = hub.store.migrate()
    added = sum(hub.store.upsert_source(d | {"origin": "catalogue"}) for d in defs)
    click.echo(f"database {hub.db_path} ready (schema {version}); {len(defs)} sources from {path} "
               f"({added} new, {len(defs) - added} updated)")


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
                                   "last_fetched", "last_status", "last_error")}
            for r in hub.ready_store().list_sources()]
    emit(rows, fmt, SOURCE_COLUMNS, widths={"last_error": 40, "url": 60})


@sources.command("add")
@click.argument("source_id")
@click.argument("url")
@click.option("--kind", required=True, type=click.Choice(sorted(KINDS)))
@click.option("--name")
@click.option("--tlp", default="CLEAR", show_default=True)
@click.option("--lang", default="ja", show_default=True)
@click.option("--interval", type=int, default=3600, show_default=True)
@pass_hub
def sources_add(hub: Hub, source_id: str, url: str, kind: str, name: str | None, tlp: str, lang: str,
                interval: int) -> None:
    """Add a source (or redefine one added before)."""
    store = hub.ready_store()
    d = catalogue.check_source({"id": source_id, "url": url, "kind": kind, "name": name, "tlp": tlp,
                                "lang": lang, "interval": interval})
    new = store.upsert_source(d | {"origin": "cli"}, keep_enabled=False)
    click.echo(f"{'added' if new else 'updated'} source {d['id']} ({kind}, TLP:{d['tlp']})")


def _set_enabled(hub: Hub, source_id: str, enabled: bool) -> None:
    if not hub.ready_store().set_source_enabled(source_id, enabled):
        raise click.ClickException(f"no source {source_id!r} (see `ceptoar sources list`)")
    click.echo(f"{'enabled' if enabled else 'disabled'} {source_id}")


@sources.command("disable")
@click.argument("source_id")
@pass_hub
def sources_disable(hub: Hub, source_id: str) -> None:
    """Stop fetching a source (its advisories stay)."""
    _set_enabled(hub, source_id, False)


@sources.command("enable")
@click.argument("source_id")
@pass_hub
def sources_enable(hub: Hub, source_id: str) -> None:
    """Fetch a source again."""
    _set_enabled(hub, source_id, True)


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


FETCH_COLUMNS = ["source", "status", "new", "updated", "unchanged", "error"]


@main.command()
@click.argument("source_ids", nargs=-1)
@format_option(("table", "json"))
@with_limits
@pass_hub
def fetch(hub: Hub, source_ids: tuple[str, ...], fmt: str, timeout: float, max_bytes: int) -> None:
    """Fetch the enabled sources (or those named) and ingest what changed.

    Exit status 0 when every source succeeded, 1 when any failed; the others are ingested anyway.
    """
    store = hub.ready_store()
    known = {r["id"]: r for r in store.list_sources()}
    unknown = [s for s in source_ids if s not in known]
    if unknown:
        raise click.ClickException(f"no source {', '.join(unknown)} (see `ceptoar sources list`)")
    rows = [known[s] for s in source_ids] if source_ids else [r for r in known.values() if r["enabled"]]
    results = []
    for i, row in enumerate(rows, 1):
        progress_line(f"[{i}/{len(rows)}] {row['id']}: fetching {row['url']}")
        res = fetch_source(store, row, _limits(timeout, max_bytes), progress=progress_line)
        detail = res.error or f"{res.new} new, {res.updated} updated, {res.unchanged} unchanged"
        progress_line(f"[{i}/{len(rows)}] {row['id']}: {res.status}: {detail}" + (f" ({res.note})" if res.note else ""))
        results.append(res)
    emit([r.as_dict() for r in results], fmt, FETCH_COLUMNS, widths={"error": 60})
    if any(r.status == "error" for r in results):
        sys.exit(1)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", "source_id", required=True, help="Source the file comes from (decides the format).")
@format_option(("table", "json"))
@with_limits
@pass_hub
def ingest(hub: Hub, file: Path, source_id: str, fmt: str, timeout: float, max_bytes: int) -> None:
    """Ingest a local file with the normalization of SOURCE's kind."""
    store = hub.ready_store()
    row = store.get_source(source_id)
    if row is None:
        raise click.ClickException(f"no source {source_id!r} (add it with `ceptoar sources add`)")
    res = ingest_file(store, file, row, _limits(timeout, max_bytes), progress=progress_line)
    emit([res.as_dict()], fmt, FETCH_COLUMNS, widths={"error": 60})
    if res.status == "error":
        sys.exit(1)


# --- advisories -------------------------------------------------------------------------------

@main.group()
def advisories() -> None:
    """Read back normalized advisories."""


def _advisory_json(row: dict) -> dict:
    return {k: row.get(k) for k in ADVISORY_FIELDS}


@advisories.command("list")
@format_option()
@click.option("--source", "source_id")
@click.option("--cve")
@click.option("--since", help="Published on or after this date (YYYY-MM-DD or ISO timestamp).")
@click.option("--tag")
@click.option("--limit", type=click.IntRange(min=1), default=None)
@pass_hub
def advisories_list(hub: Hub, fmt: str, source_id: str | None, cve: str | None, since: str | None,
                    tag: str | None, limit: int | None) -> None:
    """List advisories, newest first."""
    since_utc = None
    if since:
        d = parse_date(since)
        if d is None:
            raise click.BadParameter(f"{since!r} is not a date (use YYYY-MM-DD)", param_hint="--since")
        since_utc = stix_time(d)
    rows = hub.ready_store().list_advisories(source=source_id, cve=cve, since=since_utc, tag=tag, limit=limit)
    emit([_advisory_json(r) for r in rows], fmt, ADVISORY_COLUMNS,
         widths={"title": 50, "cves": 30, "cvss": 20, "tags": 24, "published": 25})


@advisories.command("show")
@click.argument("advisory_id")
@format_option(("json", "stix"), default="json")
@pass_hub
def advisories_show(hub: Hub, advisory_id: str, fmt: str) -> None:
    """Show one advisory (full STIX id or a unique UUID prefix of 6+ characters)."""
    from ceptoar.export import report_bundle

    store = hub.ready_store()
    row = store.find_advisory(advisory_id)
    if fmt == "stix":
        click.echo(json.dumps(report_bundle(store, row["id"]), ensure_ascii=False, indent=2))
        return
    out = _advisory_json(row) | {"description": row.get("description"),
                                 "versions": [v["modified"] for v in store.object_versions(row["id"])]}
    click.echo(json.dumps(out, ensure_ascii=False, indent=2))


# --- demo -------------------------------------------------------------------------------------

@main.command()
@click.option("--port", type=int, default=0, help="Loopback port for the sample feeds (0: any free port).")
@click.option("--demo-db", type=click.Path(dir_okay=False, path_type=Path), default=Path("exports/demo.db"),
              show_default=True, help="The demo's own database (never the --db one).")
@click.option("--fresh/--keep", default=True, show_default=True, help="Start from an empty demo database.")
def demo(port: int, demo_db: Path, fresh: bool) -> None:
    """Offline demo: serve the sample feeds on loopback and run the whole pipeline on them."""
    from ceptoar.demo import run_demo

    sys.exit(run_demo(demo_db, port=port, fresh=fresh))


if __name__ == "__main__":
    main()

