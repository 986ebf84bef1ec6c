"""Collections: the TAXII collections and their filters."""

from __future__ import annotations

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.core.output import echo, emit, format_option, to_json
from ceptoar.publishing import collections as colls

COLLECTION_COLUMNS = ["id", "uuid", "title", "filter", "advisories", "objects"]


# --- collections ----------------------------------------------------------------------------

@main.group()
def collections() -> None:
    """Saved filters over published advisories (what TAXII members subscribe to)."""


@collections.command("add")
@click.argument("collection_id")
@click.option("--title", required=True)
@click.option("--description")
@click.option("--filter", "filter_text", required=True,
              help="e.g. 'medical and tlp <= GREEN', '(severity >= high or cvss >= 7) and not tag = noise'")
@pass_hub
def collections_add(hub: Hub, collection_id: str, title: str, description: str | None, filter_text: str) -> None:
    """Add a collection; published advisories that match enter it now."""
    c, placed = colls.add(hub.ready_store(), collection_id, title, filter_text, description, hub.actor)
    echo(f"added collection {collection_id} ({c['uuid']}); {placed} published advisories entered it")


@collections.command("list")
@format_option()
@pass_hub
def collections_list(hub: Hub, fmt: str) -> None:
    """List collections with their size."""
    emit(hub.ready_store().collections.list(), fmt, COLLECTION_COLUMNS, widths={"title": 30, "filter": 40})


@collections.command("show")
@click.argument("collection_id")
@format_option(("json", "table"), default="json")
@pass_hub
def collections_show(hub: Hub, collection_id: str, fmt: str) -> None:
    """Show one collection (by id or UUID)."""
    store = hub.ready_store()
    found = store.collections.list(collection_id)
    if not found:
        raise click.ClickException(f"no collection {collection_id!r}")
    c = found[0]
    if fmt == "json":
        echo(to_json(c))
    else:
        emit([c], fmt, COLLECTION_COLUMNS)


@collections.command("remove")
@click.argument("collection_id")
@pass_hub
def collections_remove(hub: Hub, collection_id: str) -> None:
    """Remove a collection and its membership (the advisories stay)."""
    colls.remove(hub.ready_store(), collection_id, hub.actor)
    echo(f"removed collection {collection_id}")


