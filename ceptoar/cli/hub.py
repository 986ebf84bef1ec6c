"""Init, migrate-store and demo: the hub as a whole."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.output import echo, progress_line
from ceptoar.store import Store


@main.command()
@click.option("--sources", "sources_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Feed catalogue to load [default: feeds/sources.toml].")
@click.option("--collections", "collections_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Default collections [default: taxii_server/collections.toml].")
@pass_hub
def init(hub: Hub, sources_path: Path | None, collections_path: Path | None) -> None:
    """Create or upgrade the database and load the feed catalogue (idempotent)."""
    from ceptoar import setup

    store = hub.store
    r = setup.init(store, sources_path, collections_path, hub.actor)
    if r.upgraded_from is not None:
        echo(f"upgraded the database from schema {r.upgraded_from} to {r.version}"
             + (f" (a copy of the old one: {r.backup})" if r.backup else ""), err=True)
    if r.sources_kept:
        echo(f"kept as redefined with `sources add`: {', '.join(r.sources_kept)}", err=True)
    echo(f"database {store.where} ready (schema {r.version}); {r.sources} sources from {r.sources_path} "
         f"({r.sources_new} new, {r.sources - r.sources_new - len(r.sources_kept)} updated); {r.collections} "
         f"collections from {r.collections_path} ({r.collections_new} new)")


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
    from ceptoar.demo import run_demo

    sys.exit(run_demo(demo_db, port=port, fresh=fresh))


if __name__ == "__main__":
    main()

