"""The command line: parse arguments, call one function, print. No SQL here."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import click

import getpass

from ceptoar import catalogue, triage
from ceptoar import collections as colls
from ceptoar.digest.delivery import DeliveryError, SmtpConfig, run_digest, run_flash
from ceptoar.model import parse_date, stix_time, to_utc
from ceptoar.output import clean, csv_cell, echo, emit, format_option, progress_line, to_json
from ceptoar.paths import project_file
from ceptoar.pipeline import KINDS, MEMBER_SUBMISSIONS, Limits, fetch_source, ingest_file
from ceptoar.sources.http import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT
from ceptoar.errors import CeptoarError
from ceptoar.files import child, private_dir, write_private
from ceptoar.leases import held
from ceptoar.model import TLP_ORDER, source_origin
from ceptoar.store import Store

SOURCE_COLUMNS = ["id", "kind", "enabled", "tlp", "last_fetched", "last_status", "last_error", "last_note", "url"]
ADVISORY_COLUMNS = ["id", "source", "submitted_by", "published", "tlp", "severity", "status", "cves", "cvss", "tags",
                    "title"]
ADVISORY_FIELDS = ["id", "title", "source", "published", "modified", "stix_modified", "url", "identifiers",
                   "cves", "cvss", "cpes", "tlp", "source_tlp", "analyst_tlp", "severity", "medical", "tags", "status",
                   "notes", "collections", "pending_update", "submitted_by", "lang", "medical_signals", "first_seen"]
TLP_CHOICES = ["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]
COLLECTION_COLUMNS = ["id", "uuid", "title", "filter", "advisories", "objects"]
AUDIT_COLUMNS = ["time", "actor", "action", "target", "details", "member", "http_status"]


class HubGroup(click.Group):
    """Turns expected failures into one line on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (CeptoarError, ValueError, sqlite3.IntegrityError, OSError) as e:
            raise click.ClickException(clean(str(e))) from None


class Hub:
    def __init__(self, db_path: str, actor: str):
        self.db_path = db_path
        self.actor = actor
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.db_path)
            if self._store.degraded:
                echo(f"warning: {self._store.degraded}", err=True)
        return self._store

    def ready_store(self) -> Store:
        self.store.require_initialized()
        return self.store


pass_hub = click.make_pass_decorator(Hub)


@click.group(cls=HubGroup)
@click.option("--db", "db_path", envvar="CEPTOAR_DB", default="ceptoar.db", show_default=True,
              type=click.Path(dir_okay=False), help="SQLite database (env CEPTOAR_DB).")
@click.option("--actor", envvar="CEPTOAR_ACTOR", default=None,
              help="Who acts, for the audit log (env CEPTOAR_ACTOR; default: the OS user).")
@click.version_option(package_name="ceptoar")
@click.pass_context
def main(ctx: click.Context, db_path: str, actor: str | None) -> None:
    """CEPTOAR hub (医療セプター): ingest, triage and share security advisories."""
    os.umask(0o077)  # the database, notices, digests and exports hold TLP:RED and secrets: owner only
    ctx.obj = Hub(db_path, actor or _os_user())


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@main.command()
@click.option("--sources", "sources_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Feed catalogue to load [default: feeds/sources.toml].")
@click.option("--collections", "collections_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Default collections [default: taxii_server/collections.toml].")
@pass_hub
def init(hub: Hub, sources_path: Path | None, collections_path: Path | None) -> None:
    """Create or upgrade the database and load the feed catalogue (idempotent)."""
    path = sources_path or project_file("feeds/sources.toml")
    defs = catalogue.load(path)
    coll_path = collections_path or project_file("taxii_server/collections.toml")
    coll_defs = colls.load_defaults(coll_path)
    store = hub.store
    from ceptoar.store import schema
    before = schema.version_of(store)
    version = store.migrate()
    if before is not None and before != version:
        store.audit.add(hub.actor, "schema-upgrade", str(hub.db_path), {"from": before, "to": version})
        echo(f"upgraded the database from schema {before} to {version} "
                   f"(a copy of the old one: {hub.db_path}.before-schema-{before})", err=True)
    added = sum(store.sources.upsert(d | {"defined_by": "catalogue"}) for d in defs)
    with store.transaction():
        new_colls = [c["id"] for c in coll_defs if store.collections.upsert(c | {"origin": "catalogue"})]
        for cid in new_colls:
            colls.backfill(store, cid)
    echo(f"database {hub.db_path} ready (schema {version}); {len(defs)} sources from {path} "
               f"({added} new, {len(defs) - added} updated); {len(coll_defs)} collections from {coll_path} "
               f"({len(new_colls)} new)")


# --- sources --------------------------------------------------------------------------------

@main.group()
def sources() -> None:
    """The feed catalogue and each source's fetch state."""


@sources.command("list")
@format_option()
@pass_hub
def sources_list(hub: Hub, fmt: str) -> None:
    """List sources with their last fetch outcome."""
    rows = [{k: r.get(k) for k in ("id", "name", "kind", "url", "enabled", "tlp", "lang", "interval", "options",
                                   "last_fetched", "last_status", "last_error", "last_note")}
            for r in hub.ready_store().sources.list()]
    emit(rows, fmt, SOURCE_COLUMNS, widths={"last_error": 40, "url": 60})


@sources.command("add")
@click.argument("source_id")
@click.argument("url")
@click.option("--kind", required=True, type=click.Choice(sorted([*KINDS, "taxii"])))
@click.option("--name")
@click.option("--tlp", default="CLEAR", show_default=True)
@click.option("--lang", default="ja", show_default=True)
@click.option("--interval", type=int, default=3600, show_default=True)
@click.option("--auto-publish", "auto_publish", help="Filter whose matches are published on arrival.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A source option (repeatable), e.g. --option password_env=PARTNER_TAXII_SECRET.")
@pass_hub
def sources_add(hub: Hub, source_id: str, url: str, kind: str, name: str | None, tlp: str, lang: str,
                interval: int, auto_publish: str | None, options: tuple[str, ...]) -> None:
    """Add a source (or redefine one added before)."""
    store = hub.ready_store()
    opts = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--option")
        opts[key.strip()] = int(value) if value.isdigit() else value
    d = catalogue.check_source({"id": source_id, "url": url, "kind": kind, "name": name, "tlp": tlp,
                                "lang": lang, "interval": interval, "auto_publish": auto_publish, "options": opts})
    new = store.sources.upsert(d | {"defined_by": "cli"}, keep_enabled=False)
    store.audit.add(hub.actor, "source-add" if new else "source-update", d["id"], {"url": url, "kind": kind})
    echo(f"{'added' if new else 'updated'} source {d['id']} ({kind}, TLP:{d['tlp']})")


def _set_enabled(hub: Hub, noun: str, oid: str, enabled: bool) -> None:
    """Enable or disable a source or a member, audited."""
    store = hub.ready_store()
    setter = store.sources.set_enabled if noun == "source" else store.members.set_enabled
    if not setter(oid, enabled):
        raise click.ClickException(f"no {noun} {oid!r} (see `ceptoar {noun}s list`)")
    store.audit.add(hub.actor, f"{noun}-{'enable' if enabled else 'disable'}", oid)
    echo(f"{'enabled' if enabled else 'disabled'} {oid}")


@sources.command("disable")
@click.argument("source_id")
@pass_hub
def sources_disable(hub: Hub, source_id: str) -> None:
    """Stop fetching a source (its advisories stay)."""
    _set_enabled(hub, "source", source_id, False)


@sources.command("enable")
@click.argument("source_id")
@pass_hub
def sources_enable(hub: Hub, source_id: str) -> None:
    """Fetch a source again."""
    _set_enabled(hub, "source", source_id, True)


# --- fetch and ingest -------------------------------------------------------------------------

def _limits(timeout: float, max_bytes: int) -> Limits:
    return Limits(timeout=timeout, max_bytes=max_bytes)


limit_options = [
    click.option("--timeout", type=float, default=DEFAULT_TIMEOUT, show_default=True, help="Seconds per request."),
    click.option("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, show_default=True, help="Body size cap."),
]


def with_limits(f):
    for opt in reversed(limit_options):
        f = opt(f)
    return f


FETCH_COLUMNS = ["source", "status", "new", "updated", "unchanged", "skipped", "error"]


@main.command()
@click.argument("source_ids", nargs=-1)
@format_option(("table", "json"))
@with_limits
@pass_hub
def fetch(hub: Hub, source_ids: tuple[str, ...], fmt: str, timeout: float, max_bytes: int) -> None:
    """Fetch the enabled sources (or those named) and ingest what changed.

    Exit status 0 when every source succeeded, 1 when any failed; the others are ingested anyway.
    """
    store = hub.ready_store()
    known = {r["id"]: r for r in store.sources.list()}
    unknown = [s for s in source_ids if s not in known]
    if unknown:
        raise click.ClickException(f"no source {', '.join(unknown)} (see `ceptoar sources list`)")
    rows = [known[s] for s in source_ids] if source_ids else [r for r in known.values() if r["enabled"]]
    results = []
    for i, row in enumerate(rows, 1):
        progress_line(f"[{i}/{len(rows)}] {row['id']}: fetching {row['url']}")
        res = fetch_source(store, row, _limits(timeout, max_bytes), progress=progress_line)
        detail = res.error or f"{res.new} new, {res.updated} updated, {res.unchanged} unchanged"
        progress_line(f"[{i}/{len(rows)}] {row['id']}: {res.status}: {detail}" + (f" ({res.note})" if res.note else ""))
        _warn(res)
        results.append(res)
    emit([r.as_dict() for r in results], fmt, FETCH_COLUMNS, widths={"error": 60})
    if any(r.status == "error" for r in results):
        sys.exit(1)


def _warn(res) -> None:
    """What a fetch skipped or dropped, one line each on stderr (the JSON output has them too)."""
    for w in res.warnings[:50]:
        echo(f"{res.source}: warning: {w}", err=True)
    if len(res.warnings) > 50:
        echo(f"{res.source}: … and {len(res.warnings) - 50} more warnings", err=True)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", "source_id", required=True, help="Source the file comes from (decides the format).")
@format_option(("table", "json"))
@with_limits
@pass_hub
def ingest(hub: Hub, file: Path, source_id: str, fmt: str, timeout: float, max_bytes: int) -> None:
    """Ingest a local file with the normalization of SOURCE's kind."""
    store = hub.ready_store()
    row = store.sources.get(source_id)
    if row is None:
        raise click.ClickException(f"no source {source_id!r} (add it with `ceptoar sources add`)")
    res = ingest_file(store, file, row, _limits(timeout, max_bytes), progress=progress_line)
    _warn(res)
    emit([res.as_dict()], fmt, FETCH_COLUMNS, widths={"error": 60})
    if res.status == "error":
        sys.exit(1)


# --- advisories -------------------------------------------------------------------------------

@main.group()
def advisories() -> None:
    """Read back normalized advisories."""


def _advisory_json(rows: list[dict], store: Store) -> list[dict]:
    holders = store.membership.collections_of([r["id"] for r in rows])
    submissions = {s["id"]: s["id"].removeprefix("member-") for s in store.sources.list()
                   if s.get("defined_by") == MEMBER_SUBMISSIONS}
    out = []
    for r in rows:
        pending = r["status"] == "published" and bool(r.get("published_source")) and \
            r.get("published_source") != r.get("stix_modified")
        out.append({k: r.get(k) for k in ADVISORY_FIELDS}
                   | {"collections": holders.get(r["id"], []), "pending_update": pending,
                      "submitted_by": submissions.get(r["source"])})
    return out


STATUS_CHOICE = click.Choice(["new", "published", "rejected", "revoked", "all"])


def advisory_filters(default_status: str | None = "new"):
    """The selection options of `advisories list`, shared by the bulk forms of publish/reject/revoke."""
    options = [
        click.option("--status", type=STATUS_CHOICE, default=default_status, show_default=True),
        click.option("--source", "source_id"),
        click.option("--cve"),
        click.option("--since", help="Published on or after this date (YYYY-MM-DD or ISO timestamp)."),
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
    since_utc = None
    if since:
        d = parse_date(since)
        if d is None:
            raise click.BadParameter(f"{since!r} is not a date (use YYYY-MM-DD)", param_hint="--since")
        since_utc = stix_time(d)
    return store.advisories.list(source=source_id, cve=cve, since=since_utc, tag=tag, status=status,
                                 search=search, medical=medical, limit=limit)


@advisories.command("list")
@format_option()
@advisory_filters()
@pass_hub
def advisories_list(hub: Hub, fmt: str, **filters) -> None:
    """List advisories, newest first (default: those waiting for triage)."""
    store = hub.ready_store()
    rows = _advisory_json(_select(store, **filters), store)
    emit(rows, fmt, ADVISORY_COLUMNS,
         widths={"id": 20, "title": 46, "cves": 30, "cvss": 20, "tags": 24, "published": 25})


@advisories.command("show")
@click.argument("advisory_id")
@format_option(("json", "stix", "source"), default="json")
@pass_hub
def advisories_show(hub: Hub, advisory_id: str, fmt: str) -> None:
    """Show one advisory (full STIX id or a unique UUID prefix of 6+ characters). `stix`: the
    bundle as last published (as ingested while unpublished); `source`: as its source gave it."""
    from ceptoar.export import published_bundle, report_bundle

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
    versions = {v.modified for v in store.objects.versions(row["id"])}
    versions |= {v.modified for v in store.objects.versions(row["source_report"], source_origin(row["source"]))}
    out = _advisory_json([row], store)[0] | {"description": row.get("description"), "versions": sorted(versions)}
    echo(to_json(out))


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
@format_option(("table", "json"))
@pass_hub
def advisories_triage(hub: Hub, advisory_id: str, tlp, severity, medical, note, fmt: str) -> None:
    """Set TLP, severity, medical relevance, or add a note."""
    store = hub.ready_store()
    row = triage.triage(store, advisory_id, hub.actor, tlp=tlp, severity=severity, medical=medical, note=note)
    emit(_advisory_json([row], store), fmt, ADVISORY_COLUMNS, widths={"title": 46})


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
    results = triage.publish(hub.store, ids, hub.actor) if ids else []
    for r in results:
        echo(f"published {r['id']} → {', '.join(r['collections']) or '(no matching collection)'}"
                   + (" [flash alert queued]" if r["flash"] else ""))
    if any(r["flash"] for r in results):
        _send_flashes(hub, SmtpConfig.from_env(), None, False, None, _base_url(None))


def _send_flashes(hub: Hub, smtp, out: Path | None, dry_run: bool, rate: float | None, base_url: str,
                  wait: float = 0.0) -> None:
    """Alert period: flash alerts go out at once when SMTP is configured (env CEPTOAR_SMTP_HOST).
    The queue is drained by one process at a time (a lease)."""
    store = hub.store
    pending = store.deliveries.pending_flashes()
    if not pending:
        return
    if smtp is None and out is None and not dry_run:
        echo(f"{len(pending)} flash alert(s) queued: set CEPTOAR_SMTP_HOST (or run `ceptoar digest flash "
             "--smtp-host HOST`) to send them", err=True)
        return
    with held(store, "flash-queue", "the flash-alert queue", wait):
        for f in store.deliveries.pending_flashes():  # read again under the lease
            res = run_flash(store, f["advisory"], smtp=smtp, out_dir=out, dry_run=dry_run, rate=rate,
                            base_url=base_url)
            if smtp and not dry_run:
                store.deliveries.mark_flash(f["advisory"], res.run)
            store.audit.add(hub.actor, "flash", f["advisory"], {"run": res.run, "sent": res.sent,
                                                                "failed": res.failed})
            echo(f"flash alert {res.run}: {res.sent} sent, {res.failed} failed, {res.written} written")


@advisories.command("reject")
@with_bulk("new")
@click.option("--reason", required=True)
@pass_hub
def advisories_reject(hub: Hub, advisory_ids, yes: bool, reason: str, **filters) -> None:
    """Reject advisories that should not reach members."""
    ids = _bulk(hub, advisory_ids, filters, "reject", yes)
    for r in triage.reject(hub.store, ids, reason, hub.actor) if ids else []:
        echo(f"rejected {r['id']}")


@advisories.command("revoke")
@with_bulk("published")
@click.option("--reason", required=True)
@pass_hub
def advisories_revoke(hub: Hub, advisory_ids, yes: bool, reason: str, **filters) -> None:
    """Revoke published advisories: subscribers receive a `revoked: true` version."""
    ids = _bulk(hub, advisory_ids, filters, "revoke", yes)
    for r in triage.revoke(hub.store, ids, reason, hub.actor) if ids else []:
        echo(f"revoked {r['id']} in {', '.join(r['collections']) or '(no collection)'}")


# --- collections ----------------------------------------------------------------------------

@main.group()
def collections() -> None:
    """Saved filters over published advisories (what TAXII members subscribe to)."""


@collections.command("add")
@click.argument("collection_id")
@click.option("--title", required=True)
@click.option("--description")
@click.option("--filter", "filter_text", required=True,
              help="e.g. 'medical and tlp <= GREEN', '(severity >= high or cvss >= 7) and not tag = noise'")
@pass_hub
def collections_add(hub: Hub, collection_id: str, title: str, description: str | None, filter_text: str) -> None:
    """Add a collection; published advisories that match enter it now."""
    store = hub.ready_store()
    c = colls.check(collection_id, title, filter_text, description)
    if store.collections.get(collection_id):
        raise click.ClickException(f"collection {collection_id!r} exists (remove it first to redefine it)")
    with store.transaction():
        store.collections.upsert(c | {"origin": "cli"})
        placed = colls.backfill(store, collection_id)
        store.audit.add(hub.actor, "collection-add", collection_id, {"filter": c["filter"], "advisories": placed})
    echo(f"added collection {collection_id} ({c['uuid']}); {placed} published advisories entered it")


@collections.command("list")
@format_option()
@pass_hub
def collections_list(hub: Hub, fmt: str) -> None:
    """List collections with their size."""
    emit(hub.ready_store().collections.list(), fmt, COLLECTION_COLUMNS, widths={"title": 30, "filter": 40})


@collections.command("show")
@click.argument("collection_id")
@format_option(("json", "table"), default="json")
@pass_hub
def collections_show(hub: Hub, collection_id: str, fmt: str) -> None:
    """Show one collection (by id or UUID)."""
    store = hub.ready_store()
    found = store.collections.list(collection_id)
    if not found:
        raise click.ClickException(f"no collection {collection_id!r}")
    c = found[0]
    if fmt == "json":
        echo(to_json(c))
    else:
        emit([c], fmt, COLLECTION_COLUMNS)


@collections.command("remove")
@click.argument("collection_id")
@pass_hub
def collections_remove(hub: Hub, collection_id: str) -> None:
    """Remove a collection and its membership (the advisories stay)."""
    store = hub.ready_store()
    with store.transaction():
        if not store.collections.remove(collection_id):
            raise click.ClickException(f"no collection {collection_id!r}")
        store.audit.add(hub.actor, "collection-remove", collection_id)
    echo(f"removed collection {collection_id}")


# --- audit ----------------------------------------------------------------------------------

@main.group()
def audit() -> None:
    """The append-only audit log of analyst actions and TAXII requests."""


@audit.command("list")
@click.option("--since", help="On or after this date or timestamp (UTC).")
@click.option("--actor")
@click.option("--action")
@click.option("--member")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="The newest N entries.")
@format_option()
@pass_hub
def audit_list(hub: Hub, since, actor, action, member, limit, fmt: str) -> None:
    """List audit entries, oldest first."""
    since_utc = None
    if since:
        d = parse_date(since)
        if d is None:
            raise click.BadParameter(f"{since!r} is not a date", param_hint="--since")
        since_utc = to_utc(d).strftime("%Y-%m-%dT%H:%M:%S")
    rows = hub.ready_store().audit.list(since=since_utc, actor=actor, action=action, member=member, limit=limit)
    emit(rows, fmt, AUDIT_COLUMNS, widths={"details": 60, "target": 30})


# --- members ----------------------------------------------------------------------------------

MEMBER_COLUMNS = ["id", "name", "clearance", "enabled", "secret_set", "certificate", "grants"]


@main.group()
def members() -> None:
    """Member associations: TAXII credentials, clearance and collection grants."""


@members.command("add")
@click.argument("member_id")
@click.option("--name", required=True)
@click.option("--clearance", required=True, type=click.Choice(["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"],
                                                              case_sensitive=False),
              help="The highest TLP this member may receive.")
@click.option("--collection-titles", type=click.Choice(["title", "name"]),
              help="What this member's clients see as each collection's title: its title (default) or its "
                   "name, for clients that select collections by title (OpenCTI's TAXII2 connector).")
@pass_hub
def members_add(hub: Hub, member_id: str, name: str, clearance: str, collection_titles: str | None) -> None:
    """Add a member (or change its name and clearance)."""
    from ceptoar import members as m
    store = hub.ready_store()
    new = m.add(store, member_id, name, clearance)
    if collection_titles:
        m.set_collection_titles(store, member_id, collection_titles)
    store.audit.add(hub.actor, "member-add" if new else "member-update", member_id,
                    {"clearance": clearance.upper()} | ({"collection_titles": collection_titles}
                                                        if collection_titles else {}))
    echo(f"{'added' if new else 'updated'} member {member_id} (clearance TLP:{clearance.upper()})")


@members.command("cert")
@click.argument("member_id")
@click.option("--fingerprint", help="SHA-256 fingerprint of the member's client certificate (hex, colons allowed).")
@click.option("--cert-file", type=click.Path(exists=True, dir_okay=False),
              help="The member's client certificate (PEM): its fingerprint is taken.")
@click.option("--subject", help="Subject DN as the TLS proxy reports it (nginx: RFC 2253, e.g. 'CN=jma,O=JMA,C=JP').")
@click.option("--required/--optional", default=False, show_default=True,
              help="Refuse this member's secret unless its certificate is presented.")
@click.option("--clear", is_flag=True, help="Forget the member's certificate.")
@pass_hub
def members_cert(hub: Hub, member_id: str, fingerprint: str | None, cert_file: str | None, subject: str | None,
                 required: bool, clear: bool) -> None:
    """Authenticate a member by a TLS client certificate that the proxy in front verified (see README)."""
    from ceptoar import members as m
    store = hub.ready_store()
    if clear and (fingerprint or cert_file or subject):
        raise click.UsageError("--clear forgets the certificate: give no --fingerprint, --cert-file or --subject")
    if not clear and not (fingerprint or cert_file or subject):
        raise click.UsageError("give --fingerprint, --cert-file or --subject (or --clear)")
    if fingerprint and cert_file:
        raise click.UsageError("give --fingerprint or --cert-file, not both")
    if cert_file:
        fp = m.certificate_fingerprint(Path(cert_file).read_text("ascii", errors="replace"))
    else:
        fp = m.fingerprint_of(fingerprint) if fingerprint else None
    m.set_certificate(store, member_id, fingerprint=fp, subject=subject, required=required and not clear)
    store.audit.add(hub.actor, "member-cert", member_id,
                    {"fingerprint": fp, "subject": subject, "required": required and not clear})
    if clear:
        echo(f"{member_id} authenticates by its secret only")
    else:
        echo(f"{member_id} authenticates by its client certificate"
             + (f" (SHA-256 {fp})" if fp else "") + (f" (subject {subject})" if subject else "")
             + ("; its secret alone is refused" if required else "; its secret still works"))


@members.command("list")
@format_option()
@pass_hub
def members_list(hub: Hub, fmt: str) -> None:
    """List members and their grants (never their secrets)."""
    rows = hub.ready_store().members.list()
    if fmt != "json":
        for r in rows:
            r["grants"] = [f"{g['collection']}:{'r' if g['read'] else ''}{'w' if g['write'] else ''}"
                           for g in r["grants"]]
    emit(rows, fmt, MEMBER_COLUMNS, widths={"grants": 50})


@members.command("disable")
@click.argument("member_id")
@pass_hub
def members_disable(hub: Hub, member_id: str) -> None:
    """Refuse the member's credentials from now on."""
    _set_enabled(hub, "member", member_id, False)


@members.command("enable")
@click.argument("member_id")
@pass_hub
def members_enable(hub: Hub, member_id: str) -> None:
    """Accept the member's credentials again."""
    _set_enabled(hub, "member", member_id, True)


@members.command("grant")
@click.argument("member_id")
@click.argument("collection_id")
@click.option("--read/--no-read", default=True, show_default=True)
@click.option("--write/--no-write", default=False, show_default=True)
@pass_hub
def members_grant(hub: Hub, member_id: str, collection_id: str, read: bool, write: bool) -> None:
    """Let a member read (and/or add to) a collection."""
    from ceptoar import members as m
    store = hub.ready_store()
    m.grant(store, member_id, collection_id, read, write)
    store.audit.add(hub.actor, "member-grant", member_id, {"collection": collection_id, "read": read, "write": write})
    echo(f"{member_id} may {'read' if read else ''}{' and ' if read and write else ''}"
               f"{'write' if write else ''} {collection_id}")


@members.command("ungrant")
@click.argument("member_id")
@click.argument("collection_id")
@pass_hub
def members_ungrant(hub: Hub, member_id: str, collection_id: str) -> None:
    """Withdraw a member's grant on a collection."""
    store = hub.ready_store()
    if not store.members.remove_grant(member_id, collection_id):
        raise click.ClickException(f"{member_id} has no grant on {collection_id}")
    store.audit.add(hub.actor, "member-ungrant", member_id, {"collection": collection_id})
    echo(f"{member_id} no longer has {collection_id}")


@members.command("secret")
@click.argument("member_id")
@pass_hub
def members_secret(hub: Hub, member_id: str) -> None:
    """Generate a new secret (printed once; only its salted hash is stored). The old one stops working."""
    from ceptoar import members as m
    store = hub.ready_store()
    secret = m.new_secret(store, member_id)
    store.audit.add(hub.actor, "member-secret", member_id)  # never the secret itself
    echo(secret)
    echo(f"(new secret for {member_id}: shown once, store it now; HTTP Basic user {member_id!r}, "
               "or Authorization: Bearer <secret>)", err=True)


# --- TAXII server -----------------------------------------------------------------------------

@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@pass_hub
def serve(hub: Hub, host: str, port: int) -> None:
    """Serve TAXII 2.1 for development (production: gunicorn, see README)."""
    from werkzeug.serving import run_simple

    from ceptoar.taxii.accesslog import mask_werkzeug
    from ceptoar.taxii.app import create_app_from_env
    hub.ready_store()
    mask_werkzeug()
    app = create_app_from_env(hub.db_path)
    echo(f"TAXII 2.1 discovery at http://{host}:{port}/taxii2/ (Ctrl-C to stop)", err=True)
    run_simple(host, port, app, threaded=True)


# --- subscribers, digests, alert periods ------------------------------------------------------

SUBSCRIBER_COLUMNS = ["email", "name", "member", "frequency", "clearance", "lang", "unsubscribed"]


@main.group()
def subscribers() -> None:
    """Clinic staff who receive digests by e-mail."""


@subscribers.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_hub
def subscribers_import(hub: Hub, file: Path) -> None:
    """Import a CSV (email,name,member,frequency,clearance,lang); re-import updates by e-mail."""
    from ceptoar.digest import subscribers as subs
    store = hub.ready_store()
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise click.ClickException(f"{file} is not UTF-8 (byte {e.start}): save the CSV as UTF-8") from None
    res = subs.import_csv(store, text)
    for line, message in res.errors:
        echo(f"{file}:{line}: {message}", err=True)
    store.audit.add(hub.actor, "subscribers-import", str(file), {"added": res.added, "updated": res.updated,
                                                                 "skipped_unsubscribed": res.skipped_unsubscribed,
                                                                 "errors": len(res.errors)})
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
@pass_hub
def subscribers_add(hub: Hub, email, member, name, frequency, clearance, lang) -> None:
    """Add (or update) one subscriber."""
    from ceptoar.digest import subscribers as subs
    store = hub.ready_store()
    outcome = subs.add(store, {"email": email, "member": member, "name": name, "frequency": frequency,
                               "clearance": clearance, "lang": lang})
    if outcome == "unsubscribed":
        echo(f"1 skipped: unsubscribed ({email.lower()} opted out; `ceptoar subscribers resubscribe` "
                   "only on their own request)")
        return
    store.audit.add(hub.actor, f"subscriber-{'add' if outcome == 'added' else 'update'}", email.lower())
    echo(f"{outcome} {email.lower()}")


@subscribers.command("resubscribe")
@click.argument("email")
@click.option("--reason", required=True, help="The subscriber's request (who asked, when, how).")
@pass_hub
def subscribers_resubscribe(hub: Hub, email: str, reason: str) -> None:
    """Undo an opt-out, on the subscriber's own request (audited)."""
    from ceptoar.digest import subscribers as subs
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
    store = hub.ready_store()
    if not store.subscribers.remove(email.strip().lower()):
        raise click.ClickException(f"no subscriber {email!r}")
    store.audit.add(hub.actor, "subscriber-remove", email.strip().lower())
    echo(f"removed {email.strip().lower()}")


@main.command()
@click.argument("token")
@pass_hub
def unsubscribe(hub: Hub, token: str) -> None:
    """Stop the digests of the subscriber with this unsubscribe token."""
    store = hub.ready_store()
    email = store.subscribers.unsubscribe(token)
    if email is None:
        raise click.ClickException("unknown unsubscribe token")
    store.audit.add(hub.actor, "unsubscribe", email)
    echo(f"unsubscribed {email}")


def _base_url(value: str | None) -> str:
    import os
    return value or os.environ.get("CEPTOAR_PUBLIC_URL", "http://127.0.0.1:8000")


smtp_options = [
    click.option("--smtp-host", envvar="CEPTOAR_SMTP_HOST", help="SMTP server (env CEPTOAR_SMTP_HOST)."),
    click.option("--smtp-port", envvar="CEPTOAR_SMTP_PORT", type=int, default=25, show_default=True),
    click.option("--smtp-user", envvar="CEPTOAR_SMTP_USER",
                 help="SMTP login; the password comes from env CEPTOAR_SMTP_PASSWORD only."),
    click.option("--starttls", is_flag=True, help="Upgrade the connection with STARTTLS."),
    click.option("--rate", type=float, help="At most N messages per second."),
    click.option("--dry-run", is_flag=True, help="Render and count; send nothing, record nothing."),
    click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                 help="Also write each message as DIR/<email>.eml (without --smtp-host: only write)."),
    click.option("--base-url", help="Public URL of the hub's web app, for unsubscribe links "
                                    "(env CEPTOAR_PUBLIC_URL; default http://127.0.0.1:8000)."),
]


def with_smtp(f):
    for opt in reversed(smtp_options):
        f = opt(f)
    return f


def _smtp(host, port, user, starttls):
    import os
    if not host:
        return None
    return SmtpConfig(host=host, port=port, user=user, password=os.environ.get("CEPTOAR_SMTP_PASSWORD"),
                      starttls=starttls)


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
    from datetime import UTC, datetime

    from ceptoar.digest.delivery import WINDOW, advisories_for
    from ceptoar.digest.render import render
    from ceptoar.model import tlp_name as _tlp
    store = hub.ready_store()
    if store.members.get(member) is None:
        raise click.ClickException(f"no member {member!r}")
    now = datetime.now(UTC)
    until = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    since = (now - WINDOW[frequency]).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rows, name = advisories_for(store, member, _tlp(clearance), since, until)
    if not rows:
        echo(f"(nothing published for {member} in the last {frequency} period: no digest would be sent)",
                   err=True)
        return
    r = render(store, rows, lang=lang, member_name=name, until=until,
               periods=store.deliveries.active_alert_periods(until))
    text = r.body.decode("utf-8").replace("\r\n", "\n")
    parts = text.split("Content-Transfer-Encoding: 8bit\n\n")
    echo(f"Subject: {r.subject}\n")
    echo(parts[2].rsplit("\n--", 1)[0] if as_html else parts[1].rsplit("\n--", 1)[0])


WAIT_OPTION = click.option("--wait", type=click.FloatRange(min=0), default=0, show_default=True, metavar="SECONDS",
                           help="When another run holds this work, wait up to SECONDS for it (else stop at once).")


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
    smtp = _smtp(smtp_host, smtp_port, smtp_user, starttls)
    if smtp is None and out is None and not dry_run:
        raise click.UsageError("give --smtp-host (or env CEPTOAR_SMTP_HOST), --out DIR, or --dry-run")
    try:
        res = run_digest(store, frequency, smtp=smtp, out_dir=out, dry_run=dry_run, rate=rate,
                         base_url=_base_url(base_url), progress=progress_line, wait=wait)
    except DeliveryError as e:
        store.audit.add(hub.actor, "digest-send", frequency, {"error": str(e)})
        raise click.ClickException(f"{e} — nothing was marked sent for the rest; rerun to continue") from None
    store.audit.add(hub.actor, "digest-send", res.run, {k: v for k, v in res.as_dict().items() if k != "errors"})
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
    """Send the queued flash alerts (normally sent at once when an advisory is published)."""
    store = hub.ready_store()
    smtp = _smtp(smtp_host, smtp_port, smtp_user, starttls)
    if not store.deliveries.pending_flashes():
        echo("no flash alerts queued")
        return
    try:
        _send_flashes(hub, smtp, out, dry_run, rate, _base_url(base_url), wait)
    except DeliveryError as e:
        raise click.ClickException(f"{e} — rerun to continue") from None


@main.group("alert-periods")
def alert_periods() -> None:
    """Periods of heightened vigilance (summits, state visits): flash alerts and digest notices."""


@alert_periods.command("add")
@click.argument("name")
@click.option("--start", required=True, help="Date and time (JST unless an offset is given).")
@click.option("--end", required=True)
@click.option("--note")
@pass_hub
def alert_periods_add(hub: Hub, name: str, start: str, end: str, note: str | None) -> None:
    """Add (or redefine) an alert period."""
    store = hub.ready_store()
    s, e = _jst_time(start, "--start"), _jst_time(end, "--end")
    if e <= s:
        raise click.BadParameter("the end must be after the start", param_hint="--end")
    store.deliveries.add_alert_period(name, s, e, note)
    store.audit.add(hub.actor, "alert-period-add", name, {"start": s, "end": e})
    echo(f"alert period {name}: {s} – {e} (UTC)")


def _jst_time(value: str, hint: str) -> str:
    from datetime import datetime, timedelta, timezone
    d = parse_date(value)
    if d is None:
        raise click.BadParameter(f"{value!r} is not a date and time", param_hint=hint)
    if not isinstance(d, datetime):
        d = datetime(d.year, d.month, d.day)
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone(timedelta(hours=9)))
    return to_utc(d).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@alert_periods.command("list")
@format_option()
@pass_hub
def alert_periods_list(hub: Hub, fmt: str) -> None:
    """List alert periods."""
    emit(hub.ready_store().deliveries.alert_periods(), fmt, ["name", "start", "end", "note"])


# --- exports ----------------------------------------------------------------------------------

@main.group()
def export() -> None:
    """STIX bundles and CSV of published advisories."""


export_options = [
    click.option("--collection", "collection_id", help="Only advisories placed in this collection."),
    click.option("--since", help="Published (or revoked) on or after this date."),
    click.option("--status", type=click.Choice(["published", "revoked", "all"]),
                 help="Live publications, revocations, or both [default: all for bundles, so consumers "
                      "apply revocations; published for CSV]."),
    click.option("--clearance", type=click.Choice(TLP_CHOICES, case_sensitive=False),
                 help="Only what a reader with this TLP clearance may receive."),
    click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File (default: stdout)."),
]


def with_export_options(f):
    for opt in reversed(export_options):
        f = opt(f)
    return f


@export.command("bundle")
@with_export_options
@pass_hub
def export_bundle(hub: Hub, collection_id, since, status, clearance, output) -> None:
    """A STIX 2.1 bundle of what was published: each advisory's latest publication (a revocation for
    a revoked one) and exactly the object versions pinned with it."""
    from ceptoar.export import published_bundle, to_text
    store = hub.ready_store()
    rank = TLP_ORDER.index(clearance.upper()) if clearance else None
    chosen = _export_selection(store, collection_id, since, status or "all", rank)
    text = to_text(published_bundle(store, chosen, rank))
    _write_export(output, text, len(chosen))
    store.audit.add(hub.actor, "export-bundle", str(output or "-"),
                    {"collection": collection_id, "advisories": len(chosen), "clearance": clearance})


@export.command("csv")
@with_export_options
@click.option("--bom", is_flag=True, help="Start with a UTF-8 byte order mark (for Excel).")
@pass_hub
def export_csv(hub: Hub, collection_id, since, status, clearance, output, bom) -> None:
    """One line per published advisory, as published (the same publications as `export bundle`).
    Cells a spreadsheet would evaluate as a formula start with an apostrophe."""
    import csv
    import io

    from ceptoar.export import CSV_FIELDS, csv_rows
    store = hub.ready_store()
    rank = TLP_ORDER.index(clearance.upper()) if clearance else None
    chosen = _export_selection(store, collection_id, since, status or "published", rank)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in csv_rows(store, chosen):
        writer.writerow([csv_cell(r.get(c)) for c in CSV_FIELDS])
    _write_export(output, ("\ufeff" if bom else "") + buf.getvalue(), len(chosen))
    store.audit.add(hub.actor, "export-csv", str(output or "-"),
                    {"collection": collection_id, "advisories": len(chosen), "clearance": clearance})


def _write_export(output: Path | None, text: str, n: int) -> None:
    if output:
        write_private(output, text)
        echo(f"wrote {n} advisories to {output} (readable by you only)", err=True)
    else:
        echo(text, nl=not text.endswith("\n"))


def _export_selection(store: Store, collection_id, since, status, rank):
    from ceptoar.export import selection
    cid = None
    if collection_id:
        c = store.collections.get(collection_id)
        if c is None:
            raise click.ClickException(f"no collection {collection_id!r}")
        cid = c["id"]
    since_utc = None
    if since:
        d = parse_date(since)
        if d is None:
            raise click.BadParameter(f"{since!r} is not a date", param_hint="--since")
        since_utc = to_utc(d).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return selection(store, collection=cid, since=since_utc, status=status, max_rank=rank)


# --- incidents ----------------------------------------------------------------------------------

INCIDENT_COLUMNS = ["id", "facility", "facility_type", "prefecture", "member", "status", "mhlw_due", "detected_at"]


@main.group()
def incidents() -> None:
    """Incident reports from member facilities (TLP:RED) and the relay to vendor, MHLW, prefecture."""


def _incident_json(inc: dict) -> dict:
    from ceptoar.incidents import mhlw_due, next_steps
    return inc | {"mhlw_due": mhlw_due(inc), "next_steps": next_steps(inc)}


@incidents.command("report")
@click.option("--facility", required=True)
@click.option("--facility-type", required=True, type=click.Choice(["hospital", "clinic", "dental", "pharmacy"]))
@click.option("--prefecture", required=True)
@click.option("--member", required=True, help="The association the facility belongs to.")
@click.option("--summary", required=True)
@click.option("--detected-at", help="When it was noticed (JST unless an offset is given; default now).")
@click.option("--vendor")
@click.option("--vendor-phone")
@click.option("--vendor-email")
@click.option("--service-impact", is_flag=True, help="The medical information system is impaired.")
@click.option("--personal-data-leak", is_flag=True, help="Personal data may have leaked.")
@click.option("--care-disrupted", is_flag=True, help="Care is disrupted.")
@format_option(("table", "json"))
@pass_hub
def incidents_report(hub: Hub, facility, facility_type, prefecture, member, summary, detected_at, vendor,
                     vendor_phone, vendor_email, service_impact, personal_data_leak, care_disrupted, fmt) -> None:
    """Record a suspected cyberattack at a facility and print what must be done next."""
    from datetime import datetime

    from ceptoar import incidents as inc_mod
    detected = datetime.fromisoformat(_jst_time(detected_at, "--detected-at").replace("Z", "+00:00")) \
        if detected_at else None
    inc = inc_mod.report(hub.ready_store(), hub.actor, facility=facility, facility_type=facility_type,
                         prefecture=prefecture, member=member, summary=summary, detected_at=detected, vendor=vendor,
                         vendor_phone=vendor_phone, vendor_email=vendor_email, service_impact=service_impact,
                         personal_data_leak=personal_data_leak, care_disrupted=care_disrupted)
    out = _incident_json(inc)
    if fmt == "json":
        echo(to_json(out))
        return
    echo(f"recorded {inc['id']} (TLP:RED){'; MHLW report due' if out['mhlw_due'] else ''}")
    for step in out["next_steps"]:
        echo(f"  次に: {step}")


@incidents.command("update")
@click.argument("incident_id")
@click.option("--status", type=click.Choice(["reported", "vendor-contacted", "reported-to-mhlw", "recovering",
                                             "closed"]))
@click.option("--note")
@click.option("--note-kind", type=click.Choice(["damage", "response", "recovery", "prevention", "general"]),
              default="general", show_default=True)
@pass_hub
def incidents_update(hub: Hub, incident_id, status, note, note_kind) -> None:
    """Move an incident forward and record damage, response, recovery, prevention notes."""
    from ceptoar import incidents as inc_mod
    inc = inc_mod.update(hub.ready_store(), incident_id, hub.actor, status=status, note=note, note_kind=note_kind)
    echo(f"{inc['id']}: {inc['status']} ({len(inc['notes'])} notes)")
    for step in inc_mod.next_steps(inc):
        echo(f"  次に: {step}")


@incidents.command("list")
@click.option("--status")
@click.option("--prefecture")
@click.option("--due", is_flag=True, help="Only those whose MHLW report is due and not yet made.")
@format_option()
@pass_hub
def incidents_list(hub: Hub, status, prefecture, due, fmt) -> None:
    """List incidents, newest first."""
    from ceptoar.incidents import STATUSES
    rows = [_incident_json(i) for i in hub.ready_store().incidents.list(status, prefecture)]
    if due:
        rows = [r for r in rows if r["mhlw_due"] and STATUSES.index(r["status"]) < STATUSES.index("reported-to-mhlw")]
    emit(rows, fmt, INCIDENT_COLUMNS, widths={"id": 20})


@incidents.command("show")
@click.argument("incident_id")
@pass_hub
def incidents_show(hub: Hub, incident_id) -> None:
    """Show one incident with its history, notes and notices (JSON)."""
    from ceptoar import incidents as inc_mod
    store = hub.ready_store()
    inc = inc_mod.find(store, incident_id)
    store.audit.add(hub.actor, "incident-show", inc["id"])
    echo(to_json(_incident_json(inc)))


@incidents.command("notify")
@click.argument("incident_id")
@click.option("--to", "parties", multiple=True, type=click.Choice(["vendor", "mhlw", "prefecture"]),
              help="Repeatable; default: the vendor, and MHLW and the prefecture when the report is due.")
@with_smtp
@pass_hub
def incidents_notify(hub: Hub, incident_id, parties, smtp_host, smtp_port, smtp_user, starttls, rate, dry_run, out,
                     base_url) -> None:
    """Prepare (and send, or write as .eml) the notice to each party, in Japanese."""
    import email.policy
    from email.message import EmailMessage
    from email.utils import make_msgid

    from ceptoar import incidents as inc_mod
    from ceptoar.digest.delivery import Mailer, _sender
    store = hub.ready_store()
    inc = inc_mod.find(store, incident_id)
    parties = list(parties) or ["vendor"] + (["mhlw", "prefecture"] if inc_mod.mhlw_due(inc) else [])
    smtp = _smtp(smtp_host, smtp_port, smtp_user, starttls)
    mailer = None
    if smtp and not dry_run:
        mailer = Mailer(smtp)
        try:
            mailer.connect()
        except DeliveryError as e:
            raise click.ClickException(str(e)) from None
    try:
        for party in parties:
            address, subject, body = inc_mod.notice(inc, party)
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = _sender(), address, subject
            msg["Message-ID"] = make_msgid(domain="ceptoar.local")
            msg["X-CEPTOAR-TLP"] = "RED"
            msg.set_content(body, cte="base64")  # Japanese lines run long: never 8bit here
            data = msg.as_bytes(policy=email.policy.SMTP)
            how = "printed"
            if out is not None:
                path = child(private_dir(out), f"{inc['id'][10:18]}-{party}.eml")
                write_private(path, data)
                how = f"written {path}"
            if mailer is not None:
                refusal = mailer.send(_sender(), address, data)
                if refusal:
                    raise click.ClickException(f"{party} ({address}) refused: {refusal}")
                how = "sent"
            if out is None and mailer is None:
                echo(f"To: {address}\nSubject: {subject}\n\n{body}\n")
            if not dry_run:
                inc_mod.record_notice(store, inc, party, address, how, hub.actor)
            echo(f"{party}: {how} ({address})", err=True)
    except DeliveryError as e:
        raise click.ClickException(str(e)) from None
    finally:
        if mailer:
            mailer.close()


@incidents.command("share")
@click.argument("incident_id")
@click.option("--tlp", required=True, type=click.Choice(["CLEAR", "GREEN", "AMBER", "AMBER+STRICT"],
                                                        case_sensitive=False))
@click.option("--summary", required=True, help="The anonymized lesson: no facility name, no personal data.")
@pass_hub
def incidents_share(hub: Hub, incident_id, tlp, summary) -> None:
    """Turn an anonymized lesson into a new advisory for triage."""
    from ceptoar import incidents as inc_mod
    aid = inc_mod.share(hub.ready_store(), incident_id, hub.actor, tlp=tlp, summary=summary)
    echo(f"lesson {aid} is waiting for triage (ceptoar advisories show {aid})")


@main.command()
@click.option("--facility", required=True)
@click.option("--vendor")
@click.option("--vendor-phone")
@click.option("--vendor-contact")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The HTML file to write (print it on A4).")
def poster(facility, vendor, vendor_phone, vendor_contact, output) -> None:
    """The in-hospital notice (院内掲示): whom to call after a suspected cyberattack."""
    from ceptoar.incidents import write_poster
    write_poster(output, facility=facility, vendor=vendor, vendor_phone=vendor_phone, vendor_contact=vendor_contact)
    echo(f"wrote {output}")


# --- demo -------------------------------------------------------------------------------------

@main.command()
@click.option("--port", type=int, default=0, help="Loopback port for the sample feeds (0: any free port).")
@click.option("--demo-db", type=click.Path(dir_okay=False, path_type=Path), default=Path("exports/demo.db"),
              show_default=True, help="The demo's own database (never the --db one).")
@click.option("--fresh/--keep", default=True, show_default=True, help="Start from an empty demo database.")
def demo(port: int, demo_db: Path, fresh: bool) -> None:
    """Offline demo: serve the sample feeds on loopback and run the whole pipeline on them."""
    from ceptoar.demo import run_demo

    sys.exit(run_demo(demo_db, port=port, fresh=fresh))


if __name__ == "__main__":
    main()

