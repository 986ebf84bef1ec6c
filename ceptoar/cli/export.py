"""Export: bundles and CSV for people and tools outside TAXII."""

from __future__ import annotations

from pathlib import Path

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.cli.options import TLP_CHOICES, since_option, stamp
from ceptoar.core.files import write_private
from ceptoar.core.output import echo

# --- exports ----------------------------------------------------------------------------------

@main.group()
def export() -> None:
    """STIX bundles and CSV of published advisories."""


export_options = [
    click.option("--collection", "collection_id", help="Only advisories placed in this collection."),
    since_option("Published (or revoked) on or after this date or time (UTC unless it carries an offset)."),
    click.option("--status", type=click.Choice(["published", "revoked", "all"]),
                 help="Live publications, revocations, or both [default: all for bundles, so consumers "
                      "apply revocations; published for CSV]."),
    click.option("--clearance", type=click.Choice(TLP_CHOICES, case_sensitive=False),
                 help="Only what a reader with this TLP clearance may receive."),
    click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File (default: stdout)."),
]


def with_export_options(f):
    for opt in reversed(export_options):
        f = opt(f)
    return f


@export.command("bundle")
@with_export_options
@pass_hub
def export_bundle(hub: Hub, collection_id, since, status, clearance, output) -> None:
    """A STIX 2.1 bundle of what was published: each advisory's latest publication (a revocation for
    a revoked one) and exactly the object versions pinned with it."""
    from ceptoar.sharing.export import bundle_export
    text, n = bundle_export(hub.ready_store(), hub.actor, collection=collection_id,
                            since=stamp(since) if since else None, status=status or "all", clearance=clearance,
                            target=str(output or "-"))
    _write_export(output, text, n)


@export.command("csv")
@with_export_options
@click.option("--bom", is_flag=True, help="Start with a UTF-8 byte order mark (for Excel).")
@pass_hub
def export_csv(hub: Hub, collection_id, since, status, clearance, output, bom) -> None:
    """One line per published advisory, as published (the same publications as `export bundle`).
    Cells a spreadsheet would evaluate as a formula start with an apostrophe."""
    from ceptoar.sharing.export import csv_export
    text, n = csv_export(hub.ready_store(), hub.actor, collection=collection_id,
                         since=stamp(since) if since else None, status=status or "published", clearance=clearance,
                         bom=bom, target=str(output or "-"))
    _write_export(output, text, n)


def _write_export(output: Path | None, text: str, n: int) -> None:
    if output:
        write_private(output, text)
        echo(f"wrote {n} advisories to {output} (readable by you only)", err=True)
    else:
        echo(text, nl=not text.endswith("\n"))


@export.command("vex")
@click.option("--vendor", "vendor_id", required=True)
@click.option("--advisory", help="Only this advisory's answers.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File (default: stdout).")
@pass_hub
def export_vex(hub: Hub, vendor_id, advisory, output) -> None:
    """A CSAF 2.0 VEX document of a maintenance vendor's answers (products and versions, no facilities)."""
    from ceptoar.core.output import to_json
    from ceptoar.sharing.vex import vex
    store = hub.ready_store()
    doc, n = vex(store, vendor_id, store.advisories.find(advisory)["id"] if advisory else None, hub.actor)
    text = to_json(doc) + "\n"
    if output:
        write_private(output, text)
        echo(f"wrote {n} answers to {output} (readable by you only)", err=True)
    else:
        echo(text, nl=False)
