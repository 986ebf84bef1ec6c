"""Subscribers and unsubscribe: the clinics' mail addresses."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.core.output import echo, emit, format_option

# --- subscribers, digests, alert periods ------------------------------------------------------

SUBSCRIBER_COLUMNS = ["email", "name", "member", "frequency", "clearance", "lang", "facility", "unsubscribed"]


@main.group()
def subscribers() -> None:
    """Clinic staff who receive digests by e-mail."""


@subscribers.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_hub
def subscribers_import(hub: Hub, file: Path) -> None:
    """Import a CSV (email,name,member,frequency,clearance,lang); re-import updates by e-mail."""
    from ceptoar.clinics.digest import subscribers as subs
    store = hub.ready_store()
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise click.ClickException(f"{file} is not UTF-8 (byte {e.start}): save the CSV as UTF-8") from None
    res = subs.import_csv(store, text, hub.actor, str(file))
    for line, message in res.errors:
        echo(f"{file}:{line}: {message}", err=True)
    echo(f"{res.added} added, {res.updated} updated, {res.skipped_unsubscribed} skipped: unsubscribed, "
               f"{len(res.errors)} rejected")
    if res.errors:
        sys.exit(1)


@subscribers.command("add")
@click.argument("email")
@click.option("--member", required=True)
@click.option("--name", default="")
@click.option("--frequency", type=click.Choice(["daily", "weekly"]), default="daily", show_default=True)
@click.option("--clearance", default="CLEAR", show_default=True)
@click.option("--lang", type=click.Choice(["ja", "en"]), default="ja", show_default=True)
@click.option("--facility", help="The facility (of the member) whose register this subscriber's digest is matched to.")
@pass_hub
def subscribers_add(hub: Hub, email, member, name, frequency, clearance, lang, facility) -> None:
    """Add (or update) one subscriber."""
    from ceptoar.clinics.digest import subscribers as subs
    store = hub.ready_store()
    outcome = subs.add(store, {"email": email, "member": member, "name": name, "frequency": frequency,
                               "clearance": clearance, "lang": lang, "facility": facility}, hub.actor)
    if outcome == "unsubscribed":
        echo(f"1 skipped: unsubscribed ({email.lower()} opted out; `ceptoar subscribers resubscribe` "
                   "only on their own request)")
        return
    echo(f"{outcome} {email.lower()}")


@subscribers.command("resubscribe")
@click.argument("email")
@click.option("--reason", required=True, help="The subscriber's request (who asked, when, how).")
@pass_hub
def subscribers_resubscribe(hub: Hub, email: str, reason: str) -> None:
    """Undo an opt-out, on the subscriber's own request (audited)."""
    from ceptoar.clinics.digest import subscribers as subs
    subs.resubscribe(hub.ready_store(), email, hub.actor, reason)
    echo(f"resubscribed {email.strip().lower()}")


@subscribers.command("list")
@click.option("--member")
@format_option()
@pass_hub
def subscribers_list(hub: Hub, member: str | None, fmt: str) -> None:
    """List subscribers (never their unsubscribe tokens)."""
    rows = [{k: v for k, v in r.items() if k != "token"} for r in hub.ready_store().subscribers.list(member)]
    emit(rows, fmt, SUBSCRIBER_COLUMNS)


@subscribers.command("remove")
@click.argument("email")
@pass_hub
def subscribers_remove(hub: Hub, email: str) -> None:
    """Remove a subscriber."""
    from ceptoar.clinics.digest import subscribers as subs
    echo(f"removed {subs.remove(hub.ready_store(), email, hub.actor)}")


@main.command()
@click.argument("token")
@pass_hub
def unsubscribe(hub: Hub, token: str) -> None:
    """Stop the digests of the subscriber with this unsubscribe token."""
    from ceptoar.clinics.digest import subscribers as subs
    echo(f"unsubscribed {subs.unsubscribe(hub.ready_store(), token, hub.actor, 'cli')}")


