"""The hub as a whole: init, migrate-store, run (the worker), status, backup, restore, demo."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.core.output import echo, format_option, progress_line
from ceptoar.store import Store


@main.command()
@click.option("--sources", "sources_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Feed catalogue to load [default: feeds/sources.toml].")
@click.option("--collections", "collections_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Default collections [default: taxii_server/collections.toml].")
@pass_hub
def init(hub: Hub, sources_path: Path | None, collections_path: Path | None) -> None:
    """Create or upgrade the database and load the feed catalogue (idempotent)."""
    from ceptoar.ops import setup

    store = hub.store
    r = setup.init(store, sources_path, collections_path, hub.actor)
    if r.upgraded_from is not None:
        echo(f"upgraded the database from schema {r.upgraded_from} to {r.version}"
             + (f" (a copy of the old one: {r.backup})" if r.backup else ""), err=True)
    if r.config_made:
        echo(f"configuration folder {r.config_dir}: wrote {', '.join(p.name for p in r.config_made)} from the "
             "examples; edit them there (see docs/operator.md, \"Configuration\")", err=True)
    if r.sources_kept:
        echo(f"kept as redefined with `sources add`: {', '.join(r.sources_kept)}", err=True)
    echo(f"database {store.where} ready (schema {r.version}); {r.sources} sources from {r.sources_path} "
         f"({r.sources_new} new, {r.sources - r.sources_new - len(r.sources_kept)} updated); {r.collections} "
         f"collections from {r.collections_path} ({r.collections_new} new)")


@main.command()
@click.option("--every", type=click.FloatRange(min=1), default=30, show_default=True, metavar="SECONDS",
              help="How often to look for work.")
@click.option("--once", is_flag=True, help="One round of work, then exit (for testing a configuration).")
@pass_hub
def run(hub: Hub, every: float, once: bool) -> None:
    """Run the hub by itself: fetch sources when due, send digests at their JST times, drain flash
    alerts, watch feed health (operator mail), prune the audit log. Stops cleanly on SIGTERM."""
    from ceptoar.core import settings
    from ceptoar.ops.worker import Worker

    store = hub.ready_store()
    Worker(store, settings.current(), actor=hub.actor if hub.actor != "root" else "worker",
           log=lambda line: echo(line, err=True)).run(every=every, once=once)


@main.command()
@format_option(("table", "json"))
@pass_hub
def status(hub: Hub, fmt: str) -> None:
    """The hub's health for a person or a monitor: sources, queues, digests, database and WAL size,
    last backup. Exit status 0 when all is well, 1 with warnings, 2 when the hub cannot work."""
    from ceptoar.core.output import emit, to_json
    from ceptoar.ops import operations

    st = operations.status(hub.store)
    if fmt == "json":
        echo(to_json({"level": ["ok", "warning", "critical"][st.level], "problems": st.problems, **st.facts,
                      "sources": st.sources}))
    else:
        for key, value in st.facts.items():
            echo(f"{key:15} {value}")
        echo("")
        emit(st.sources, "table", ["id", "enabled", "health", "failures", "last_success", "last_new", "next_due"])
        for p in st.problems:
            echo(f"{'CRITICAL' if st.level == 2 else 'WARNING'}: {p}", err=True)
    sys.exit(st.level)


@main.command()
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@pass_hub
def backup(hub: Hub, target: Path) -> None:
    """Copy the (SQLite) database to TARGET while the hub runs, consistently; checked, private."""
    from ceptoar.ops import operations

    path = operations.backup(hub.ready_store(), target, hub.actor)
    echo(f"backed up {hub.store.where} to {path} ({path.stat().st_size:,} bytes)")


@main.command()
@click.argument("backup_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Restore even though the hub looks in use.")
@pass_hub
def restore(hub: Hub, backup_file: Path, force: bool) -> None:
    """Put a backup in place of the (SQLite) database; the one it replaces is kept beside it."""
    from ceptoar.core.dburl import is_url, sqlite_path
    from ceptoar.ops import operations

    if is_url(hub.db_path) and not hub.db_path.startswith("sqlite:"):
        raise click.ClickException("restore puts back SQLite backups; for PostgreSQL use pg_restore")
    kept = operations.restore(sqlite_path(hub.db_path), backup_file, force, hub.actor)
    echo(f"restored {backup_file} into {hub.db_path}" + (f" (the previous database: {kept})" if kept else "")
         + "; run `ceptoar init` if the backup is from an older hub")


@main.command("migrate-store")
@click.argument("source_db")
@click.argument("target_db")
@pass_hub
def migrate_store(hub: Hub, source_db: str, target_db: str) -> None:
    """Copy a whole hub to another database (e.g. a SQLite file to postgresql://…) and verify it.

    The target must be new or empty; the source is only read. Counts of every table are compared."""
    from ceptoar.store.copy import copy_store

    src, dst = Store(source_db), Store(target_db)
    try:
        def progress(table: str, n: int) -> None:
            if n % 50_000 == 0:
                progress_line(f"{table}: {n:,} rows…")

        counts = copy_store(src, dst, progress, hub.actor)
        for table, n in counts.items():
            echo(f"{table:15} {n:>10,}")
        echo(f"copied {sum(counts.values()):,} rows from {src.where} to {dst.where}; every table's count matches")
    finally:
        src.close()
        dst.close()


# --- demo -------------------------------------------------------------------------------------

@main.command()
@click.option("--port", type=int, default=0, help="Loopback port for the sample feeds (0: any free port).")
@click.option("--demo-db", type=click.Path(dir_okay=False, path_type=Path), default=Path("exports/demo.db"),
              show_default=True, help="The demo's own database (never the --db one).")
@click.option("--fresh/--keep", default=True, show_default=True, help="Start from an empty demo database.")
def demo(port: int, demo_db: Path, fresh: bool) -> None:
    """Offline demo: serve the sample feeds on loopback and run the whole pipeline on them."""
    from ceptoar.ops.demo import run_demo

    sys.exit(run_demo(demo_db, port=port, fresh=fresh))


if __name__ == "__main__":
    main()

