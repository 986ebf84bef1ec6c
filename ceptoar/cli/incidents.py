"""Incidents and poster: reports from clinics and what they owe."""

from __future__ import annotations

from pathlib import Path

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.cli.options import JST_TIME, smtp_config, with_smtp
from ceptoar.core.output import echo, emit, format_option, to_json

# --- incidents ----------------------------------------------------------------------------------

INCIDENT_COLUMNS = ["id", "facility", "facility_type", "prefecture", "member", "status", "owed", "detected_jst"]
DUE_COLUMNS = ["id", "facility", "prefecture", "party", "label", "deadline_jst", "days_left", "state"]
PARTY_CHOICE = click.Choice(["vendor", "mhlw", "prefecture", "police", "ppc-preliminary", "ppc-final",
                             "acd-minister", "acd-nco", "municipality"])
CAUSE_CHOICE = click.Choice(["ransomware", "unauthorized-access", "malware", "insider", "ddos", "misdelivery", "loss",
                             "system-failure", "unknown", "other"])
DESIGNATION_HELP = "特定機能病院, 地域医療支援病院, 基幹インフラ, 特別社会基盤事業者 or 自治体立 (repeatable)."


def _more_facts(f):
    """The facts `report` and `edit` both take beyond the first report's essentials."""
    for opt, name, kw in (
            ("--contact-email", "contact_email", {"help": "The facility's contact address."}),
            ("--affected-systems", "affected_systems", {"help": "被害を受けたシステム・機器 (e.g. 電子カルテ 2台)."}),
            ("--ransom-demand", "ransom_demand", {"help": "身代金の要求: the ransom note's words, amount, contact."}),
            ("--encrypted-extension", "encrypted_extension", {"help": "暗号化されたファイルの拡張子 (e.g. .lockbit)."}),
            ("--intrusion-vector", "intrusion_vector", {"help": "侵入方法 (e.g. VPN 装置の脆弱性)."})):
        f = click.option(opt, name, **kw)(f)
    return click.option("--specified-computer/--no-specified-computer", "specified_computer", default=None,
                        help="Whether the computer hit is one of the facility's 特定重要電子計算機 (ACD law; "
                             "unknown counts as yes for a 特別社会基盤事業者).")(f)


@main.group()
def incidents() -> None:
    """Incident reports from member facilities (TLP:RED), the reports they owe (vendor, MHLW,
    prefecture, police, PPC) with their deadlines, and the notices."""


def _incident_json(inc: dict) -> dict:
    from datetime import datetime

    from ceptoar.core.model import JST
    from ceptoar.incidents.reports import STATUS_JA, mhlw_due, next_steps, obligations

    owed = obligations(inc)
    detected = datetime.fromisoformat(inc["detected_at"].replace("Z", "+00:00")).astimezone(JST)
    return inc | {"mhlw_due": mhlw_due(inc), "next_steps": next_steps(inc), "obligations": owed,
                  "owed": ", ".join(o["party"] for o in owed if o["state"] in ("pending", "overdue")),
                  "status_ja": STATUS_JA[inc["status"]], "detected_jst": f"{detected:%Y-%m-%d %H:%M}"}


def _notice(message: str) -> None:
    echo(f"note: {message}", err=True)


@incidents.command("report")
@click.option("--facility-id", help="A registered facility (`facilities list`): its name, type, prefecture, "
                                   "association and designations come from the register of facilities.")
@click.option("--facility", help="A facility the hub does not know (with --facility-type, --prefecture, --member).")
@click.option("--facility-type", type=click.Choice(["hospital", "clinic", "dental", "pharmacy"]))
@click.option("--prefecture")
@click.option("--member", help="The association the facility belongs to.")
@click.option("--designation", "designations", multiple=True, help=DESIGNATION_HELP)
@click.option("--municipality", help="For a 自治体立 facility: the municipality that owns it.")
@click.option("--summary", required=True)
@click.option("--detected-at", type=JST_TIME, help="When it was noticed (JST unless an offset is given; default now).")
@click.option("--vendor")
@click.option("--vendor-phone")
@click.option("--vendor-email")
@click.option("--service-impact", is_flag=True, help="The medical information system is impaired.")
@click.option("--personal-data-leak", is_flag=True, help="Personal data may have leaked.")
@click.option("--care-disrupted", is_flag=True, help="Care is disrupted.")
@click.option("--facility-phone", help="The facility's telephone number (e.g. 03-1234-5678).")
@click.option("--contact-person", help="Who at the facility the authorities should call.")
@click.option("--cause", type=CAUSE_CHOICE, help="What caused it, as far as known.")
@click.option("--crime-suspected/--no-crime-suspected", default=None,
              help="A crime is suspected (default: when the cause is ransomware, unauthorized access, malware or "
                   "an insider).")
@click.option("--records-affected", type=click.IntRange(min=0), help="How many people's data (本人の数).")
@_more_facts
@format_option(("table", "json"))
@pass_hub
def incidents_report(hub: Hub, facility_id, facility, facility_type, prefecture, member, designations, municipality,
                     summary, detected_at, vendor, vendor_phone, vendor_email, service_impact, personal_data_leak,
                     care_disrupted, facility_phone, contact_person, cause, crime_suspected, records_affected, fmt,
                     **more) -> None:
    """Record a suspected cyberattack at a facility and print the reports it owes, with deadlines,
    each labelled with its basis, and the acknowledgement for the facility."""

    from ceptoar.incidents import reports as inc_mod
    inc = inc_mod.report(hub.ready_store(), hub.actor, facility_id=facility_id, facility=facility,
                         facility_type=facility_type, prefecture=prefecture, member=member,
                         designations=list(designations), municipality=municipality, summary=summary,
                         detected_at=detected_at, vendor=vendor, vendor_phone=vendor_phone, vendor_email=vendor_email,
                         service_impact=service_impact, personal_data_leak=personal_data_leak,
                         care_disrupted=care_disrupted, facility_phone=facility_phone, contact_person=contact_person,
                         cause=cause, crime_suspected=crime_suspected, records_affected=records_affected,
                         on_notice=_notice, **{k: v for k, v in more.items() if v is not None})
    out = _incident_json(inc)
    subject, text = inc_mod.acknowledgement(inc)
    if fmt == "json":
        echo(to_json(out | {"acknowledgement": {"subject": subject, "text": text}}))
        return
    echo(f"recorded {inc['id']} (TLP:RED); reports owed: {out['owed'] or 'none'}")
    for step in out["next_steps"]:
        echo(f"  次に: {step}")
    echo(f"\n--- acknowledgement for the facility (`incidents acknowledge {inc['id'][10:18]} --to ADDR` sends it) ---")
    echo(text)


@incidents.command("edit")
@click.argument("incident_id")
@click.option("--summary")
@click.option("--prefecture")
@click.option("--facility-phone")
@click.option("--contact-person")
@click.option("--vendor")
@click.option("--vendor-phone")
@click.option("--vendor-email", help='"" removes it.')
@click.option("--service-impact/--no-service-impact", default=None)
@click.option("--care-disrupted/--no-care-disrupted", default=None)
@click.option("--personal-data-leak/--no-personal-data-leak", default=None)
@click.option("--crime-suspected/--no-crime-suspected", default=None)
@click.option("--records-affected", type=click.IntRange(min=0), help="本人の数.")
@click.option("--cause", type=CAUSE_CHOICE)
@click.option("--data-items", help="漏えい等した個人データの項目 (e.g. 氏名、診療録、保険証番号).")
@click.option("--secondary-harm", help="二次被害又はそのおそれ.")
@click.option("--individuals-response", help="本人への対応 (notifying the people concerned).")
@click.option("--public-announcement", help="公表 (whether and how it was made public).")
@click.option("--designations", help='|-separated designations ("" clears them): ' + DESIGNATION_HELP)
@click.option("--municipality")
@_more_facts
@pass_hub
def incidents_edit(hub: Hub, incident_id, **facts) -> None:
    """Correct or complete the recorded facts: each correction a new version, audited with the old
    and new values; the reports owed follow the corrected facts."""
    from ceptoar.incidents import reports as inc_mod
    inc, changed = inc_mod.edit(hub.ready_store(), incident_id, hub.actor, facts, on_notice=_notice)
    for k, (old, new) in changed.items():
        echo(f"{inc_mod.FACTS[k]} ({k}): {old!r} → {new!r}")
    out = _incident_json(inc)
    echo(f"reports owed: {out['owed'] or 'none'}")
    for step in out["next_steps"]:
        echo(f"  次に: {step}")


@incidents.command("reported")
@click.argument("incident_id")
@click.option("--to", "party", required=True, type=PARTY_CHOICE)
@click.option("--how", type=click.Choice(["telephone", "e-mail", "online-form", "in-person", "fax"]),
              default="telephone", show_default=True)
@click.option("--at", "at", type=JST_TIME, help="When it was made (JST unless an offset is given; default now).")
@click.option("--note", help="Whom you spoke to, a reference number.")
@pass_hub
def incidents_reported(hub: Hub, incident_id, party, how, at, note) -> None:
    """Record a report made outside the hub (by telephone, the PPC's online form…): it closes
    that obligation."""
    from ceptoar.incidents import reports as inc_mod
    inc = inc_mod.record_report(hub.ready_store(), incident_id, party, hub.actor, how=how, at=at, note=note)
    out = _incident_json(inc)
    echo(f"{inc['id']}: report to {party} recorded ({how}); still owed: {out['owed'] or 'none'}")


@incidents.command("update")
@click.argument("incident_id")
@click.option("--status", type=click.Choice(["reported", "vendor-contacted", "reported-to-mhlw", "recovering",
                                             "closed"]))
@click.option("--note")
@click.option("--note-kind", type=click.Choice(["damage", "response", "recovery", "prevention", "general"]),
              default="general", show_default=True)
@click.option("--reason", help="Why a status is set back, or why it closes with reports still owed (audited).")
@click.option("--force", is_flag=True, help="Close although reports are still owed (with --reason).")
@pass_hub
def incidents_update(hub: Hub, incident_id, status, note, note_kind, reason, force) -> None:
    """Move an incident forward (or back, with --reason) and record damage, response, recovery,
    prevention notes. Closing is refused while a report is owed, unless --force --reason."""
    from ceptoar.incidents import reports as inc_mod
    inc = inc_mod.update(hub.ready_store(), incident_id, hub.actor, status=status, note=note, note_kind=note_kind,
                         reason=reason, force=force)
    echo(f"{inc['id']}: {inc['status']} ({len(inc['notes'])} notes)")
    for step in inc_mod.next_steps(inc):
        echo(f"  次に: {step}")


@incidents.command("list")
@click.option("--status")
@click.option("--prefecture")
@click.option("--due", is_flag=True, help="The reports still owed (closed incidents too), soonest deadline first.")
@format_option()
@pass_hub
def incidents_list(hub: Hub, status, prefecture, due, fmt) -> None:
    """List incidents, newest first (times in JST); --due: one row per report owed."""
    from ceptoar.core.facts import PREFECTURES
    from ceptoar.core.facts import prefecture as canonical
    if prefecture and prefecture not in PREFECTURES:
        prefecture, notice = canonical(prefecture)
        _notice(notice)
    rows = [_incident_json(i) for i in hub.ready_store().incidents.list(status, prefecture)]
    if due:
        owed = [{"id": r["id"], "facility": r["facility"], "prefecture": r["prefecture"], "status": r["status"]} | o
                for r in rows for o in r["obligations"] if o["state"] in ("pending", "overdue")]
        emit(sorted(owed, key=lambda o: o["deadline"]), fmt, DUE_COLUMNS, widths={"id": 20})
        return
    emit(rows, fmt, INCIDENT_COLUMNS, widths={"id": 20})


@incidents.command("show")
@click.argument("incident_id")
@pass_hub
def incidents_show(hub: Hub, incident_id) -> None:
    """Show one incident with its history, notes, notices, corrections and the reports it owes,
    each with its state and deadline (JSON)."""
    from ceptoar.incidents import reports as inc_mod
    echo(to_json(_incident_json(inc_mod.show(hub.ready_store(), incident_id, hub.actor))))


@incidents.command("notify")
@click.argument("incident_id")
@click.option("--to", "parties", multiple=True, type=PARTY_CHOICE,
              help="Repeatable; default: every report still owed.")
@with_smtp
@pass_hub
def incidents_notify(hub: Hub, incident_id, parties, smtp_host, smtp_port, smtp_user, starttls, rate, dry_run, out,
                     base_url) -> None:
    """Prepare (and send, or write as .eml) the notice to each party, in Japanese. A notice sent
    records the report; one written or printed is recorded with `incidents reported` once made."""
    from ceptoar.incidents import reports as inc_mod
    store = hub.ready_store()
    inc = inc_mod.find(store, incident_id)
    parties = list(parties) or [o["party"] for o in inc_mod.open_obligations(inc)]
    if not parties:
        echo("no report is owed; name one with --to to prepare it anyway", err=True)
        return
    smtp = smtp_config(smtp_host, smtp_port, smtp_user, starttls)
    for n in inc_mod.send_notices(store, inc, parties, hub.actor, smtp=smtp, out_dir=out, dry_run=dry_run):
        if n.how == "printed":
            echo(f"To: {n.address}\nSubject: {n.subject}\n\n{n.body}\n")
        echo(f"{n.party}: {n.how} ({n.address})"
             + ("" if n.how == "sent" or dry_run else
                f"; once made: incidents reported {inc['id'][10:18]} --to {n.party} --how e-mail"), err=True)
        if n.party.startswith("ppc-") and (missing := inc_mod.missing_ppc_facts(inc)):
            echo(f"{n.party}: 未確認の項目があります; record them with incidents edit {inc['id'][10:18]} "
                 + " ".join(m for m in missing if m.startswith("--")) + " …"
                 + ("; " + next(m for m in missing if not m.startswith("--")) if any(
                     not m.startswith("--") for m in missing) else ""), err=True)


@incidents.command("acknowledge")
@click.argument("incident_id")
@click.option("--to", "address", help="The facility's address; without it (or without SMTP) the text is printed.")
@with_smtp
@pass_hub
def incidents_acknowledge(hub: Hub, incident_id, address, smtp_host, smtp_port, smtp_user, starttls, rate, dry_run,
                          out, base_url) -> None:
    """The acknowledgement for the facility: its reports owed with deadlines and their basis, and
    whom to call (with hours), sent, written as .eml (--out) or printed; audited."""
    from ceptoar.incidents import reports as inc_mod
    store = hub.ready_store()
    inc = inc_mod.find(store, incident_id)
    how = inc_mod.send_acknowledgement(store, inc, hub.actor, address=address,
                                       smtp=None if dry_run else smtp_config(smtp_host, smtp_port, smtp_user,
                                                                             starttls), out_dir=out)
    if how.how == "printed":
        echo(f"Subject: {how.subject}\n\n{how.body}")
    else:
        echo(f"acknowledgement: {how.how} ({how.address})", err=True)


@incidents.command("export")
@click.argument("incident_id")
@click.option("--form", type=click.Choice(["nco"]), default="nco", show_default=True,
              help="nco: the National Cybersecurity Office's unified incident report (共通様式).")
@click.option("--variant", type=click.Choice(["ransomware", "ddos"]), help="Default: from the recorded cause.")
@click.option("--format", "fmt", type=click.Choice(["xlsx", "json"]), default="xlsx", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write (xlsx needs one; json without it is printed).")
@pass_hub
def incidents_export(hub: Hub, incident_id, form, variant, fmt, output) -> None:
    """Fill the NCO's unified incident report from the record: the items the record does not hold
    are left blank and listed, never invented. Audited (TLP:RED leaves the hub)."""
    from ceptoar.incidents import nco_form
    from ceptoar.incidents import reports as inc_mod
    store = hub.ready_store()
    inc = inc_mod.find(store, incident_id)
    chosen = nco_form.variant_of(inc, variant)
    rows = nco_form.items(inc, chosen)
    if fmt == "xlsx" and output is None:
        raise click.UsageError("an xlsx needs -o FILE")
    if fmt == "xlsx":
        nco_form.write_xlsx(output, inc, chosen, rows)
    else:
        doc = to_json({"form": nco_form.VARIANTS[chosen], "variant": chosen, "incident": inc["id"], "tlp": "RED",
                       "items": rows})
        if output is None:
            echo(doc)
        else:
            from ceptoar.core.files import write_private
            write_private(output, doc + "\n")
    store.audit.add(hub.actor, "incident-export", inc["id"], {"form": form, "variant": chosen, "format": fmt})
    blank = [f"{r['section']} / {r['item']}" for r in rows if r["value"] is None]
    if output is not None:
        echo(f"wrote {output} ({nco_form.VARIANTS[chosen]}: {len(rows) - len(blank)} of {len(rows)} items filled)")
    if blank:
        echo(f"not in the record, left blank ({len(blank)}); record them with `incidents edit` or "
             "`incidents update --note` where the hub keeps them:", err=True)
        for b in blank:
            echo(f"  - {b}", err=True)


@incidents.command("share")
@click.argument("incident_id")
@click.option("--tlp", required=True, type=click.Choice(["CLEAR", "GREEN", "AMBER", "AMBER+STRICT"],
                                                        case_sensitive=False))
@click.option("--summary", required=True, help="The anonymized lesson: no facility name, no personal data.")
@pass_hub
def incidents_share(hub: Hub, incident_id, tlp, summary) -> None:
    """Turn an anonymized lesson into a new advisory for triage."""
    from ceptoar.incidents import reports as inc_mod
    aid = inc_mod.share(hub.ready_store(), incident_id, hub.actor, tlp=tlp, summary=summary)
    echo(f"lesson {aid} is waiting for triage (ceptoar advisories show {aid})")


@main.command()
@click.option("--facility", required=True)
@click.option("--vendor")
@click.option("--vendor-phone")
@click.option("--vendor-contact")
@click.option("--member", help="The facility's association: its emergency desk, where it has one.")
@click.option("--prefecture", help="The facility's prefecture: its police cyber-crime desk.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The HTML file to write (print it on A4).")
def poster(facility, vendor, vendor_phone, vendor_contact, member, prefecture, output) -> None:
    """The in-hospital notice (院内掲示): whom to call after a suspected cyberattack, and at night."""
    from ceptoar.core.facts import prefecture as canonical
    from ceptoar.incidents.poster import write_poster
    pref = canonical(prefecture)[0] if prefecture else None
    write_poster(output, facility=facility, vendor=vendor, vendor_phone=vendor_phone, vendor_contact=vendor_contact,
                 member=member, prefecture=pref)
    echo(f"wrote {output}")


