"""Delivery: who gets which digest, SMTP sending, and the delivery log that makes a run resumable.

A run (one per frequency and JST day, or one per flash alert) has a fixed `until`. A recipient is
marked sent (and its digest cursor moved) in the same transaction, right after the SMTP server
accepted the message, so a rerun after a crash sends exactly the rest. Per-recipient SMTP refusals
are recorded and retried by the next run; a server that cannot be reached or drops the connection
stops the run with a clear message.
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ceptoar.digest.render import JST, compose, render
from ceptoar.errors import CeptoarError
from ceptoar.files import child, private_dir, write_private
from ceptoar.leases import held
from ceptoar.mail import eml_name
from ceptoar.output import clean
from ceptoar.model import HUB, TLP_ORDER
from ceptoar.store import Store, utcnow

WINDOW = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
_DOT_RE = re.compile(rb"(?m)^\.")  # SMTP dot-stuffing


class DeliveryError(CeptoarError):
    """The run cannot go on (SMTP server unreachable or gone); one line for the operator."""


@dataclass
class SmtpConfig:
    host: str
    port: int = 25
    user: str | None = None
    password: str | None = None  # from the environment only (CEPTOAR_SMTP_PASSWORD)
    starttls: bool = False
    timeout: float = 30.0

    @classmethod
    def from_env(cls) -> SmtpConfig | None:
        host = os.environ.get("CEPTOAR_SMTP_HOST")
        if not host:
            return None
        return cls(host=host, port=int(os.environ.get("CEPTOAR_SMTP_PORT", "25")),
                   user=os.environ.get("CEPTOAR_SMTP_USER"), password=os.environ.get("CEPTOAR_SMTP_PASSWORD"),
                   starttls=os.environ.get("CEPTOAR_SMTP_STARTTLS") == "1")


@dataclass
class RunResult:
    run: str
    segments: int = 0
    rendered: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0  # already sent by an earlier attempt of this run
    written: int = 0
    empty_segments: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


class Mailer:
    def __init__(self, cfg: SmtpConfig):
        self.cfg = cfg
        self.smtp: smtplib.SMTP | None = None
        self.pipelining = False

    def connect(self) -> None:
        try:
            self.smtp = smtplib.SMTP(self.cfg.host, self.cfg.port, timeout=self.cfg.timeout)
            self.smtp.ehlo()
            if self.cfg.starttls:
                self.smtp.starttls(context=ssl.create_default_context())
                self.smtp.ehlo()
            if self.cfg.user:
                self.smtp.login(self.cfg.user, self.cfg.password or "")
            self.pipelining = self.smtp.has_extn("pipelining") and self.smtp.has_extn("8bitmime")
        except (OSError, smtplib.SMTPException) as e:
            raise DeliveryError(f"cannot use SMTP server {self.cfg.host}:{self.cfg.port}: "
                                f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None

    def send(self, sender: str, to: str, data: bytes) -> str | None:
        """None when accepted; the refusal text for this recipient; DeliveryError when the
        server is gone."""
        try:
            if self.pipelining:
                return self._send_pipelined(sender, to, data)
            self.smtp.sendmail(sender, [to], data, mail_options=["BODY=8BITMIME"])
            return None
        except smtplib.SMTPRecipientsRefused as e:
            code, msg = next(iter(e.recipients.values()))
            return f"{code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
            return f"{e.smtp_code} {e.smtp_error.decode(errors='replace') if isinstance(e.smtp_error, bytes) else e}"
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as e:
            raise DeliveryError(f"SMTP server {self.cfg.host}:{self.cfg.port} went away: {type(e).__name__}: "
                                f"{' '.join(str(e).split())[:200]}") from None

    def _send_pipelined(self, sender: str, to: str, data: bytes) -> str | None:
        """RFC 2920: MAIL, RCPT and DATA in one write, then the message: two round trips, not four."""
        smtp = self.smtp
        smtp.send(f"MAIL FROM:<{sender}> BODY=8BITMIME\r\nRCPT TO:<{to}>\r\nDATA\r\n".encode())
        replies = [smtp.getreply() for _ in range(3)]
        (mail_code, mail_msg), (rcpt_code, rcpt_msg), (data_code, _) = replies
        if data_code == 354 and (mail_code != 250 or rcpt_code not in (250, 251)):
            smtp.send(b".\r\n")  # the server entered DATA anyway: end an empty message
            smtp.getreply()
        if mail_code != 250 or rcpt_code not in (250, 251) or data_code != 354:
            smtp.rset()
            code, msg = (mail_code, mail_msg) if mail_code != 250 else (rcpt_code, rcpt_msg)
            return f"{code} {msg.decode(errors='replace')}"
        body = _DOT_RE.sub(b"..", data)
        smtp.send(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        code, msg = smtp.getreply()
        return None if code == 250 else f"{code} {msg.decode(errors='replace')}"

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass


def _sender() -> str:
    from ceptoar.digest.render import contacts
    value = contacts()["ceptoar"]["from"]
    return value.partition("<")[2].rstrip(">").strip() if "<" in value else value


def member_view(store: Store, member_id: str) -> tuple[list[str], int, str]:
    """(collections the member may read, its clearance rank, its name)."""
    m = store.members.get(member_id)
    if m is None or not m["enabled"]:
        return [], -1, member_id
    readable = [c for c, (r, _w) in store.members.grants_of(member_id).items() if r]
    return readable, TLP_ORDER.index(m["clearance"]), m["name"]


def advisories_for(store: Store, member: str, clearance: str, since: str | None, until: str,
                   ids: list[str] | None = None) -> tuple[list[dict], str]:
    """What a subscriber of `member` at `clearance` receives: each advisory published into a
    collection the member reads, in (since, until], as published (its newest pinned version the
    subscriber may see), at the TLP it is served at; revoked advisories left out. Newest first."""
    collections, member_rank, name = member_view(store, member)
    rank = min(member_rank, TLP_ORDER.index(clearance))
    if rank < 0:
        return [], name
    chosen = store.membership.reports(collections, rank, since, until, ids)
    items = []
    for c in chosen:
        pub = store.publications.get(c["advisory"], c["version"])
        report = store.objects.get(c["advisory"], c["version"], HUB).obj
        items.append(pub.view | {"tlp": TLP_ORDER[c["rank"]], "version": c["version"], "report": report})
    items.sort(key=lambda a: (a["report"].get("published") or "", a["id"]), reverse=True)
    return items, name


def _stamp(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def run_digest(store: Store, frequency: str, *, smtp: SmtpConfig | None, out_dir: Path | None = None,
               dry_run: bool = False, rate: float | None = None, base_url: str = "http://127.0.0.1:8000",
               now: datetime | None = None, progress=None, wait: float = 0.0) -> RunResult:
    now = now or datetime.now(UTC)
    run = store.deliveries.create_run(f"{frequency}-{now.astimezone(JST):%Y-%m-%d}", "digest", frequency, _stamp(now))
    return _deliver(store, run, frequency, None, smtp=smtp, out_dir=out_dir, dry_run=dry_run, rate=rate,
                    base_url=base_url, progress=progress, wait=wait)


def run_flash(store: Store, advisory_id: str, *, smtp: SmtpConfig | None, out_dir: Path | None = None,
              dry_run: bool = False, rate: float | None = None, base_url: str = "http://127.0.0.1:8000",
              progress=None, wait: float = 0.0) -> RunResult:
    run = store.deliveries.create_run(f"flash-{advisory_id.split('--')[-1]}", "flash", None, utcnow(), advisory_id)
    return _deliver(store, run, None, [advisory_id], smtp=smtp, out_dir=out_dir, dry_run=dry_run, rate=rate,
                    base_url=base_url, progress=progress, wait=wait)


def _deliver(store: Store, run: dict, frequency: str | None, ids: list[str] | None, *, smtp, out_dir, dry_run,
             rate, base_url, progress, wait: float) -> RunResult:
    """A run sends only while it holds the run's lease: two runs started together (cron and a
    person) never send the same digest twice."""
    if not smtp or dry_run:
        return _deliver_held(store, run, frequency, ids, None, smtp=None, out_dir=out_dir, dry_run=dry_run,
                             rate=rate, base_url=base_url, progress=progress)
    with held(store, f"digest:{run['id']}", f"digest run {run['id']}", wait) as lease:
        return _deliver_held(store, run, frequency, ids, lease, smtp=smtp, out_dir=out_dir, dry_run=dry_run,
                             rate=rate, base_url=base_url, progress=progress)


def _deliver_held(store: Store, run: dict, frequency: str | None, ids: list[str] | None, lease, *, smtp, out_dir,
                  dry_run, rate, base_url, progress) -> RunResult:
    result = RunResult(run=run["id"])
    until = run["until"]
    periods = store.deliveries.active_alert_periods(until)
    mailer = None
    if out_dir is not None:
        private_dir(out_dir)
    if smtp and not dry_run:
        mailer = Mailer(smtp)
        mailer.connect()  # a dead server stops the run before anything is marked
    sender = _sender()
    interval = 1.0 / rate if rate else 0.0
    next_slot = time.monotonic()
    try:
        for seg in store.subscribers.segments(frequency):
            since = seg["since"] or (_stamp(datetime.fromisoformat(until.replace("Z", "+00:00")) - WINDOW[frequency])
                                     if frequency else None)
            advisories, member_name = advisories_for(store, seg["member"], seg["clearance"], since, until, ids)
            result.segments += 1
            if not advisories:
                result.empty_segments += 1  # empty digests are not sent
                continue
            rendered = render(store, advisories, lang=seg["lang"], member_name=member_name, until=until,
                              periods=periods, kind="flash" if ids else "digest")
            result.rendered += 1
            after = ""
            while True:
                batch = store.subscribers.recipients(frequency, seg["member"], seg["clearance"], seg["lang"],
                                                 seg["since"], after)
                if not batch:
                    break
                after = batch[-1]["email"]
                states = store.deliveries.states(run["id"], [r["email"] for r in batch])
                for r in batch:
                    if lease is not None:
                        lease.keep()
                    if states.get(r["email"], {}).get("status") == "sent":
                        result.skipped += 1
                        continue
                    url = f"{base_url.rstrip('/')}/unsubscribe/{r['token']}"
                    try:  # an address stored before addresses were checked fails alone
                        data = compose(rendered, run_id=run["id"], email=r["email"], name=r["name"] or "",
                                       unsubscribe_url=url)
                        if out_dir is not None:
                            write_private(child(out_dir, eml_name(r["email"])), data)
                            result.written += 1
                    except (CeptoarError, ValueError) as e:
                        result.failed += 1
                        result.errors.append(f"{clean(r['email'])}: {clean(str(e))}")
                        if mailer is not None and not dry_run:
                            store.deliveries.record(run["id"], r["email"], "failed", None, error=str(e)[:300])
                        continue
                    if mailer is None:
                        continue
                    if interval:
                        delay = next_slot - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        next_slot = max(next_slot, time.monotonic()) + interval
                    refusal = mailer.send(sender, r["email"], data)
                    mid = data.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
                    if refusal is None:
                        store.deliveries.record(run["id"], r["email"], "sent", mid, frequency=frequency, until=until)
                        result.sent += 1
                    else:
                        store.deliveries.record(run["id"], r["email"], "failed", mid, error=refusal)
                        result.failed += 1
                        result.errors.append(f"{r['email']}: {refusal}")
                    if progress and (result.sent + result.failed) % 1000 == 0:
                        progress(f"{run['id']}: {result.sent} sent, {result.failed} failed")
    finally:
        if mailer:
            mailer.close()
    if mailer and result.failed == 0:
        store.deliveries.finish_run(run["id"])
    return result
