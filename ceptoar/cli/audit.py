"""Audit: reading the append-only log."""

from __future__ import annotations

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.cli.options import since_option, stamp
from ceptoar.output import emit, format_option

AUDIT_COLUMNS = ["time", "actor", "action", "target", "details", "member", "http_status"]


# --- audit ----------------------------------------------------------------------------------

@main.group()
def audit() -> None:
    """The append-only audit log of analyst actions and TAXII requests."""


@audit.command("list")
@since_option()
@click.option("--actor")
@click.option("--action")
@click.option("--member")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="The newest N entries.")
@format_option()
@pass_hub
def audit_list(hub: Hub, since, actor, action, member, limit, fmt: str) -> None:
    """List audit entries, oldest first."""
    rows = hub.ready_store().audit.list(since=stamp(since) if since else None, actor=actor, action=action,
                                        member=member, limit=limit)
    emit(rows, fmt, AUDIT_COLUMNS, widths={"details": 60, "target": 30})


