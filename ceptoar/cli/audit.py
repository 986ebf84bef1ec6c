"""Audit: reading the append-only log, and pruning it (archived first)."""

from __future__ import annotations

from pathlib import Path

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.cli.options import UTC_TIME, since_option, stamp
from ceptoar.core.output import echo, emit, format_option

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




@audit.command("prune")
@click.option("--before", required=True, type=UTC_TIME, help="Remove entries older than this (UTC unless an offset).")
@click.option("--archive", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the archive (default: audit-archive/ in the configuration folder).")
@pass_hub
def audit_prune(hub: Hub, before, folder: Path | None) -> None:
    """Remove old entries, each written to an archive file first (JSON lines); the log is otherwise
    append-only. The pruning itself is audited."""
    from ceptoar.core import settings
    from ceptoar.ops.worker import prune_audit

    folder = folder or settings.current().config_dir / "audit-archive"
    n = prune_audit(hub.ready_store(), before, folder, hub.actor)
    echo(f"pruned {n} audit entries older than {stamp(before)} (archived in {folder})")
