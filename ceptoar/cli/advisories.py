"""Advisories: search, triage, publish, reject, revoke."""

from __future__ import annotations

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.cli.options import send_now, since_option, stamp
from ceptoar.core.model import cvss_label, headline_cvss
from ceptoar.core.output import echo, emit, format_option, progress_line, to_json
from ceptoar.publishing import triage
from ceptoar.store import Store

ADVISORY_COLUMNS = ["id", "source", "submitted_by", "published", "tlp", "severity", "status", "cves", "cvss", "tags",
                    "title"]

# --- advisories -------------------------------------------------------------------------------

@main.group()
def advisories() -> None:
    """Read back normalized advisories."""


STATUS_CHOICE = click.Choice(["new", "published", "rejected", "revoked", "all"])


def advisory_filters(default_status: str | None = "new"):
    """The selection options of `advisories list`, shared by the bulk forms of publish/reject/revoke."""
    options = [
        click.option("--status", type=STATUS_CHOICE, default=default_status, show_default=True),
        click.option("--source", "source_id"),
        click.option("--cve"),
        since_option("Published on or after this date or time (UTC unless it carries an offset)."),
        click.option("--tag"),
        click.option("--search", help="Substring of title, description or identifiers (Japanese too)."),
        click.option("--medical/--not-medical", default=None,
                     help="Medical relevance: the analyst's decision, else the suggestion."),
        click.option("--limit", type=click.IntRange(min=1), default=None),
    ]

    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


def _select(store: Store, status, source_id, cve, since, tag, search, medical, limit) -> list[dict]:
    return store.advisories.list(source=source_id, cve=cve, since=stamp(since) if since else None, tag=tag,
                                 status=status, search=search, medical=medical, limit=limit)


@advisories.command("list")
@format_option()
@advisory_filters()
@click.option("--needs-ja", is_flag=True, help="Published advisories that reach Japanese-reading subscribers with "
              "no Japanese text (write one with `advisories triage ID --summary-ja … --action-ja …`).")
@pass_hub
def advisories_list(hub: Hub, fmt: str, needs_ja: bool, **filters) -> None:
    """List advisories, newest first (default: those waiting for triage)."""
    store = hub.ready_store()
    if needs_ja:
        filters["status"] = "published"
    selected = _select(store, **filters)
    rows = triage.views(store, triage.needs_japanese(store, selected) if needs_ja else selected)
    if fmt == "table":  # the score the advisory ranks by, its version beside it; every score in JSON and CSV
        rows = [r | {"cvss": cvss_label(h) if (h := headline_cvss(r.get("cvss"))) else None} for r in rows]
    emit(rows, fmt, ADVISORY_COLUMNS,
         widths={"id": 20, "title": 46, "cves": 30, "cvss": 20, "tags": 24, "published": 25})


@advisories.command("show")
@click.argument("advisory_id")
@format_option(("json", "stix", "source"), default="json")
@pass_hub
def advisories_show(hub: Hub, advisory_id: str, fmt: str) -> None:
    """Show one advisory (full STIX id or a unique UUID prefix of 6+ characters). `stix`: the
    bundle as last published (as ingested while unpublished); `source`: as its source gave it."""
    from ceptoar.sharing.export import published_bundle, report_bundle

    store = hub.ready_store()
    row = store.advisories.find(advisory_id)
    if fmt == "stix":
        published = store.publications.latest([row["id"]]).get(row["id"])
        bundle = published_bundle(store, [(published, 0)]) if published else report_bundle(store, row["id"])
        echo(to_json(bundle))
        return
    if fmt == "source":
        echo(to_json(report_bundle(store, row["id"])))
        return
    echo(to_json(triage.view(store, row["id"])))


@advisories.command("tag")
@click.argument("advisory_id")
@click.argument("tags", nargs=-1, required=True)
@pass_hub
def advisories_tag(hub: Hub, advisory_id: str, tags: tuple[str, ...]) -> None:
    """Add tags (a published advisory gets a new STIX version)."""
    (r,) = triage.retag(hub.ready_store(), [advisory_id], list(tags), [], hub.actor)
    echo(f"{r['id']}: {', '.join(r['tags']) or '(no tags)'}")


@advisories.command("untag")
@click.argument("advisory_id")
@click.argument("tags", nargs=-1, required=True)
@pass_hub
def advisories_untag(hub: Hub, advisory_id: str, tags: tuple[str, ...]) -> None:
    """Remove tags."""
    (r,) = triage.retag(hub.ready_store(), [advisory_id], [], list(tags), hub.actor)
    echo(f"{r['id']}: {', '.join(r['tags']) or '(no tags)'}")


@advisories.command("triage")
@click.argument("advisory_id")
@click.option("--tlp", type=click.Choice(["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"], case_sensitive=False))
@click.option("--severity", type=click.Choice(["low", "medium", "high", "critical"], case_sensitive=False))
@click.option("--medical/--not-medical", default=None, help="Confirm or dismiss medical relevance.")
@click.option("--note", help="A note for the other analysts (kept, not published).")
@click.option("--summary-ja", help="What it is, in plain Japanese for clinic staff (shown first in digests).")
@click.option("--action-ja", help="What a clinic should do, in plain Japanese.")
@click.option("--summary-en", help="Plain-language summary for English-reading subscribers.")
@click.option("--action-en", help="What a clinic should do, in English.")
@format_option(("table", "json"))
@pass_hub
def advisories_triage(hub: Hub, advisory_id: str, tlp, severity, medical, note, summary_ja, action_ja, summary_en,
                      action_en, fmt: str) -> None:
    """Set TLP, severity, medical relevance, the text for clinics, or add a note. An empty text
    ("") removes it; a published advisory gets a new version."""
    store = hub.ready_store()
    text = {"summary_ja": summary_ja, "action_ja": action_ja, "summary_en": summary_en, "action_en": action_en}
    row = triage.triage(store, advisory_id, hub.actor, tlp=tlp, severity=severity, medical=medical, note=note,
                        for_clinics=text)
    emit(triage.views(store, [row]), fmt, ADVISORY_COLUMNS, widths={"title": 46})
    send_now(store, hub.actor, err=True)  # corrections of alerts sent before review


def _bulk(hub: Hub, ids: tuple[str, ...], filters: dict, verb: str, yes: bool) -> list[str]:
    """The advisories named, or those the filters select (after confirmation unless --yes)."""
    store = hub.ready_store()
    chosen_filters = {k: v for k, v in filters.items() if v is not None and k != "status"}
    if ids and chosen_filters:
        raise click.UsageError("give advisory ids or selection options, not both")
    if ids:
        return list(ids)
    if not chosen_filters:
        raise click.UsageError(f"name the advisories to {verb}, or select them (e.g. --source ID --medical)")
    rows = _select(store, **filters)
    if not rows:
        echo(f"no advisories match; nothing to {verb}", err=True)
        return []
    if not yes:
        for r in rows[:10]:
            echo(f"  {r['id']}  {(r['title'] or '')[:70]}", err=True)
        if len(rows) > 10:
            echo(f"  … and {len(rows) - 10} more", err=True)
        click.confirm(f"{verb.capitalize()} {len(rows)} advisories?", abort=True, err=True)
    return [r["id"] for r in rows]


bulk_options = [click.argument("advisory_ids", nargs=-1),
                click.option("--yes", is_flag=True, help="Do not ask for confirmation of a bulk selection.")]


def with_bulk(default_status: str):
    def deco(f):
        f = advisory_filters(default_status)(f)
        for opt in reversed(bulk_options):
            f = opt(f)
        return f
    return deco


@advisories.command("publish")
@with_bulk("new")
@pass_hub
def advisories_publish(hub: Hub, advisory_ids, yes: bool, **filters) -> None:
    """Publish advisories into every matching collection (ids, or the selection of `list`)."""
    ids = _bulk(hub, advisory_ids, filters, "publish", yes)
    results = triage.publish(hub.store, ids, hub.actor,
                             progress=lambda done, total: progress_line(f"published {done:,} of {total:,}")) \
        if ids else []
    for r in results:
        echo(f"published {r['id']} → {', '.join(r['collections']) or '(no matching collection)'}"
                   + (" [flash alert queued]" if r["flash"] else ""))
    if results:
        send_now(hub.store, hub.actor)


@advisories.command("reject")
@with_bulk("new")
@click.option("--reason", required=True)
@pass_hub
def advisories_reject(hub: Hub, advisory_ids, yes: bool, reason: str, **filters) -> None:
    """Reject advisories that should not reach members."""
    ids = _bulk(hub, advisory_ids, filters, "reject", yes)
    for r in triage.reject(hub.store, ids, reason, hub.actor) if ids else []:
        echo(f"rejected {r['id']}")
    send_now(hub.store, hub.actor)


@advisories.command("revoke")
@with_bulk("published")
@click.option("--reason", required=True)
@pass_hub
def advisories_revoke(hub: Hub, advisory_ids, yes: bool, reason: str, **filters) -> None:
    """Revoke published advisories: subscribers receive a `revoked: true` version."""
    ids = _bulk(hub, advisory_ids, filters, "revoke", yes)
    for r in triage.revoke(hub.store, ids, reason, hub.actor) if ids else []:
        echo(f"revoked {r['id']} in {', '.join(r['collections']) or '(no collection)'}")


