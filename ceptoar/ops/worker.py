"""`ceptoar run`: the hub running by itself.

One process (one at a time, by a lease in the database) that, on every tick:
- fetches each enabled source whose time has come (its `interval`, with jitter; after a failure it
  backs off, doubling up to a day),
- sends the daily and weekly digests at their JST times (once a day / week: a run is resumable and
  idempotent), and drains the flash queue,
- watches feed health (failing N times in a row, or quiet for longer than its own history says it
  should be) and mails the operator on each change, and when a source recovers,
- prunes the audit log past its retention (archiving first), once a day,
- checkpoints SQLite's WAL after large ingests.

SIGTERM or SIGINT stop it between two pieces of work: the source being fetched is finished (its
transaction committed or rolled back as a whole), never left half-done. The clock is injected, so
the tests drive it through days in milliseconds.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ceptoar.clinics.digest.delivery import DeliveryError, drain_flash_queue, pending_alerts, run_digest
from ceptoar.clinics import vendor_requests
from ceptoar.core import mail
from ceptoar.core.errors import CeptoarError
from ceptoar.core.files import child, private_dir
from ceptoar.core.model import JST, MEMBER_SUBMISSIONS, stamp
from ceptoar.core.settings import Settings
from ceptoar.pipeline import FetchResult, fetch_source
from ceptoar.store import Store
from ceptoar.store.leases import Lease, LeaseHeld, held

MAX_BACKOFF = timedelta(days=1)
QUIET_FLOOR = timedelta(days=7)  # a source is never "quiet" sooner than this
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def parse_time_of_day(text: str) -> tuple[int | None, int, int]:
    """'07:00' (every day) or 'mon 07:30' (that weekday) → (weekday or None, hour, minute)."""
    parts = text.strip().lower().split()
    day = None
    if len(parts) == 2:
        if parts[0][:3] not in WEEKDAYS:
            raise CeptoarError(f"{text!r}: the day is one of {', '.join(WEEKDAYS)}")
        day = WEEKDAYS.index(parts[0][:3])
        parts = parts[1:]
    try:
        hour, minute = (int(x) for x in parts[0].split(":"))
        if not (0 <= hour < 24 and 0 <= minute < 60):
            raise ValueError
    except ValueError:
        raise CeptoarError(f"{text!r} is not a time of day (HH:MM, or 'mon 07:30')") from None
    return day, hour, minute


def next_due(now: datetime, interval: int, failures: int, rand: random.Random) -> datetime:
    """When a source is fetched again: its interval (±10% jitter, so sources spread out); after
    failures, the interval doubled per failure, at most a day."""
    base = timedelta(seconds=max(60, interval or 3600))
    if failures:
        base = min(base * (2 ** min(failures, 10)), MAX_BACKOFF)
    return now + base * rand.uniform(0.9, 1.1)


def is_due(row: dict, now: datetime) -> bool:
    """Whether a source's time to be fetched has come (members' TAXII submissions are never fetched)."""
    return row.get("defined_by") != MEMBER_SUBMISSIONS and (not row.get("next_due") or row["next_due"] <= stamp(now))


def reschedule(store: Store, source_id: str, now: datetime, rand: random.Random, wait: float | None = None) -> None:
    """The source's next fetch, from its interval and its failures so far, and never sooner than
    the upstream asked (`wait`: its Retry-After or Cache-Control max-age, in seconds)."""
    row = store.sources.get(source_id)
    due = next_due(now, row.get("interval") or 3600, row["failures"], rand)
    if wait:
        due = max(due, now + timedelta(seconds=wait))
    store.sources.schedule(source_id, stamp(due))


def expected_gap(days: list[str]) -> timedelta | None:
    """How often a source brings something new, from its history (the median gap between the days
    new advisories arrived); None with too little history to say."""
    if len(days) < 5:
        return None
    dates = sorted(datetime.fromisoformat(d).date() for d in days)
    gaps = [(b - a).days for a, b in zip(dates, dates[1:], strict=False)]
    return timedelta(days=max(1.0, statistics.median(gaps)))


@dataclass
class TickReport:
    fetched: list[FetchResult] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    flashes: int = 0
    health: list[tuple[str, str]] = field(default_factory=list)  # (source, new health)
    pruned: int = 0
    notes: list[str] = field(default_factory=list)


class Worker:
    def __init__(self, store: Store, settings: Settings, *, clock: Callable[[], datetime] | None = None,
                 log: Callable[[str], None] = print, actor: str = "worker", seed: int | None = None):
        self.store, self.settings, self.log, self.actor = store, settings, log, actor
        self.clock = clock or (lambda: datetime.now(UTC))
        self.rand = random.Random(seed)
        self.stopping = threading.Event()
        self.daily = parse_time_of_day(settings.digest_daily_at)
        self.weekly = parse_time_of_day(settings.digest_weekly_at)
        self.warned: set[str] = set()
        self.lease: Lease | None = None

    # --- the loop -------------------------------------------------------------------------------
    def stop(self, *_args) -> None:
        if not self.stopping.is_set():
            self.log("stopping after the current piece of work")
        self.stopping.set()

    def run(self, every: float = 30.0, once: bool = False) -> None:
        """Tick until stopped (SIGTERM, SIGINT), holding the worker lease."""
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with held(self.store, "worker", "the worker (ceptoar run)") as lease:
                self.lease = lease
                self.log(f"worker running on {self.store.where}")
                while not self.stopping.is_set():
                    self.tick()
                    if once:
                        break
                    self.stopping.wait(every)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.log("worker stopped")

    def tick(self) -> TickReport:
        report = TickReport()
        now = self.clock()
        for step in (self.fetch_due, self.send_digests, self.send_flashes, self.ask_vendors, self.watch_health,
                     self.retention):
            if self.stopping.is_set():
                break
            try:
                step(now, report)
            except LeaseHeld as e:
                report.notes.append(str(e))
            except CeptoarError as e:  # one step failing leaves the others running
                report.notes.append(f"{step.__name__}: {e}")
                self.log(f"{step.__name__}: {e}")
            if self.lease is not None:
                self.lease.keep()
        return report

    # --- fetching -------------------------------------------------------------------------------
    def due_sources(self, now: datetime) -> list[dict]:
        return [r for r in self.store.sources.list() if r["enabled"] and is_due(r, now)]

    def fetch_due(self, now: datetime, report: TickReport) -> None:
        for row in self.due_sources(now):
            if self.stopping.is_set():
                return
            res = fetch_source(self.store, row)
            report.fetched.append(res)
            self.log(f"fetched {row['id']}: {res.status}"
                     + (f" ({res.new} new, {res.updated} updated)" if res.status == "ok" else "")
                     + (f": {res.error}" if res.error else ""))
            reschedule(self.store, row["id"], self.clock(), self.rand, res.wait)
            if self.lease is not None:
                self.lease.keep()

    # --- mail -------------------------------------------------------------------------------------
    def _can_send(self, what: str) -> bool:
        missing = [n for n, v in (("CEPTOAR_SMTP_HOST", self.settings.smtp_host),
                                  ("CEPTOAR_PUBLIC_URL", self.settings.public_url)) if not v]
        if missing and what not in self.warned:
            self.warned.add(what)
            self.log(f"{what} not sent: set {' and '.join(missing)}")
        return not missing

    def send_digests(self, now: datetime, report: TickReport) -> None:
        local = now.astimezone(JST)
        for frequency, (day, hour, minute) in (("daily", self.daily), ("weekly", self.weekly)):
            if frequency == "weekly" and day is not None and local.weekday() != day:
                continue
            if (local.hour, local.minute) < (hour, minute):
                continue
            run = self.store.deliveries.get_run(f"{frequency}-{local:%Y-%m-%d}")
            if run is not None and run.get("finished"):
                continue
            if not self._can_send(f"the {frequency} digest"):
                continue
            try:
                res = run_digest(self.store, frequency, smtp=self.settings.smtp(), base_url=self.settings.public_url,
                                 now=now, actor=self.actor)
            except DeliveryError as e:
                report.notes.append(f"{frequency} digest: {e}")
                self.log(f"{frequency} digest stopped: {e} (the next tick continues it)")
                continue
            report.digests.append(res.run)
            self.log(f"{frequency} digest {res.run}: {res.sent} sent, {res.failed} failed")

    def send_flashes(self, now: datetime, report: TickReport) -> None:
        if not pending_alerts(self.store) or not self._can_send("flash alerts"):
            return
        results = drain_flash_queue(self.store, self.actor, smtp=self.settings.smtp(),
                                    base_url=self.settings.public_url)
        report.flashes += len(results)

    def ask_vendors(self, now: datetime, report: TickReport) -> None:
        """Each maintenance vendor, once per tick, about the matched rows it maintains."""
        if not self.store.vendors.list() or not self._can_send("vendor requests"):
            return
        for r in vendor_requests.send(self.store, self.actor, self.settings.smtp(),
                                              base_url=self.settings.public_url):
            self.log(f"vendor {r.vendor}: {r.status}, {r.advisories} advisories"
                     + (f" ({r.detail})" if r.detail else ""))

    # --- feed health ------------------------------------------------------------------------------
    def health_of(self, row: dict, now: datetime) -> tuple[str, str]:
        """('ok' | 'failing' | 'quiet', why)."""
        if row["failures"] >= self.settings.failure_threshold:
            return "failing", f"{row['failures']} failures in a row, the last: {row.get('last_error') or '?'}"
        gap = expected_gap(self.store.sources.first_seen_days(row["id"]))
        if gap is not None and row.get("last_new"):
            limit = max(3 * gap, QUIET_FLOOR, timedelta(seconds=3 * (row.get("interval") or 3600)))
            since = now - datetime.fromisoformat(row["last_new"].replace("Z", "+00:00"))
            if since > limit:
                return "quiet", (f"nothing new for {since.days} days, while it usually brings something every "
                                 f"{gap.days} day(s): has its URL moved?")
        return "ok", ""

    def watch_health(self, now: datetime, report: TickReport) -> None:
        for row in self.store.sources.list():
            if not row["enabled"] or row.get("defined_by") == MEMBER_SUBMISSIONS:
                continue
            health, why = self.health_of(row, now)
            if health == row.get("health", "ok"):
                continue
            self.store.sources.set_health(row["id"], health, stamp(now))
            self.store.audit.add(self.actor, "source-health", row["id"], {"health": health, "why": why})
            report.health.append((row["id"], health))
            self.log(f"source {row['id']}: {health}" + (f" ({why})" if why else ""))
            self.tell_operator(row, health, why)
        for row in self.store.sources.list():
            untold = sorted(p for p, f in (row.get("unknown_fields") or {}).items() if not f.get("told"))
            if row["enabled"] and untold and self.tell_fields(row, untold):
                self.store.sources.fields_told(row["id"], untold)

    def tell_fields(self, row: dict, paths: list[str]) -> bool:
        """Fields a source's items carry that their format's schema does not name: once each, by mail."""
        fields = row["unknown_fields"]
        body = "\n".join([
            f"情報源 / source: {row['id']} ({row.get('name') or row['id']})",
            "フィードに、本システムがまだ読まない新しい項目が現れました(生データには保存されています)。",
            "New fields in the feed's items, not read by the hub yet (kept in the raw entries):", "",
            *(f"  {p}: {fields[p]['count']:,} (first seen {fields[p]['first_seen'][:10]} UTC)" for p in paths[:50]),
            "", f"ceptoar sources show {row['id']} --format table で確認してください。",
        ])
        return self._mail_operator(f"[CEPTOAR] 新しい項目 / new fields: {row['id']} ({len(paths)})", body)

    def tell_operator(self, row: dict, health: str, why: str) -> None:
        subject = {"failing": f"[CEPTOAR] 取得失敗が続いています / source failing: {row['id']}",
                   "quiet": f"[CEPTOAR] 更新が途絶えています / source quiet: {row['id']}",
                   "ok": f"[CEPTOAR] 復旧しました / source recovered: {row['id']}"}[health]
        body = "\n".join([
            f"情報源 / source: {row['id']} ({row.get('name') or row['id']})",
            f"URL: {row.get('url')}",
            f"状態 / health: {health}" + (f" — {why}" if why else ""),
            f"最終成功 / last success: {row.get('last_success') or '-'} UTC",
            f"最終取得 / last fetch: {row.get('last_fetched') or '-'} UTC ({row.get('last_status') or '-'})",
            "", "ceptoar status / ceptoar sources list で確認してください。",
        ])
        self._mail_operator(subject, body)

    def _mail_operator(self, subject: str, body: str) -> bool:
        """One mail to the operator; True when the server took it."""
        to, smtp = self.settings.operator_email, self.settings.smtp()
        if not to or not smtp:
            if "operator mail" not in self.warned:
                self.warned.add("operator mail")
                self.log("feed-health mail not sent: set CEPTOAR_OPERATOR_EMAIL and CEPTOAR_SMTP_HOST")
            return False
        msg = mail.message(subject, body, to=to, headers={"X-CEPTOAR-TLP": "GREEN"})
        mailer = mail.Mailer(smtp)
        try:
            mailer.connect()
            refusal = mailer.send(mail.sender().addr_spec, to, msg.as_bytes())
            if refusal:
                self.log(f"operator mail refused: {refusal}")
            return not refusal
        except DeliveryError as e:
            self.log(f"operator mail not sent: {e}")
            return False
        finally:
            mailer.close()

    # --- retention ----------------------------------------------------------------------------
    def retention(self, now: datetime, report: TickReport) -> None:
        days = self.settings.audit_retention_days
        today = f"{now:%Y-%m-%d}"
        if not days or self.store.meta("last_retention") == today:
            return
        folder = private_dir(self.settings.config_dir / "audit-archive")
        report.pruned = prune_audit(self.store, now - timedelta(days=days), folder, self.actor)
        with self.store.transaction():
            self.store.execute("INSERT INTO meta (key, value) VALUES ('last_retention', ?) "
                               "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (today,))


def prune_audit(store: Store, before: datetime, folder: Path, actor: str) -> int:
    """Archive, then remove, the audit entries older than `before`; the pruning itself is audited."""
    path = child(private_dir(folder), f"audit-before-{before:%Y%m%dT%H%M%S}.jsonl")
    with open(path, "a", encoding="utf-8", opener=lambda p, f: os.open(p, f, 0o600)) as archive:
        n = store.audit.prune(stamp(before), archive)
    store.audit.add(actor, "audit-prune", str(path), {"before": stamp(before), "entries": n})
    return n
