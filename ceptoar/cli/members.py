"""Members: association secretariats, their secrets, certificates and grants."""

from __future__ import annotations

from pathlib import Path

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.core.output import echo, emit, format_option

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
    from ceptoar.sharing import members as m
    new = m.add(hub.ready_store(), member_id, name, clearance, hub.actor, collection_titles)
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
    """Authenticate a member by a TLS client certificate that the proxy in front verified (see docs/members.md)."""
    from ceptoar.sharing import members as m
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
    m.set_certificate(store, member_id, fingerprint=fp, subject=subject, required=required and not clear,
                      actor=hub.actor)
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
    from ceptoar.sharing import members as m
    m.set_enabled(hub.ready_store(), member_id, False, hub.actor)
    echo(f"disabled {member_id}")


@members.command("enable")
@click.argument("member_id")
@pass_hub
def members_enable(hub: Hub, member_id: str) -> None:
    """Accept the member's credentials again."""
    from ceptoar.sharing import members as m
    m.set_enabled(hub.ready_store(), member_id, True, hub.actor)
    echo(f"enabled {member_id}")


@members.command("grant")
@click.argument("member_id")
@click.argument("collection_id")
@click.option("--read/--no-read", default=True, show_default=True)
@click.option("--write/--no-write", default=False, show_default=True)
@pass_hub
def members_grant(hub: Hub, member_id: str, collection_id: str, read: bool, write: bool) -> None:
    """Let a member read (and/or add to) a collection."""
    from ceptoar.sharing import members as m
    store = hub.ready_store()
    m.grant(store, member_id, collection_id, read, write, hub.actor)
    echo(f"{member_id} may {'read' if read else ''}{' and ' if read and write else ''}"
               f"{'write' if write else ''} {collection_id}")


@members.command("ungrant")
@click.argument("member_id")
@click.argument("collection_id")
@pass_hub
def members_ungrant(hub: Hub, member_id: str, collection_id: str) -> None:
    """Withdraw a member's grant on a collection."""
    from ceptoar.sharing import members as m
    m.ungrant(hub.ready_store(), member_id, collection_id, hub.actor)
    echo(f"{member_id} no longer has {collection_id}")


@members.command("secret")
@click.argument("member_id")
@pass_hub
def members_secret(hub: Hub, member_id: str) -> None:
    """Generate a new secret (printed once; only its salted hash is stored). The old one stops working."""
    from ceptoar.sharing import members as m
    store = hub.ready_store()
    secret = m.new_secret(store, member_id, hub.actor)
    echo(secret)
    echo(f"(new secret for {member_id}: shown once, store it now; HTTP Basic user {member_id!r}, "
               "or Authorization: Bearer <secret>)", err=True)


