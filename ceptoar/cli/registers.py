"""Facilities, their registers (台帳) and the advisories matched to them."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.core.output import echo, emit, format_option, to_json

FACILITY_COLUMNS = ["id", "name", "facility_type", "prefecture", "member", "phone", "designations"]
REGISTER_COLUMNS = ["n", "category", "vendor", "product", "version", "cpe", "internet_exposed", "remote_maintenance",
                    "maintenance_vendor", "device"]
MATCH_COLUMNS = ["facility", "advisory", "title", "product", "confidence", "kev", "severity", "status"]
CONFIDENCE_CHOICE = click.Choice(["version", "product", "name"])


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise click.ClickException(f"{file} is not UTF-8 (byte {e.start}): save it as UTF-8") from None


def _report(file: Path, errors: list[tuple[int, str]]) -> None:
    for line, message in errors:
        echo(f"{file}:{line}: {message}", err=True)


def _imported(file: Path, res) -> None:
    """A CSV import's outcome: bad rows by line on stderr, the counts, exit status 1 when any was bad."""
    _report(file, res.errors)
    echo(f"{res.added} added, {res.updated} updated, {len(res.errors)} rejected")
    if res.errors:
        sys.exit(1)


@main.group()
def facilities() -> None:
    """Member facilities (clinics, hospitals, pharmacies) whose registers are matched to advisories."""


@facilities.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_hub
def facilities_import(hub: Hub, file: Path) -> None:
    """Import a CSV (facility_id,name,facility_type,prefecture,member[,phone,designations,municipality]);
    re-import updates. designations are |-separated: 特定機能病院, 地域医療支援病院, 基幹インフラ,
    特別社会基盤事業者, 自治体立."""
    from ceptoar.facilities import registers
    _imported(file, registers.import_facilities(hub.ready_store(), _read(file), hub.actor, str(file)))


@facilities.command("list")
@click.option("--member")
@format_option()
@pass_hub
def facilities_list(hub: Hub, member, fmt) -> None:
    """List facilities."""
    rows = hub.ready_store().facilities.list(member)
    if fmt != "json":
        rows = [r | {"designations": "|".join(r["designations"])} for r in rows]
    emit(rows, fmt, FACILITY_COLUMNS)


@facilities.command("show")
@click.argument("facility_id")
@pass_hub
def facilities_show(hub: Hub, facility_id) -> None:
    """One facility with its register's versions (JSON; the register itself: `inventory list`)."""
    from ceptoar.facilities import registers
    store = hub.ready_store()
    f = registers.facility(store, facility_id)
    echo(to_json(f | {"register_versions": store.facilities.register_versions(facility_id)}))


@facilities.command("update")
@click.argument("facility_id")
@click.option("--name")
@click.option("--facility-type", type=click.Choice(["hospital", "clinic", "dental", "pharmacy"]))
@click.option("--prefecture")
@click.option("--member")
@click.option("--phone")
@click.option("--designations", help='|-separated: 特定機能病院, 地域医療支援病院, 基幹インフラ, 特別社会基盤事業者, '
                                     '自治体立 ("" clears them).')
@click.option("--municipality", help="For a 自治体立 facility: the municipality that owns it (e.g. 横浜市).")
@pass_hub
def facilities_update(hub: Hub, facility_id, **changes) -> None:
    """Change a facility's facts; audited with the old and new values."""
    from ceptoar.facilities import registers
    _f, changed = registers.update_facility(hub.ready_store(), facility_id, changes, hub.actor)
    for k, (old, new) in changed.items():
        echo(f"{k}: {old!r} → {new!r}")


@main.group()
def inventory() -> None:
    """Facilities' registers (台帳) of systems and devices: TLP:RED, every read audited."""


@inventory.command("import")
@click.argument("facility_id")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--device", help="FILE is this device's CycloneDX SBOM (JSON): replaces that device's rows only.")
@pass_hub
def inventory_import(hub: Hub, facility_id, file: Path, device) -> None:
    """Import a facility's register from CSV (category,vendor,product,version,cpe,purl,aliases,
    internet_exposed,remote_maintenance,maintenance_vendor,note), or one device's CycloneDX SBOM.
    The register is replaced (the previous one kept as a version) and matched at once."""
    from ceptoar.facilities import registers
    res = registers.import_register(hub.ready_store(), facility_id, _read(file), hub.actor, device=device,
                                    origin=str(file))
    _report(file, res.errors)
    echo(f"{facility_id}: register version {res.version}, {res.rows} rows, {len(res.errors)} rejected; "
         f"{res.matches} advisories match")
    _send_targeted(hub)
    if res.errors:
        sys.exit(1)


def _send_targeted(hub: Hub) -> None:
    """Targeted alerts go at once when SMTP is configured (else they stay queued for `digest flash`)."""
    from ceptoar.cli.options import public_url, send_flashes
    from ceptoar.clinics.digest.delivery import SmtpConfig
    from ceptoar.core import settings

    if not hub.store.facilities.pending_count():
        return
    smtp, url = SmtpConfig.from_env(), settings.current().public_url
    if smtp and not url:
        echo("targeted alerts stay queued: set CEPTOAR_PUBLIC_URL so their links reach the hub", err=True)
        return
    send_flashes(hub.store, hub.actor, smtp, None, False, None, public_url(url))


@inventory.command("list")
@click.argument("facility_id")
@format_option()
@pass_hub
def inventory_list(hub: Hub, facility_id, fmt) -> None:
    """A facility's current register (the read is audited)."""
    from ceptoar.facilities import registers
    from ceptoar.facilities import vendors as parties
    store = hub.ready_store()
    rows = parties.with_vendors(store, registers.read_register(store, facility_id, hub.actor))
    emit(rows, fmt, REGISTER_COLUMNS + ["vendor_id"], widths={"product": 30, "cpe": 30})
    named = sorted({r["maintenance_vendor"] for r in rows if r.get("maintenance_vendor") and not r["vendor_id"]})
    if named and fmt == "table":
        echo(f"maintenance vendors not registered: {', '.join(named)} (`ceptoar vendors add … --alias NAME`)",
             err=True)


@main.group()
def matches() -> None:
    """Advisories matched to facilities' registers."""


@matches.command("list")
@click.option("--facility", "facility_id")
@click.option("--advisory")
@click.option("--member")
@click.option("--min-confidence", type=CONFIDENCE_CHOICE, default="name", show_default=True,
              help="version > product > name.")
@format_option()
@pass_hub
def matches_list(hub: Hub, facility_id, advisory, member, min_confidence, fmt) -> None:
    """Which published advisories touch which facility's systems, with confidence and reasons
    (they reveal registers: audited)."""
    from ceptoar.facilities import registers
    store = hub.ready_store()
    if advisory:
        advisory = store.advisories.find(advisory)["id"]
    rows = registers.match_views(store, hub.actor, facility_id=facility_id, advisory=advisory, member=member,
                                 min_confidence=min_confidence)
    emit(rows, fmt, MATCH_COLUMNS, widths={"advisory": 20, "title": 40, "product": 40})


@matches.command("refresh")
@pass_hub
def matches_refresh(hub: Hub) -> None:
    """Match every published advisory against every register again (after editing
    feeds/vendor_aliases.toml, or renormalizing sources)."""
    from ceptoar.facilities import registers
    store = hub.ready_store()
    with store.transaction():
        registers.refresh_all(store, progress=lambda m: echo(m, err=True))
        n = store.facilities.count_matches()  # for the person asking; an upgrade does not count
        store.audit.add(hub.actor, "matches-refresh", "*", {"matches": n})
    echo(f"{n} (facility, advisory) matches")


@matches.command("exposure")
@click.argument("advisory")
@click.option("--minimum", type=click.IntRange(1, 1000), help="Prefectures with fewer matched facilities are not "
              "named (default: the exposure_minimum setting, 5).")
@click.option("--min-confidence", type=CONFIDENCE_CHOICE, default="product", show_default=True)
@click.option("--publish", is_flag=True, help="Publish the counts to members as a TLP:GREEN note on the advisory.")
@format_option()
@pass_hub
def matches_exposure(hub: Hub, advisory, minimum, min_confidence, publish, fmt) -> None:
    """How many facilities run a product the advisory names, per prefecture (counts only)."""
    from ceptoar.clinics import exposure
    from ceptoar.core import settings
    store = hub.ready_store()
    advisory = store.advisories.find(advisory)["id"]
    minimum = minimum or settings.current().exposure_minimum
    if publish:
        c = exposure.publish(store, advisory, hub.actor, minimum, min_confidence)
    else:
        c = exposure.count(store, advisory, minimum, min_confidence)
        store.audit.add(hub.actor, "exposure-read", advisory, {"facilities": c["facilities"]})
    rows = [{"prefecture": p, "facilities": n} for p, n in c["prefectures"]]
    rows += [{"prefecture": f"{exposure.OTHER} (<{minimum})", "facilities": c["other"]}] if c["other"] else []
    if fmt == "json":
        emit(c | {"prefectures": rows}, fmt, [])
        return
    emit(rows, fmt, ["prefecture", "facilities"])
    echo(f"{c['facilities']} facilities" + (f"; published as note {c['note']}" if publish else ""), err=True)


@main.group()
def responses() -> None:
    """Facilities' answers about advisories matched to their registers."""


@responses.command("summary")
@click.option("--member")
@click.option("--advisory")
@click.option("--vendors", "by_vendor", is_flag=True,
              help="Per maintenance vendor instead: rows asked about, answered, open, oldest open, overdue fixes.")
@format_option()
@pass_hub
def responses_summary(hub: Hub, member, advisory, by_vendor, fmt) -> None:
    """Per advisory and association: facilities matched, answered, applicable, fixed, open, and
    the oldest open match (`--vendors`: per maintenance vendor)."""
    from ceptoar.clinics import responses as resp
    store = hub.ready_store()
    if advisory:
        advisory = store.advisories.find(advisory)["id"]
    if by_vendor:
        from datetime import UTC, datetime
        lines: dict[str, dict] = {}
        for r in store.vendors.request_summary(datetime.now(UTC).date().isoformat()):
            if advisory and r["advisory"] != advisory:
                continue
            v = lines.setdefault(r["vendor"], {"vendor": r["vendor"], "advisories": 0, "requests": 0, "answered": 0,
                                               "open": 0, "oldest_open": None, "overdue_fixes": 0})
            v["advisories"] += 1
            for k, src in (("requests", "rows"), ("answered", "answered"), ("open", "open"),
                           ("overdue_fixes", "overdue_fixes")):
                v[k] += r[src] or 0
            if r["oldest_open"] and (v["oldest_open"] is None or r["oldest_open"] < v["oldest_open"]):
                v["oldest_open"] = r["oldest_open"]
        store.audit.add(hub.actor, "responses-read", "vendors", {"rows": len(lines)})
        emit(list(lines.values()), fmt, ["vendor", "advisories", "requests", "answered", "open", "oldest_open",
                                         "overdue_fixes"])
        return
    rows = resp.summary(store, member=member, advisory=advisory)
    store.audit.add(hub.actor, "responses-read", member or advisory or "*", {"rows": len(rows)})
    emit(rows, fmt, resp.SUMMARY_COLUMNS, widths={"advisory": 20, "title": 40})


@responses.command("record")
@click.argument("facility_id")
@click.argument("advisory_id")
@click.option("--status", required=True, type=click.Choice(["not-applicable", "applicable", "fixed", "checking"]))
@click.option("--fixed-on", help="YYYY-MM-DD (with --status fixed).")
@click.option("--note")
@pass_hub
def responses_record(hub: Hub, facility_id, advisory_id, status, fixed_on, note) -> None:
    """Record an answer a facility gave by telephone or e-mail (audited, kept as history)."""
    from ceptoar.clinics import responses as resp
    from ceptoar.facilities import registers
    store = hub.ready_store()
    registers.facility(store, facility_id)
    advisory = store.advisories.find(advisory_id)["id"]
    resp.answer(store, facility_id, advisory, status, fixed_on=fixed_on, note=note, actor=hub.actor, via="analyst")
    echo(f"{facility_id} / {advisory}: {resp.ANSWERS[status]}")


VENDOR_COLUMNS = ["id", "name", "email", "phone", "aliases", "clearance"]


@main.group()
def vendors() -> None:
    """Maintenance vendors (保守業者) named by the registers' maintenance_vendor column."""


@vendors.command("add")
@click.argument("vendor_id")
@click.option("--name", required=True)
@click.option("--email", required=True)
@click.option("--phone")
@click.option("--alias", "aliases", multiple=True, help="Another name a register may use (repeatable).")
@pass_hub
def vendors_add(hub: Hub, vendor_id, name, email, phone, aliases) -> None:
    """Add a vendor (or redefine one: its clearance is kept)."""
    from ceptoar.facilities import vendors as parties
    new = parties.add(hub.ready_store(), {"id": vendor_id, "name": name, "email": email, "phone": phone,
                                          "aliases": list(aliases)}, hub.actor)
    echo(f"{'added' if new else 'updated'} vendor {vendor_id}")


@vendors.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_hub
def vendors_import(hub: Hub, file: Path) -> None:
    """Import a CSV (vendor_id,name,email,phone,aliases with aliases `|`-separated); re-import updates."""
    from ceptoar.facilities import vendors as parties
    _imported(file, parties.import_vendors(hub.ready_store(), _read(file), hub.actor, str(file)))


@vendors.command("list")
@format_option()
@pass_hub
def vendors_list(hub: Hub, fmt) -> None:
    """The vendors."""
    emit(hub.ready_store().vendors.list(), fmt, VENDOR_COLUMNS)


@vendors.command("show")
@click.argument("vendor_id")
@format_option(("json", "table", "csv"), default="json")
@pass_hub
def vendors_show(hub: Hub, vendor_id, fmt) -> None:
    """One vendor."""
    from ceptoar.facilities import vendors as parties
    v = parties.get(hub.ready_store(), vendor_id)
    if fmt == "json":
        echo(to_json(v))
    else:
        emit([v], fmt, VENDOR_COLUMNS + ["created", "updated"])


@vendors.command("remove")
@click.argument("vendor_id")
@pass_hub
def vendors_remove(hub: Hub, vendor_id) -> None:
    """Remove a vendor (register rows naming it become unresolved)."""
    from ceptoar.facilities import vendors as parties
    parties.remove(hub.ready_store(), vendor_id, hub.actor)
    echo(f"removed vendor {vendor_id}")


@vendors.command("unresolved")
@format_option()
@pass_hub
def vendors_unresolved(hub: Hub, fmt) -> None:
    """maintenance_vendor names in the registers that name no vendor, with how many rows and facilities
    use each (register them with `vendors add … --alias NAME`). The read is audited."""
    from ceptoar.facilities import vendors as parties
    store = hub.ready_store()
    rows = parties.unresolved(store)
    store.audit.add(hub.actor, "vendors-unresolved", "-", {"names": len(rows)})
    emit(rows, fmt, ["name", "rows", "facilities"])


@vendors.command("clearance")
@click.argument("vendor_id")
@click.argument("tlp", type=click.Choice(["CLEAR", "GREEN", "AMBER", "AMBER+STRICT"], case_sensitive=False))
@pass_hub
def vendors_clearance(hub: Hub, vendor_id, tlp) -> None:
    """The highest TLP of what this vendor may be told (default GREEN; never RED: registers are)."""
    from ceptoar.facilities import vendors as parties
    store = hub.ready_store()
    parties.get(store, vendor_id)
    with store.transaction():
        store.vendors.set_clearance(vendor_id, tlp.upper())
        store.audit.add(hub.actor, "vendor-clearance", vendor_id, {"tlp": tlp.upper()})
    echo(f"{vendor_id}: clearance TLP:{tlp.upper()}")


@vendors.command("send")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write each vendor's message as .eml here instead of sending (a dry run: nothing recorded).")
@click.option("--base-url", help="Where the answer links point (default: public_url / CEPTOAR_PUBLIC_URL).")
@pass_hub
def vendors_send(hub: Hub, out_dir, base_url) -> None:
    """Ask each vendor, in one message, about the matched rows it maintains that it was not asked
    about yet (the worker does this every tick). Each advisory carries the vendor's answer link."""
    from ceptoar.cli.options import public_url
    from ceptoar.clinics import vendor_requests
    from ceptoar.core import settings
    url = base_url or settings.current().public_url or (public_url(None) if out_dir else None)
    results = vendor_requests.send(hub.ready_store(), hub.actor, settings.current().smtp(), out_dir, base_url=url)
    if url is None and results:
        echo("no public_url (CEPTOAR_PUBLIC_URL or --base-url): the requests carry no answer link; vendors "
             "answer by phone or mail (`ceptoar vendors answer`)", err=True)
    for r in results:
        echo(f"{r.vendor}: {r.status}, {r.advisories} advisories, {r.facilities} facilities"
             + (f" ({r.detail})" if r.detail else ""))
    if not results:
        echo("nothing to ask any vendor")
    if any(r.status == "failed" for r in results):
        sys.exit(1)


@vendors.command("answer")
@click.argument("vendor_id")
@click.argument("advisory")
@click.option("--product", required=True, help="The product as the registers name it.")
@click.option("--version", help="Only the rows of this version (default: every version asked about).")
@click.option("--status", required=True, type=click.Choice(["not_affected", "affected", "fixed",
                                                            "under_investigation"]))
@click.option("--justification", help="For not_affected: component_not_present, vulnerable_code_not_present, "
                                      "vulnerable_code_not_in_execute_path, "
                                      "vulnerable_code_cannot_be_controlled_by_adversary, "
                                      "inline_mitigations_already_exist.")
@click.option("--fix-date", help="For affected: the planned fix (YYYY-MM-DD, not in the past).")
@click.option("--fixed-version", help="For fixed: the version that fixes it.")
@click.option("--note")
@click.option("--facility", "facilities", multiple=True, help="Only these facilities (repeatable; default: all "
                                                               "listed customers).")
@pass_hub
def vendors_answer(hub: Hub, vendor_id, advisory, product, version, status, justification, fix_date, fixed_version,
                   note, facilities) -> None:
    """Record a vendor's answer taken by phone, for the rows it was asked about."""
    from ceptoar.facilities import vendors as parties
    store = hub.ready_store()
    aid = store.advisories.find(advisory)["id"]
    n = parties.answer(store, vendor_id, aid, product=product, version=version, status=status,
                       justification=justification, fix_date=fix_date, fixed_version=fixed_version, note=note,
                       facilities=list(facilities), actor=hub.actor, via="cli")
    echo(f"{vendor_id}: {status} for {n} register row(s) of {aid}")


@vendors.command("requests")
@click.option("--vendor", "vendor_id")
@click.option("--open", "open_only", is_flag=True, help="Only requests with rows not answered yet.")
@format_option()
@pass_hub
def vendors_requests(hub: Hub, vendor_id, open_only, fmt) -> None:
    """What each vendor was asked, per advisory: rows, answered, open, the oldest open request, and
    planned fixes whose date has passed."""
    from datetime import UTC, datetime
    rows = hub.ready_store().vendors.request_summary(datetime.now(UTC).date().isoformat())
    rows = [r for r in rows if (not vendor_id or r["vendor"] == vendor_id) and (not open_only or r["open"])]
    emit(rows, fmt, ["vendor", "advisory", "rows", "answered", "open", "oldest_open", "overdue_fixes"],
         widths={"advisory": 44})
