"""Incidents and poster: reports from clinics and what they owe."""

from __future__ import annotations

from pathlib import Path

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.cli.options import JST_TIME, smtp_config, with_smtp
from ceptoar.output import echo, emit, format_option, to_json

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
@click.option("--detected-at", type=JST_TIME, help="When it was noticed (JST unless an offset is given; default now).")
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

    from ceptoar import incidents as inc_mod
    inc = inc_mod.report(hub.ready_store(), hub.actor, facility=facility, facility_type=facility_type,
                         prefecture=prefecture, member=member, summary=summary, detected_at=detected_at, vendor=vendor,
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
    echo(to_json(_incident_json(inc_mod.show(hub.ready_store(), incident_id, hub.actor))))


@incidents.command("notify")
@click.argument("incident_id")
@click.option("--to", "parties", multiple=True, type=click.Choice(["vendor", "mhlw", "prefecture"]),
              help="Repeatable; default: the vendor, and MHLW and the prefecture when the report is due.")
@with_smtp
@pass_hub
def incidents_notify(hub: Hub, incident_id, parties, smtp_host, smtp_port, smtp_user, starttls, rate, dry_run, out,
                     base_url) -> None:
    """Prepare (and send, or write as .eml) the notice to each party, in Japanese."""
    from ceptoar import incidents as inc_mod
    store = hub.ready_store()
    inc = inc_mod.find(store, incident_id)
    parties = list(parties) or ["vendor"] + (["mhlw", "prefecture"] if inc_mod.mhlw_due(inc) else [])
    smtp = smtp_config(smtp_host, smtp_port, smtp_user, starttls)
    for n in inc_mod.send_notices(store, inc, parties, hub.actor, smtp=smtp, out_dir=out, dry_run=dry_run):
        if n.how == "printed":
            echo(f"To: {n.address}\nSubject: {n.subject}\n\n{n.body}\n")
        echo(f"{n.party}: {n.how} ({n.address})", err=True)


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


