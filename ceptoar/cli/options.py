"""Options and argument types shared by the commands: output format, moments in time, SMTP, the
public URL, waiting for a lease, and printing a flash-queue drain."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from ceptoar.clinics.digest.delivery import SmtpConfig, drain_flash_queue
from ceptoar.core import settings
from ceptoar.core.model import JST, moment, stamp
from ceptoar.core.output import echo

__all__ = ["Moment", "UTC_TIME", "JST_TIME", "since_option", "TLP_CHOICES", "with_smtp",
           "smtp_config", "public_url", "WAIT_OPTION", "send_flashes", "send_now", "stamp"]

TLP_CHOICES = ["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]


class Moment(click.ParamType):
    """A date or an ISO 8601 time; without an offset it is read in `zone`. Converts to aware UTC."""

    name = "TIME"

    def __init__(self, zone=UTC):
        self.zone = zone

    def convert(self, value, param, ctx) -> datetime:
        if isinstance(value, datetime):
            return value
        d = moment(value, self.zone)
        if d is None:
            self.fail(f"{value!r} is not a date or time (YYYY-MM-DD or an ISO 8601 time such as "
                      "2026-11-22T09:30+09:00)", param, ctx)
        return d


UTC_TIME = Moment(UTC)
JST_TIME = Moment(JST)


def since_option(help_text: str = "On or after this date or time (UTC unless it carries an offset)."):
    return click.option("--since", type=UTC_TIME, help=help_text)


WAIT_OPTION = click.option("--wait", type=click.FloatRange(min=0), default=0, show_default=True, metavar="SECONDS",
                           help="When another run holds this work, wait up to SECONDS for it (else stop at once).")

smtp_options = [
    click.option("--smtp-host", envvar="CEPTOAR_SMTP_HOST", help="SMTP server (env CEPTOAR_SMTP_HOST)."),
    click.option("--smtp-port", envvar="CEPTOAR_SMTP_PORT", type=int, default=25, show_default=True),
    click.option("--smtp-user", envvar="CEPTOAR_SMTP_USER",
                 help="SMTP login; the password comes from env CEPTOAR_SMTP_PASSWORD only."),
    click.option("--starttls", is_flag=True, envvar="CEPTOAR_SMTP_STARTTLS",
                 help="Upgrade the connection with STARTTLS (env CEPTOAR_SMTP_STARTTLS)."),
    click.option("--rate", type=float, help="At most N messages per second."),
    click.option("--dry-run", is_flag=True, help="Render and count; send nothing, record nothing."),
    click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                 help="Also write each message as DIR/<email>.eml (without --smtp-host: only write)."),
    click.option("--base-url", help="Public URL of the hub's web app, for unsubscribe links "
                                    "(env CEPTOAR_PUBLIC_URL; required to send)."),
]


def with_smtp(f):
    for opt in reversed(smtp_options):
        f = opt(f)
    return f


def smtp_config(host, port, user, starttls) -> SmtpConfig | None:
    """The SMTP server from the options, else from the settings (settings.toml); None: no sending."""
    cfg = settings.current()
    if not host:
        return cfg.smtp()
    return SmtpConfig(host=host, port=port, user=user or cfg.smtp_user, password=cfg.smtp_password,
                      starttls=starttls or cfg.smtp_starttls)


def public_url(value: str | None, sending: bool = False) -> str:
    """Where unsubscribe links point: --base-url, else the setting. A real send without one is
    refused (links to 127.0.0.1 would reach no clinic); previews and dry runs use loopback."""
    url = value or settings.current().public_url
    if url:
        return url.rstrip("/")
    if sending:
        raise click.UsageError("set CEPTOAR_PUBLIC_URL (or public_url in settings.toml, or --base-url): the "
                               "unsubscribe link in every message must reach the hub")
    return "http://127.0.0.1:8000"


def send_flashes(store, actor: str, smtp: SmtpConfig | None, out: Path | None, dry_run: bool, rate: float | None,
                 url: str, wait: float = 0.0, err: bool = False) -> None:
    """Drain the flash queue and say what happened (or why nothing could be sent); `err`: say it
    on stderr (a command whose stdout is its JSON)."""
    from ceptoar.clinics.digest.delivery import pending_alerts

    pending = pending_alerts(store)
    if pending and smtp is None and out is None and not dry_run:
        echo(f"{pending} flash or targeted alert(s) queued: set CEPTOAR_SMTP_HOST (or run `ceptoar digest flash "
             "--smtp-host HOST`) to send them", err=True)
        return
    for res in drain_flash_queue(store, actor, smtp=smtp, out_dir=out, dry_run=dry_run, rate=rate, base_url=url,
                                 wait=wait):
        what = "targeted alert" if res.run.startswith("alert-") else "correction" \
            if res.run.startswith("correction-") else "flash alert"
        echo(f"{what} {res.run}: {res.sent} sent, {res.failed} failed, {res.written} written", err=err)


def send_now(store, actor: str, err: bool = False) -> None:
    """What a command just queued (flash and targeted alerts, corrections) sent at once when SMTP
    is configured; otherwise it waits for the worker or `ceptoar digest flash`, and the command
    says so."""
    from ceptoar.clinics.digest.delivery import pending_alerts
    from ceptoar.core import settings

    if not pending_alerts(store):
        return
    smtp, url = SmtpConfig.from_env(), settings.current().public_url
    if smtp and not url:
        echo("alerts stay queued: set CEPTOAR_PUBLIC_URL so their unsubscribe links reach the hub", err=True)
    else:
        send_flashes(store, actor, smtp, None, False, None, public_url(url), err=err)
