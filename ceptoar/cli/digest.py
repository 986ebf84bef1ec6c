"""Digest and alert-periods: mail to clinics."""

from __future__ import annotations

import sys

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.cli.options import (
    JST_TIME,
    WAIT_OPTION,
    public_url,
    send_flashes,
    smtp_config,
    with_smtp,
)
from ceptoar.clinics.digest.delivery import DeliveryError, run_digest
from ceptoar.core.output import echo, emit, format_option, progress_line


@main.group()
def digest() -> None:
    """Digest e-mails and flash alerts for member clinics."""


@digest.command("preview")
@click.option("--member", required=True)
@click.option("--frequency", type=click.Choice(["daily", "weekly"]), default="daily", show_default=True)
@click.option("--clearance", default="CLEAR", show_default=True)
@click.option("--lang", type=click.Choice(["ja", "en"]), default="ja", show_default=True)
@click.option("--html", "as_html", is_flag=True, help="Print the HTML part instead of the text part.")
@pass_hub
def digest_preview(hub: Hub, member, frequency, clearance, lang, as_html) -> None:
    """Print what a subscriber of MEMBER would get now."""
    from ceptoar.clinics.digest.delivery import preview
    from ceptoar.core.model import tlp_name

    r = preview(hub.ready_store(), member, frequency, tlp_name(clearance), lang)
    if r is None:
        echo(f"(nothing published for {member} in the last {frequency} period: no digest would be sent)", err=True)
        return
    echo(f"Subject: {r.subject}\n")
    echo(r.html if as_html else r.text)


@digest.command("send")
@click.option("--frequency", type=click.Choice(["daily", "weekly"]), required=True)
@with_smtp
@WAIT_OPTION
@format_option(("table", "json"))
@pass_hub
def digest_send(hub: Hub, frequency, smtp_host, smtp_port, smtp_user, starttls, rate, dry_run, out, base_url,
                wait, fmt) -> None:
    """Send the daily or weekly digest (resumable: a rerun sends only the rest; one run at a time)."""
    store = hub.ready_store()
    smtp = smtp_config(smtp_host, smtp_port, smtp_user, starttls)
    link_base = public_url(base_url, sending=bool(smtp and not dry_run))
    if smtp is None and out is None and not dry_run:
        raise click.UsageError("give --smtp-host (or env CEPTOAR_SMTP_HOST), --out DIR, or --dry-run")
    try:
        res = run_digest(store, frequency, smtp=smtp, out_dir=out, dry_run=dry_run, rate=rate,
                         base_url=link_base, progress=progress_line, wait=wait, actor=hub.actor)
    except DeliveryError as e:
        raise click.ClickException(f"{e} — nothing was marked sent for the rest; rerun to continue") from None
    for err in res.errors[:20]:
        echo(f"refused: {err}", err=True)
    emit([{k: v for k, v in res.as_dict().items() if k != "errors"}], fmt,
         ["run", "segments", "rendered", "sent", "failed", "skipped", "written", "empty_segments"])
    if res.failed:
        sys.exit(1)


@digest.command("flash")
@with_smtp
@WAIT_OPTION
@pass_hub
def digest_flash(hub: Hub, smtp_host, smtp_port, smtp_user, starttls, rate, dry_run, out, base_url, wait) -> None:
    """Send the queued flash alerts and targeted alerts (normally sent at once when an advisory is
    published or a register imported)."""
    store = hub.ready_store()
    smtp = smtp_config(smtp_host, smtp_port, smtp_user, starttls)
    link_base = public_url(base_url, sending=bool(smtp and not dry_run))
    from ceptoar.clinics.digest.delivery import pending_alerts

    if not pending_alerts(store):
        echo("no flash or targeted alerts queued")
        return
    try:
        send_flashes(hub.store, hub.actor, smtp, out, dry_run, rate, link_base, wait)
    except DeliveryError as e:
        raise click.ClickException(f"{e} — rerun to continue") from None


@main.group("alert-periods")
def alert_periods() -> None:
    """Periods of heightened vigilance (summits, state visits): flash alerts and digest notices."""


@alert_periods.command("add")
@click.argument("name")
@click.option("--start", required=True, type=JST_TIME, help="Date and time (JST unless an offset is given).")
@click.option("--end", required=True, type=JST_TIME, help="Date and time (JST unless an offset is given).")
@click.option("--note")
@pass_hub
def alert_periods_add(hub: Hub, name: str, start: str, end: str, note: str | None) -> None:
    """Add (or redefine) an alert period."""
    from ceptoar.clinics.digest.delivery import add_alert_period
    if end <= start:
        raise click.BadParameter("the end must be after the start", param_hint="--end")
    s, e = add_alert_period(hub.ready_store(), name, start, end, note, hub.actor)
    echo(f"alert period {name}: {s} – {e} (UTC)")


@alert_periods.command("list")
@format_option()
@pass_hub
def alert_periods_list(hub: Hub, fmt: str) -> None:
    """List alert periods."""
    emit(hub.ready_store().deliveries.alert_periods(), fmt, ["name", "start", "end", "note"])


