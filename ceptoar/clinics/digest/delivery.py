"""Delivery: who gets which digest, SMTP sending, and the delivery log that makes a run resumable.

A run (one per frequency and JST day, or one per flash alert) has a fixed `until`. A recipient is
marked sent (and its digest cursor moved) in the same transaction, right after the SMTP server
accepted the message, so a rerun after a crash sends exactly the rest. Per-recipient SMTP refusals
are recorded and retried by the next run; a server that cannot be reached or drops the connection
stops the run with a clear message.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ceptoar.clinics import responses
from ceptoar.clinics.digest import lists
from ceptoar.facilities import vendors
from ceptoar.clinics.digest.render import Rendered, compose, facility_block, item, render, render_corrections
from ceptoar.core import settings
from ceptoar.core.errors import CeptoarError, NotFound
from ceptoar.core.files import child, private_dir, write_private
from ceptoar.core.mail import DeliveryError, Mailer, SmtpConfig, eml_name, message_id, sender  # noqa: F401
from ceptoar.core.model import HUB, JST, SYSTEM, TLP_ORDER
from ceptoar.core.output import clean
from ceptoar.publishing import clinic
from ceptoar.publishing.publication import unreviewed_view
from ceptoar.store import Store, utcnow
from ceptoar.store.leases import held

WINDOW = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}


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
    keys = [(c["advisory"], c["version"]) for c in chosen]
    pubs = store.publications.get_many(keys)
    reports = store.objects.get_many([(a, v, HUB) for a, v in keys])
    items = [pubs[(a, v)].view | {"tlp": TLP_ORDER[c["rank"]], "version": v, "report": reports[(a, v, HUB)].obj}
             for c, (a, v) in zip(chosen, keys, strict=True)]
    # EPSS moves daily: today's probability, not the one of the day it was published.
    scores = store.epss.of([c for a in items for c in a.get("cves") or []])
    for a in items:
        known = [scores[c]["epss"] for c in a.get("cves") or [] if c in scores]
        a["epss"] = max(known) if known else None
    items.sort(key=lambda a: (a["report"].get("published") or "", a["id"]), reverse=True)
    return items, name


def _kev(store: Store, rendered) -> set[str]:
    """The KEV-listed CVEs, read once per segment (kept on its Rendered) rather than per facility."""
    if "kev" not in rendered.cache:
        rendered.cache["kev"] = store.advisories.kev_cves()
    return rendered.cache["kev"]


def _blocks(store: Store, rendered, fids: list[str], seg: dict, until: str, link, *,
            reminders: bool, unreviewed: list[dict] = ()) -> dict[str, tuple[str, str] | None]:
    """The blocks of a page of recipients' facilities in one segment, a handful of queries for the
    whole page: each facility's matches among the segment's advisories (answer links on the urgent
    ones) and, in digests, reminders of urgent matches it has not answered (only advisories this
    segment may see). `unreviewed`: what the urgent path matched of advisories not published yet
    (no answer link: the answer page shows published advisories only)."""

    found: dict[str, list[dict]] = {}
    published = [a for a in rendered.items if not rendered.items[a].get("pre_review")]
    for m in store.facilities.matches(facilities=fids, advisories=published) if published else []:
        found.setdefault(m["facility"], []).append(m)
    for m in unreviewed:
        if m["advisory"] in rendered.items:
            found.setdefault(m["facility"], []).append(m)
    answered: dict[str, dict] = {}
    for (fid, aid), answer in store.facilities.latest_responses(facilities=fids).items():
        answered.setdefault(fid, {})[aid] = answer
    urgent = {aid for aid, i in rendered.items.items() if i["kev"] or i["severity"] in ("high", "critical")}
    due: dict[str, list[str]] = {}
    visible: dict[str, dict] = {}
    if reminders:
        due = {fid: [a for a in ids if a not in rendered.items]
               for fid, ids in responses.due_reminders(store, fids, kev=_kev(store, rendered)).items()}
        wanted = sorted({a for ids in due.values() for a in ids})
        if wanted:
            shown, _name = advisories_for(store, seg["member"], seg["clearance"], None, until, wanted)
            visible = {a["id"]: item(a, rendered.lang) | {"id": a["id"], "rank": TLP_ORDER.index(a["tlp"])}
                       for a in shown}
    # What each facility's maintenance vendors answered (「保守業者(○○)の回答: …」), per advisory.
    names = {v["id"]: v["name"] for v in store.vendors.list()}
    by_row = store.vendors.answers() if names else {}
    said: dict[str, dict[str, str]] = {}
    for fid, ms in found.items():
        for m in ms:
            a = by_row.get((m["advisory"], fid, m.get("n")))
            if a:
                said.setdefault(fid, {}).setdefault(m["advisory"], vendors.answer_ja(a, names.get(a["vendor"],
                                                                                                    a["vendor"])))
    blocks = {}
    limit = settings.current().digest_max_items if reminders else 0  # a digest's; an urgent run shows all
    for fid in fids:
        mine = found.get(fid, [])
        links = {aid: link(fid, aid, TLP_ORDER.index(rendered.items[aid]["tlp"]))
                 for aid in {m["advisory"] for m in mine} & urgent if not rendered.items[aid].get("pre_review")}
        late = [visible[a] for a in due.get(fid, []) if a in visible]  # newest first, as due_reminders gives them
        more = max(0, len(late) - responses.REMINDERS_MAX)
        late = [v | {"link": link(fid, v["id"], v["rank"])} for v in late[:responses.REMINDERS_MAX]]
        blocks[fid] = facility_block(rendered, mine, links=links, answers=answered.get(fid), reminders=late,
                                     more=more, limit=limit, vendor_answers=said.get(fid))
    return blocks


LOG_BATCH, LOG_SECONDS = 200, 1.0


def _stamp(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def preview(store: Store, member: str, frequency: str, clearance: str, lang: str):
    """What a subscriber of `member` with this clearance would get now (a Rendered), or None when
    nothing was published for it in the period."""

    if store.members.get(member) is None:
        raise NotFound(f"no member {member!r}")
    now = datetime.now(UTC)
    until = _stamp(now)
    rows, name = advisories_for(store, member, clearance, _stamp(now - WINDOW[frequency]), until)
    if not rows:
        return None
    return render(store, rows, lang=lang, member_name=name, until=until,
                  periods=store.deliveries.active_alert_periods(until))


def run_digest(store: Store, frequency: str, *, smtp: SmtpConfig | None, out_dir: Path | None = None,
               dry_run: bool = False, rate: float | None = None, base_url: str = "http://127.0.0.1:8000",
               now: datetime | None = None, progress=None, wait: float = 0.0, actor: str = SYSTEM) -> RunResult:
    """Today's (JST) daily or weekly run: resumable, one process at a time, audited (also when the
    SMTP server stops it)."""
    now = now or datetime.now(UTC)
    run = store.deliveries.create_run(f"{frequency}-{now.astimezone(JST):%Y-%m-%d}", "digest", frequency, _stamp(now))
    try:
        res = _deliver(store, run, frequency, None, smtp=smtp, out_dir=out_dir, dry_run=dry_run, rate=rate,
                       base_url=base_url, progress=progress, wait=wait)
    except DeliveryError as e:
        store.audit.add(actor, "digest-send", run["id"], {"error": str(e)})
        raise
    store.audit.add(actor, "digest-send", res.run, {k: v for k, v in res.as_dict().items() if k != "errors"})
    return res


def add_alert_period(store: Store, name: str, start: datetime, end: datetime, note: str | None = None,
                     actor: str = SYSTEM) -> tuple[str, str]:
    """Add (or redefine) a period of heightened vigilance; its (start, end) as stored (UTC)."""
    s, e = _stamp(start), _stamp(end)
    if e <= s:
        raise DeliveryError("an alert period must end after it starts")
    with store.transaction():
        store.deliveries.add_alert_period(name, s, e, note)
        store.audit.add(actor, "alert-period-add", name, {"start": s, "end": e})
    return s, e


def _bundle_id(kind: str, ids: list[str]) -> str:
    """A run's id from what it carries: a drain that stopped half-way and is run again resumes the
    same run (the same Message-IDs, the recipients already sent skipped)."""
    return f"{kind}-{hashlib.sha256('|'.join(sorted(ids)).encode()).hexdigest()[:16]}"


def run_flash(store: Store, advisory_ids: list[str] | str, *, smtp: SmtpConfig | None, out_dir: Path | None = None,
              dry_run: bool = False, rate: float | None = None, base_url: str = "http://127.0.0.1:8000",
              progress=None, wait: float = 0.0) -> RunResult:
    """The flash alerts queued together, in one message per subscriber (most urgent first)."""
    ids = [advisory_ids] if isinstance(advisory_ids, str) else list(advisory_ids)
    run = store.deliveries.create_run(_bundle_id("flash", ids), "flash", None, utcnow(), ids[0] if ids else None)
    return _deliver(store, run, None, ids, smtp=smtp, out_dir=out_dir, dry_run=dry_run, rate=rate,
                    base_url=base_url, progress=progress, wait=wait)


def run_targeted(store: Store, facility: str, advisory_ids: list[str] | str, *, smtp: SmtpConfig | None,
                 out_dir: Path | None = None, dry_run: bool = False, rate: float | None = None,
                 base_url: str = "http://127.0.0.1:8000", progress=None, wait: float = 0.0,
                 unreviewed: dict[str, dict] | None = None) -> RunResult:
    """One urgent message to a facility's staff about everything queued for it that touches a
    product it exposes. `unreviewed`: advisory → (`view`, `matches`) of those alerted before any
    analyst acted (CLEAR), shown as such."""
    ids = [advisory_ids] if isinstance(advisory_ids, str) else list(advisory_ids)
    run = store.deliveries.create_run(_bundle_id(f"alert-{facility}", ids), "targeted", None, utcnow(),
                                      ids[0] if ids else None)
    return _deliver(store, run, None, ids, smtp=smtp, out_dir=out_dir, dry_run=dry_run, rate=rate,
                    base_url=base_url, progress=progress, wait=wait, facility=facility, unreviewed=unreviewed)


def pending_alerts(store: Store) -> int:
    """Flash alerts, targeted alerts and corrections waiting to be sent."""
    return len(store.deliveries.pending_flashes()) + store.facilities.pending_count()


def drain_flash_queue(store: Store, actor: str, *, smtp: SmtpConfig | None, out_dir: Path | None = None,
                      dry_run: bool = False, rate: float | None = None, base_url: str = "http://127.0.0.1:8000",
                      wait: float = 0.0, now: datetime | None = None) -> list[RunResult]:
    """Send what is queued, one process at a time (a lease): the flash alerts of an alert period in
    one message per subscriber; per facility, one urgent message with everything new for it (at
    most one per `urgent_min_minutes`: what comes later joins the next), and one with the
    corrections of alerts it got before review. Each is audited. Nothing is sent without a way to
    send or write it."""

    if not pending_alerts(store) or (smtp is None and out_dir is None and not dry_run):
        return []
    now = now or datetime.now(UTC)
    how = {"smtp": smtp, "out_dir": out_dir, "dry_run": dry_run, "rate": rate, "base_url": base_url}
    results = []
    with held(store, "flash-queue", "the flash-alert queue", wait):
        flashes = store.deliveries.pending_flashes()  # read again under the lease
        if flashes:
            res = run_flash(store, [f["advisory"] for f in flashes], **how)
            for f in flashes:
                if smtp and not dry_run:
                    store.deliveries.mark_flash(f["advisory"], res.run)
                store.audit.add(actor, "flash", f["advisory"], {"run": res.run, "sent": res.sent,
                                                               "failed": res.failed})
            results.append(res)
        with store.transaction():
            store.facilities.expand_targeted()  # the facilities due an alert for each advisory queued
        results += _send_urgent(store, actor, now, how)
        results += _send_corrections(store, actor, how)
    return results


def _send_urgent(store: Store, actor: str, now: datetime, how: dict) -> list[RunResult]:
    by_facility: dict[str, list[dict]] = {}
    for t in store.facilities.pending_targeted():
        by_facility.setdefault(t["facility"], []).append(t)
    gap = timedelta(minutes=settings.current().urgent_min_minutes)
    last = store.facilities.last_urgent(list(by_facility))
    sending = bool(how["smtp"]) and not how["dry_run"]
    results = []
    for fid, queued in by_facility.items():
        if fid in last and now - datetime.fromisoformat(last[fid].replace("Z", "+00:00")) < gap:
            continue  # too soon after the last: these join the next one
        unreviewed = {}
        for t in queued:
            row = store.advisories.get(t["advisory"])
            if t["detail"] and row and row["status"] == "new":
                view = unreviewed_view(store, row, clinic.jvn_entry(store, row))
                if view is not None:
                    unreviewed[t["advisory"]] = {"view": view, "matches": t["detail"]}
        ids = [t["advisory"] for t in queued]
        res = run_targeted(store, fid, ids, unreviewed=unreviewed, **how)
        sent = utcnow() if res.sent else None
        for aid in ids:
            before = aid in unreviewed
            if sending:
                store.facilities.mark_targeted(fid, aid, res.run, pre_review=before, sent=sent)
            store.audit.add(actor, "urgent-alert" if before else "targeted-alert", aid,
                            {"facility": fid, "run": res.run, "sent": res.sent, "failed": res.failed,
                             **({"before_review": True} if before else {})})
        results.append(res)
    return results


def _send_corrections(store: Store, actor: str, how: dict) -> list[RunResult]:
    by_facility: dict[str, list[dict]] = {}
    for c in store.facilities.pending_corrections():
        by_facility.setdefault(c["facility"], []).append(c)
    results = []
    for fid, corrections in by_facility.items():
        for c in corrections:  # the title as the alert carried it (CLEAR)
            c["title"] = (store.advisories.get(c["advisory"]) or {}).get("title")
        run = store.deliveries.create_run(
            _bundle_id(f"correction-{fid}", [f"{c['advisory']}|{c['what']}|{c['queued']}" for c in corrections]),
            "correction", None, utcnow(), corrections[0]["advisory"])
        res = _deliver(store, run, None, [c["advisory"] for c in corrections], facility=fid,
                       corrections=corrections, wait=0.0, progress=None, **how)
        if how["smtp"] and not how["dry_run"]:
            store.facilities.mark_corrections(fid, res.run)
        for c in corrections:
            store.audit.add(actor, "urgent-correction", c["advisory"], {"facility": fid, "what": c["what"],
                                                                        "run": res.run, "sent": res.sent})
        results.append(res)
    return results


class DeliveryLog:
    """Outcomes written to the delivery log in batches (one transaction per LOG_BATCH recipients or
    LOG_SECONDS, whichever comes first) instead of one per message. A crash can lose the last batch's
    records: those recipients get the digest again on the next run, with the same Message-ID (derived
    from the run and the address), so a resend is recognisable."""

    def __init__(self, store: Store):
        self.store, self.pending, self.since = store, [], 0.0

    def add(self, *outcome) -> None:
        if not self.pending:
            self.since = time.monotonic()
        self.pending.append(outcome)
        if len(self.pending) >= LOG_BATCH or time.monotonic() - self.since >= LOG_SECONDS:
            self.flush()

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        self.store.deliveries.record_many(pending)


def _deliver(store: Store, run: dict, frequency: str | None, ids: list[str] | None, *, smtp, out_dir, dry_run,
             rate, base_url, progress, wait: float, facility: str | None = None, **content) -> RunResult:
    """A run sends only while it holds the run's lease: two runs started together (cron and a
    person) never send the same digest twice. `content`: what a targeted run carries besides the
    published (`unreviewed`), or a correction run's `corrections`."""
    if not smtp or dry_run:
        return _deliver_held(store, run, frequency, ids, None, smtp=None, out_dir=out_dir, dry_run=dry_run,
                             rate=rate, base_url=base_url, progress=progress, facility=facility, **content)
    with held(store, f"digest:{run['id']}", f"digest run {run['id']}", wait) as lease:
        return _deliver_held(store, run, frequency, ids, lease, smtp=smtp, out_dir=out_dir, dry_run=dry_run,
                             rate=rate, base_url=base_url, progress=progress, facility=facility, **content)


def _deliver_held(store: Store, run: dict, frequency: str | None, ids: list[str] | None, lease, *, smtp, out_dir,
                  dry_run, rate, base_url, progress, facility: str | None = None, unreviewed: dict | None = None,
                  corrections: list[dict] | None = None) -> RunResult:
    kind = _Corrections if corrections is not None else _Sending
    sending = kind(store, run, frequency, ids, lease, smtp=smtp, out_dir=out_dir, dry_run=dry_run, rate=rate,
                   base_url=base_url, progress=progress, facility=facility)
    sending.unreviewed = unreviewed or {}
    sending.corrections = corrections or []
    try:
        for seg in store.subscribers.segments(frequency, facility):
            sending.segment(seg)
    finally:
        sending.close()
    if sending.mailer and sending.result.failed == 0:
        store.deliveries.finish_run(run["id"])
    return sending.result


class _Sending:
    """One run's sending, segment by segment and page by page of recipients: the SMTP connection
    (none for a dry run or files only), the pace (`rate`), the delivery log and the result."""

    def __init__(self, store: Store, run: dict, frequency: str | None, ids: list[str] | None, lease, *, smtp,
                 out_dir, dry_run, rate, base_url, progress, facility: str | None):
        self.store, self.run, self.frequency, self.ids, self.lease = store, run, frequency, ids, lease
        self.out_dir, self.dry_run, self.base_url, self.progress, self.facility = (out_dir, dry_run, base_url,
                                                                                   progress, facility)
        self.result = RunResult(run=run["id"])
        self.until = run["until"]
        self.periods = store.deliveries.active_alert_periods(self.until)
        self.kind = "targeted" if facility else "flash" if ids else "digest"
        self.mailer = None
        if out_dir is not None:
            private_dir(out_dir)
        if smtp and not dry_run:
            self.mailer = Mailer(smtp)
            self.mailer.connect()  # a dead server stops the run before anything is marked
        self.envelope_from = sender().addr_spec
        self.link = responses.linker(store, base_url)
        self.lister = lists.linker(store, base_url)
        self.since: str | None = None
        self.log = DeliveryLog(store)
        # Dot-stuffed as composed (once per segment) when the server pipelines and nothing is written to files.
        self.stuffed = bool(self.mailer and self.mailer.pipelining and out_dir is None)
        self.interval = 1.0 / rate if rate else 0.0
        self.next_slot = time.monotonic()

    def close(self) -> None:
        self.log.flush()  # what the server accepted before an error is recorded too
        if self.mailer:
            self.mailer.close()

    unreviewed: dict[str, dict] = {}
    corrections: list[dict] = []

    def segment(self, seg: dict) -> None:
        """One segment (member, clearance, language): rendered once, then its recipients a page at
        a time (a facility's staff come together; its block is let go with the page)."""
        rendered = self.render_segment(seg)
        if rendered is None:
            return
        store, result = self.store, self.result
        after = ("", "")
        while True:
            batch = store.subscribers.recipients(self.frequency, seg["member"], seg["clearance"], seg["lang"],
                                                 seg["since"], after, facility=self.facility)
            if not batch:
                break
            after = (batch[-1]["facility"] or "", batch[-1]["email"])
            states = store.deliveries.states(self.run["id"], [r["email"] for r in batch])
            todo = [r for r in batch if states.get(r["email"], {}).get("status") != "sent"]
            result.skipped += len(batch) - len(todo)
            fids = list(dict.fromkeys(r["facility"] for r in todo if r.get("facility")))
            blocks = self.blocks(rendered, fids, seg) if fids else {}
            for r in todo:
                self.deliver(rendered, blocks.get(r.get("facility")), r)

    def render_segment(self, seg: dict) -> Rendered | None:
        """The segment's message: what its subscribers may see of the run's advisories (for an
        urgent run, with those sent before review), or None when there is nothing."""
        store, result, frequency, until = self.store, self.result, self.frequency, self.until
        since = seg["since"] or (_stamp(datetime.fromisoformat(until.replace("Z", "+00:00")) - WINDOW[frequency])
                                 if frequency else None)
        advisories, member_name = advisories_for(store, seg["member"], seg["clearance"], since, until, self.ids)
        if self.unreviewed and member_view(store, seg["member"])[1] >= 0:  # CLEAR: every enabled member's
            have = {a["id"] for a in advisories}
            advisories += [u["view"] for aid, u in self.unreviewed.items() if aid not in have]
        result.segments += 1
        if not advisories:
            result.empty_segments += 1  # empty digests are not sent
            return None
        self.since = since
        rendered = render(store, advisories, lang=seg["lang"], member_name=member_name, until=until,
                          periods=self.periods, kind=self.kind, since=since,
                          devices=self.devices() if self.kind == "targeted" else None)
        result.rendered += 1
        return rendered

    def unreviewed_matches(self) -> list[dict]:
        return [{"facility": self.facility, "advisory": aid, "row": m["row"], "confidence": m["confidence"]}
                for aid, u in self.unreviewed.items() for m in u["matches"]]

    def devices(self) -> dict[str, dict]:
        """The facility's first matched register row for each advisory of an urgent run (the
        message names the device of the most urgent one)."""
        if not hasattr(self, "_devices"):
            matches = self.store.facilities.matches(facility=self.facility, advisories=self.ids) \
                + self.unreviewed_matches()
            found: dict[str, dict] = {}
            for m in matches:  # an exposed or remotely maintained row first: that is why it is urgent
                if m["row"].get("internet_exposed") or m["row"].get("remote_maintenance"):
                    found.setdefault(m["advisory"], m["row"])
            for m in matches:
                found.setdefault(m["advisory"], m["row"])
            self._devices = found
        return self._devices

    def blocks(self, rendered: Rendered, fids: list[str], seg: dict) -> dict:
        return _blocks(self.store, rendered, fids, seg, self.until, self.link, reminders=self.kind == "digest",
                       unreviewed=self.unreviewed_matches())

    def deliver(self, rendered: Rendered, block, r: dict) -> None:
        """One recipient's message: composed, written to a file if asked, sent and logged."""
        result, run_id = self.result, self.run["id"]
        if self.lease is not None:
            self.lease.keep()
        url = f"{self.base_url.rstrip('/')}/unsubscribe/{r['token']}"
        # Derived from (run, recipient): a resend after a crash carries the same Message-ID.
        mid = message_id(f"{run_id}|{r['email']}")
        try:  # an address stored before addresses were checked fails alone
            whole = self.lister(r["token"], self.since, self.until) \
                if self.since and "list" in rendered.pieces(self.stuffed) else ""
            data = compose(rendered, message_id=mid, email=r["email"], name=r["name"] or "",
                           unsubscribe_url=url, block=block, stuffed=self.stuffed, list_url=whole)
            if self.out_dir is not None:
                write_private(child(self.out_dir, eml_name(r["email"])), data)
                result.written += 1
        except (CeptoarError, ValueError) as e:
            result.failed += 1
            result.errors.append(f"{clean(r['email'])}: {clean(str(e))}")
            if self.mailer is not None and not self.dry_run:
                self.log.add(run_id, r["email"], "failed", None, str(e)[:300], None, None)
            return
        if self.mailer is None:
            return
        if self.interval:
            delay = self.next_slot - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.next_slot = max(self.next_slot, time.monotonic()) + self.interval
        refusal = self.mailer.send(self.envelope_from, r["email"], data, stuffed=self.stuffed)
        if refusal is None:
            self.log.add(run_id, r["email"], "sent", mid, None, self.frequency, self.until)
            result.sent += 1
        else:
            self.log.add(run_id, r["email"], "failed", mid, refusal, None, None)
            result.failed += 1
            result.errors.append(f"{r['email']}: {refusal}")
        if self.progress and (result.sent + result.failed) % 1000 == 0:
            self.progress(f"{run_id}: {result.sent} sent, {result.failed} failed")


class _Corrections(_Sending):
    """A facility's corrections of alerts it was sent before review: one short message."""

    def render_segment(self, seg: dict) -> Rendered | None:
        self.result.segments += 1
        _collections, rank, name = member_view(self.store, seg["member"])
        if rank < 0 or not self.corrections:
            self.result.empty_segments += 1
            return None
        rendered = render_corrections(self.corrections, lang=seg["lang"], member_name=name, until=self.until)
        self.result.rendered += 1
        return rendered

    def blocks(self, rendered: Rendered, fids: list[str], seg: dict) -> dict:
        return {}
