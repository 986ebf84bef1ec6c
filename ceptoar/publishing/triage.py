"""Analyst decisions: tags, TLP, severity, medical relevance, notes, publish / reject / revoke.

Decisions are the analyst's alone: no fetch, pull or submission changes them. Publishing pins a
snapshot (ceptoar.publishing.publication) into every matching collection. A decision that alters published
content republishes the advisory from the source version that was published (an upstream change
stays pending until the analyst, or the source's auto-publish rule, publishes it). A change of the
effective TLP takes effect at once for everything already published. Every mutation is audited in
the same transaction. Publishing a high or critical advisory during an alert period queues a flash
alert (sent by the digest stage).
"""

from __future__ import annotations

import json

from ceptoar.core import extensions
from ceptoar.core.errors import CeptoarError
from ceptoar.core.model import HUB, MEMBER_SUBMISSIONS, effective_severity, source_origin, tlp_name
from ceptoar.core.output import has_control
from ceptoar.facilities import registers
from ceptoar.publishing import clinic, publication
from ceptoar.publishing import collections as colls
from ceptoar.publishing.filters import SEVERITIES, compile_filter
from ceptoar.store import Store, utcnow
from ceptoar.store.base import chunks

TAG_FORBIDDEN = set(' \t\r\n"\\,')


class TriageError(CeptoarError, ValueError):
    pass


SEVERITY_RANK = {"critical": 4, "high": 3, "medium": 2, "low": 1}


def _rows(store: Store, refs: list[str]) -> list[dict]:
    rows = [store.advisories.find(r) for r in refs]
    return list({r["id"]: r for r in rows}.values())


def _source_report(store: Store, row: dict, version: str | None) -> tuple[dict, str]:
    """The source's report version to publish from: the one named, else the newest."""
    origin = source_origin(row["source"])
    v = store.objects.get(row["source_report"], version, origin) if version else None
    v = v or store.objects.latest([row["source_report"]], origin)[row["source_report"]]
    return v.obj, v.modified


def _republish_row(store: Store, row: dict, kev: set[str], actor: str) -> list[str]:
    """Pin a new publication of a published advisory whose decisions changed and place it: from the
    source version published before, keeping its objects (publishing itself is `publish`)."""
    source_report, source_version = _source_report(store, row, row.get("published_source"))
    view, previous, jvn = publication.view_of(row), None, None
    if row.get("published_version"):
        # The source's facts (and JVN's text) as they were published; only the decisions are new.
        before = store.publications.get(row["id"], row["published_version"])
        view = before.view | {k: row.get(k) for k in publication.DECISION_FIELDS}
        previous = {p.object_id: p for p in store.publications.pins(row["id"], row["published_version"])}
        published = store.objects.get(row["id"], row["published_version"], HUB)
        jvn = (extensions.prop(published.obj, "clinic", dict) or {}).get("jvn") if published else None
    version = publication.publish_version(store, view, source_report, source_version, actor, previous, jvn)
    placed = colls.matching(store, view, kev)
    for cid in placed:
        store.membership.place(cid, row["id"], version)
    store.advisories.decide(row["id"], status="published", published_source=source_version,
                            published_version=version, decided_at=utcnow())
    registers.match_advisory(store, row["id"], kev)  # the registers it touches, as published now
    return placed


BATCH = 500  # advisories a bulk publish writes in one transaction (its memory does not grow with the total)


def _ids(store: Store, refs: list[str]) -> list[str]:
    """The advisories named (full ids or 6+ characters of a UUID), each once, in order; NotFound
    for one that does not exist."""
    full = [r.strip() for r in refs if r.strip().startswith("report--") and len(r.strip()) == 44]
    known = {r["id"] for r in store.advisories.statuses(full)}
    out = [r.strip() if r.strip() in known else store.advisories.find(r)["id"] for r in refs]
    return list(dict.fromkeys(out))


def _by_origin(rows: list[dict]) -> dict[str, list[dict]]:
    """Advisory rows grouped by the origin of their source's objects."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(source_origin(r["source"]), []).append(r)
    return out


def _source_versions(store: Store, rows: list[dict]) -> dict:
    """advisory → the newest version of its source's report (ObjectVersion), read per source."""
    out = {}
    for origin, group in _by_origin(rows).items():
        latest = store.objects.latest([r["source_report"] for r in group], origin)
        out |= {r["id"]: latest[r["source_report"]] for r in group}
    return out


def _check_publishable(store: Store, ids: list[str]) -> None:
    """Every advisory publishable (not revoked here or by its source), before anything is written."""
    for chunk in chunks(ids, BATCH):
        rows = store.advisories.statuses(chunk)
        for r in rows:
            if r["status"] == "revoked":
                raise TriageError(f"{r['id']} is revoked; a revoked advisory is not published again")
        # Only the reports that mention revocation at all are read (and parsed): most never do.
        suspect = []
        for origin, group in _by_origin(rows).items():
            named = store.objects.mentioning([r["source_report"] for r in group], origin, '"revoked"')
            suspect += [r for r in group if r["source_report"] in named]
        versions = _source_versions(store, suspect)
        for r in suspect:
            if versions[r["id"]].obj.get("revoked") is True:
                raise TriageError(f"{r['id']} was revoked by its source ({r['source']}); it is not published")


def publish(store: Store, refs: list[str], actor: str, progress=None) -> list[dict]:
    """Publish advisories: each pinned and placed in every matching collection, matched to the
    registers, audited. Checked first (nothing is published when one cannot be), then written in
    batches of BATCH, each one transaction: an interrupted bulk publish leaves each advisory
    published or not, never half. `progress(done, total)` after each batch."""
    ids = _ids(store, refs)
    _check_publishable(store, ids)
    out = []
    kev = store.advisories.kev_cves()  # no publish changes it: read once, not per batch
    for n, chunk in enumerate(chunks(ids, BATCH), 1):
        with store.transaction():
            out += _publish_batch(store, chunk, actor, kev)
        if n & (n - 1) == 0 and len(out) < len(ids):
            # After batches 1, 2, 4, 8…, the statistics of what placement reads stay within 2× of the
            # truth (PostgreSQL read a grown collection through the wrong index: 10 ms a lookup, not 2).
            store.analyze("membership")
        if progress:
            progress(len(out), len(ids))
    return out


def _publish_batch(store: Store, ids: list[str], actor: str, kev: set[str]) -> list[dict]:
    found = store.advisories.get_many(ids)
    rows = [found[i] for i in ids]
    periods = store.deliveries.active_alert_periods(utcnow())
    sources = _source_versions(store, rows)
    views = [publication.view_of(r) for r in rows]
    published = publication.publish_versions(
        store, [(view, sources[r["id"]].obj, sources[r["id"]].modified, clinic.jvn_entry(store, r))
                for r, view in zip(rows, views, strict=True)], actor)
    filters = [(cid, colls.compiled(text)) for cid, text in store.collections.filters()]
    views = dict(zip(ids, colls.filter_view(views, kev), strict=True))
    placed = {r["id"]: [cid for cid, pred in filters if pred(views[r["id"]])] for r in rows}
    by_collection: dict[str, list] = {}
    for r in rows:
        version, pins, _report = published[r["id"]]
        for cid in placed[r["id"]]:
            by_collection.setdefault(cid, []).append((r["id"], version, pins, r["tlp_rank"]))
    for cid, placements in by_collection.items():
        store.membership.place_many(cid, placements)
    now = utcnow()
    store.advisories.decide_many([(r["id"], {"status": "published", "published_source": sources[r["id"]].modified,
                                             "published_version": published[r["id"]][0], "decided_at": now})
                                  for r in rows])
    registers.match_published(store, [(r, published[r["id"]][2]) for r in rows], kev)
    out, audit = [], []
    for r in rows:
        flash = bool(periods and placed[r["id"]] and effective_severity(r) in ("high", "critical")
                     and store.deliveries.queue_flash(r["id"], periods[0]["name"]))
        audit.append((r["id"], {"collections": placed[r["id"]], "previous_status": r["status"], "tlp": r["tlp"],
                                **({"flash": periods[0]["name"]} if flash else {})}))
        out.append({"id": r["id"], "collections": placed[r["id"]], "flash": flash})
    store.audit.add_many(actor, "publish", audit)
    if not actor.startswith(("auto-publish:", "ingest:")):  # an analyst has reviewed them
        for aid in store.facilities.alerted_before_review(ids):
            registers.reviewed(store, aid, "published", {"severity": effective_severity(found[aid])})
    return out


def reject(store: Store, refs: list[str], reason: str, actor: str) -> list[dict]:
    rows = _rows(store, refs)
    for r in rows:
        if r["status"] in ("published", "revoked"):
            raise TriageError(f"{r['id']} is {r['status']}: revoke a published advisory instead")
    with store.transaction():
        for r in rows:
            store.advisories.decide(r["id"], status="rejected", decided_at=utcnow(),
                                    notes=r["notes"] + [_note(actor, f"rejected: {reason}")])
            store.audit.add(actor, "reject", r["id"], {"reason": reason})
            registers.reviewed(store, r["id"], "rejected")  # the reason stays the secretariat's
    return [{"id": r["id"], "status": "rejected"} for r in rows]


def revoke(store: Store, refs: list[str], reason: str, actor: str) -> list[dict]:
    """A content-free `revoked: true` version goes to every collection that held any version."""
    rows = _rows(store, refs)
    for r in rows:
        if r["status"] != "published":
            raise TriageError(f"{r['id']} is {r['status']}: only published advisories are revoked (reject the others)")
    out = []
    with store.transaction():
        for r in rows:
            version = publication.tombstone(store, r, actor)
            holders = store.membership.holders(r["id"])
            for cid in holders:
                store.membership.place(cid, r["id"], version)
            store.advisories.decide(r["id"], status="revoked", published_version=version,
                                    notes=r["notes"] + [_note(actor, f"revoked: {reason}")], decided_at=utcnow())
            registers.match_advisory(store, r["id"])  # revoked: no longer matched
            store.audit.add(actor, "revoke", r["id"], {"reason": reason, "collections": holders})
            out.append({"id": r["id"], "collections": holders})
    return out


def revoked_by_source(store: Store, source_id: str, ids: list[str]) -> None:
    """An upstream revocation: a published advisory is revoked here too, one not yet published is
    rejected (never offered); each audited as the ingest's act."""
    actor, reason = f"ingest:{source_id}", f"revoked by its source {source_id}"
    rows = _rows(store, ids)
    live = [r["id"] for r in rows if r["status"] == "published"]
    pending = [r["id"] for r in rows if r["status"] == "new"]
    if live:
        revoke(store, live, reason, actor)
    if pending:
        reject(store, pending, reason, actor)


def _note(actor: str, text: str) -> dict:
    return {"time": utcnow(), "actor": actor, "text": text}


def check_tags(tags: list[str]) -> None:
    bad = [t for t in tags if not t.strip() or TAG_FORBIDDEN & set(t)]
    if bad:
        raise TriageError(f"tags are single words without quotes, backslashes or commas: {bad!r}")


def _tag_decisions(row: dict, add: list[str], remove: list[str]) -> dict:
    added = [t for t in row["tags_added"] if t not in remove] + [t for t in add if t not in row["tags_added"]]
    removed = [t for t in row["tags_removed"] if t not in add] + [
        t for t in remove if t in row["auto_tags"] and t not in row["tags_removed"]]
    return {"tags_added": added, "tags_removed": removed}


def republish(store: Store, advisory: str, actor: str) -> str:
    """A published advisory published again as it was (the same facts and decisions), with what the
    hub has added about it since (its exposure note). Returns the version."""
    row = store.advisories.get(advisory)
    if row is None or row["status"] != "published":
        raise TriageError(f"{advisory} is not published")
    _republish_row(store, row, store.advisories.kev_cves(), actor)
    return store.advisories.get(advisory)["published_version"]


def _after_decision(store: Store, before: dict, actor: str) -> dict:
    """Audit a change of the effective TLP, apply it to what is already published, and republish
    a published advisory whose published content changed."""
    after = store.advisories.get(before["id"])
    was, now = effective_severity(before), effective_severity(after)
    if SEVERITY_RANK.get(now, 0) < SEVERITY_RANK.get(was, 0):
        registers.reviewed(store, before["id"], "severity", {"from": was, "to": now})
    if after["tlp"] != before["tlp"]:
        store.audit.add(actor, "tlp", before["id"], {"from": before["tlp"], "to": after["tlp"], "by": "analyst"})
        if before["status"] in ("published", "revoked"):
            store.membership.refresh_advisory(before["id"])
    if after["status"] == "published" and publication.view_of(after) != publication.view_of(before):
        _republish_row(store, after, store.advisories.kev_cves(), actor)
    return store.advisories.get(before["id"])


def retag(store: Store, refs: list[str], add: list[str], remove: list[str], actor: str) -> list[dict]:
    check_tags(add)
    rows = _rows(store, refs)
    out = []
    with store.transaction():
        for r in rows:
            decisions = _tag_decisions(r, add, remove)
            if decisions == {"tags_added": r["tags_added"], "tags_removed": r["tags_removed"]}:
                out.append({"id": r["id"], "tags": r["tags"]})
                continue
            store.advisories.decide(r["id"], **decisions, decided_at=utcnow())
            store.audit.add(actor, "tag" if add else "untag", r["id"], {"added": add, "removed": remove})
            out.append({"id": r["id"], "tags": _after_decision(store, r, actor)["tags"]})
    return out


CLINIC_FIELDS = ("summary_ja", "action_ja", "summary_en", "action_en")
CLINIC_MAX = 2000


def clinic_text(current: dict, given: dict[str, str | None]) -> dict:
    """The analyst's text for clinics with the fields given (an empty string removes one): plain
    text, line breaks kept, other control characters refused."""
    out = dict(current or {})
    for k, v in given.items():
        if v is None:
            continue
        v = "\n".join(line.rstrip() for line in v.replace("\r\n", "\n").split("\n")).strip()
        if has_control(v):
            raise TriageError(f"--{k.replace('_', '-')} contains control characters")
        if len(v) > CLINIC_MAX:
            raise TriageError(f"--{k.replace('_', '-')} is {len(v)} characters; at most {CLINIC_MAX}")
        if v:
            out[k] = v
        else:
            out.pop(k, None)
    return {k: out[k] for k in CLINIC_FIELDS if k in out}


def triage(store: Store, ref: str, actor: str, *, tlp: str | None = None, severity: str | None = None,
           medical: bool | None = None, note: str | None = None,
           for_clinics: dict[str, str | None] | None = None) -> dict:
    r = store.advisories.find(ref)
    changes: dict = {}
    if for_clinics and any(v is not None for v in for_clinics.values()):
        text = clinic_text(r.get("clinic") or {}, for_clinics)
        if text != (r.get("clinic") or {}):
            changes["clinic"] = text
    if tlp is not None:
        changes["analyst_tlp"] = tlp_name(tlp)
    if severity is not None:
        if severity.lower() not in SEVERITIES:
            raise TriageError(f"unknown severity {severity!r} (use {', '.join(SEVERITIES)})")
        changes["severity"] = severity.lower()
    if medical is not None:
        changes["medical"] = medical
        # The decision replaces the suggestion.
        dropped = [colls.SUGGESTED] + ([] if medical else ["medical"])
        changes |= _tag_decisions(r, ["medical"] if medical else [], dropped)
    if note:
        changes["notes"] = r["notes"] + [_note(actor, note)]
    if not changes:
        raise TriageError("nothing to change: give --tlp, --severity, --medical/--not-medical, --note or "
                          "changed clinic text (--summary-ja, --action-ja, --summary-en, --action-en)")
    with store.transaction():
        store.advisories.decide(r["id"], **changes, decided_at=utcnow())
        audited = {k: v for k, v in changes.items() if k not in ("notes", "tags_added", "tags_removed", "clinic")}
        if "clinic" in changes:
            audited["clinic"] = {"from": r.get("clinic") or {}, "to": changes["clinic"]}
        if "analyst_tlp" in audited:
            audited["tlp"] = audited.pop("analyst_tlp")
        store.audit.add(actor, "triage", r["id"], audited | ({"note": note} if note else {}))
        return _after_decision(store, r, actor)


def auto_publish(store: Store, source: dict, ids: list[str]) -> list[str]:
    """The source's `auto_publish` rule (a filter) publishes matching new or changed advisories, at
    their effective TLP and with every decision the analyst made."""
    rule = (source.get("options") or {}).get("auto_publish")
    if not rule or not ids:
        return []
    pred = compile_filter(rule)
    rows = colls.filter_view(store.advisories.list(ids=ids), store.advisories.kev_cves())
    chosen = [r["id"] for r in rows if r["status"] in ("new", "published") and pred(r)]
    if chosen:
        publish(store, chosen, f"auto-publish:{source['id']}")
    return chosen


# The documented JSON view of an advisory (`advisories list/show --format json`): stable for scripts.
VIEW_FIELDS = ["id", "title", "source", "published", "modified", "stix_modified", "url", "identifiers",
               "cves", "cvss", "cpes", "tlp", "source_tlp", "analyst_tlp", "severity", "medical", "tags", "clinic",
               "status", "notes", "collections", "pending_update", "submitted_by", "lang", "medical_signals",
               "first_seen"]


def views(store: Store, rows: list[dict]) -> list[dict]:
    """Advisories as analysts and scripts read them: facts, decisions, the collections holding them,
    whether a published one has an unpublished upstream update, and the member that submitted it."""

    holders = store.membership.collections_of([r["id"] for r in rows])
    submissions = {s["id"]: s["id"].removeprefix("member-") for s in store.sources.list()
                   if s.get("defined_by") == MEMBER_SUBMISSIONS}
    out = []
    for r in rows:
        pending = r["status"] == "published" and bool(r.get("published_source")) and \
            r.get("published_source") != r.get("stix_modified")
        out.append({k: r.get(k) for k in VIEW_FIELDS}
                   | {"collections": holders.get(r["id"], []), "pending_update": pending,
                      "submitted_by": submissions.get(r["source"]), "epss": r.get("epss"),
                      "epss_percentile": r.get("epss_percentile")})
    return out


def needs_japanese(store: Store, rows: list[dict]) -> list[dict]:
    """The published advisories among `rows` that reach Japanese-reading subscribers (through a
    collection their member reads, or a queued flash alert) with no Japanese text: not written in
    Japanese, no `--summary-ja`/`--action-ja`, no JVN entry in the version published."""
    members = {seg["member"] for seg in store.subscribers.segments(None) if seg["lang"] == "ja"}
    readable = {c for m in members if (store.members.get(m) or {}).get("enabled")
                for c, (r, _w) in store.members.grants_of(m).items() if r}
    queued = {f["advisory"] for f in store.deliveries.pending_flashes()}
    holders = store.membership.collections_of([r["id"] for r in rows])
    out = []
    for r in rows:
        if r["status"] != "published" or not (r["id"] in queued or readable & set(holders.get(r["id"], []))):
            continue
        if r.get("lang") == "ja" or {"summary_ja", "action_ja"} & set(r.get("clinic") or {}):
            continue
        published = store.objects.get(r["id"], r["published_version"], HUB) if r.get("published_version") else None
        if published and (extensions.prop(published.obj, "clinic", dict) or {}).get("jvn"):
            continue
        out.append(r)
    return out


def view(store: Store, advisory_ref: str) -> dict:
    """One advisory's view with its description and every version held of its report."""
    row = store.advisories.find(advisory_ref)
    versions = {v.modified for v in store.objects.versions(row["id"])}
    own = store.objects.versions(row["source_report"], source_origin(row["source"]))
    versions |= {v.modified for v in own}
    # What CISA's KEV catalog says of it (the due date, ransomware use, notes, CWEs), as its source gave it.
    newest = max(own, key=lambda v: v.modified, default=None)
    kev = extensions.props(json.loads(newest.json), extensions.ADVISORY).get("kev") if newest else None
    return views(store, [row])[0] | {"description": row.get("description"), "versions": sorted(versions),
                                     "kev": kev if isinstance(kev, dict) else None}
