"""Subscribers: clinic staff who receive digests by e-mail, imported by CSV or added one by one."""

from __future__ import annotations

from dataclasses import dataclass, field

from ceptoar.core.errors import CeptoarError
from ceptoar.core.files import csv_rows
from ceptoar.core.mail import AddressError, check_address, clean_name
from ceptoar.core.model import SYSTEM, tlp_name
from ceptoar.store import Store

COLUMNS = ("email", "name", "member", "frequency", "clearance", "lang", "facility")


class SubscriberError(CeptoarError, ValueError):
    pass


@dataclass
class ImportResult:
    added: int = 0
    updated: int = 0
    skipped_unsubscribed: int = 0  # opted out: never re-added by an import
    errors: list[tuple[int, str]] = field(default_factory=list)


def check(row: dict, members: set[str], facilities: dict[str, str] | None = None) -> dict:
    """A subscriber row checked; `facilities` (id → member) when the row may name a facility."""
    try:
        email = check_address(row.get("email") or "")
    except AddressError as e:
        raise SubscriberError(str(e)) from None
    member = (row.get("member") or "").strip()
    if member not in members:
        raise SubscriberError(f"unknown member {member!r} (see `ceptoar members list`)")
    frequency = (row.get("frequency") or "daily").strip().lower()
    if frequency not in ("daily", "weekly"):
        raise SubscriberError(f"frequency must be daily or weekly, not {frequency!r}")
    lang = (row.get("lang") or "ja").strip().lower()
    if lang not in ("ja", "en"):
        raise SubscriberError(f"lang must be ja or en, not {lang!r}")
    try:
        clearance = tlp_name(row.get("clearance") or "CLEAR")
    except ValueError as e:
        raise SubscriberError(str(e)) from None
    facility = (row.get("facility") or "").strip() or None
    if facility is not None and (facilities or {}).get(facility) != member:
        raise SubscriberError(f"unknown facility {facility!r} of member {member!r} (see `ceptoar facilities list`)")
    return {"email": email, "name": clean_name(row.get("name")), "member": member, "frequency": frequency,
            "clearance": clearance, "lang": lang, "facility": facility}


def import_csv(store: Store, text: str, actor: str = SYSTEM, origin: str = "-") -> ImportResult:
    """Import every good row (re-import updates by e-mail); bad rows are reported by line number.
    `origin`: where the rows came from (a file name), for the audit log."""
    result = ImportResult()
    reader = csv_rows(text, ("email", "member"), COLUMNS)
    members = {m["id"] for m in store.members.list()}
    facilities = {f["id"]: f["member"] for f in store.facilities.list()}
    good = []
    for line, row in reader:
        try:
            if None in row:
                raise SubscriberError("more fields than the header")
            good.append(check(row, members, facilities))
        except SubscriberError as e:
            result.errors.append((line, str(e)))
    with store.transaction():
        for sub in good:
            outcome = store.subscribers.upsert(sub)
            if outcome == "added":
                result.added += 1
            elif outcome == "updated":
                result.updated += 1
            else:
                result.skipped_unsubscribed += 1
        store.audit.add(actor, "subscribers-import", origin, {
            "added": result.added, "updated": result.updated, "skipped_unsubscribed": result.skipped_unsubscribed,
            "errors": len(result.errors)})
    return result


def add(store: Store, row: dict, actor: str = SYSTEM) -> str:
    """'added', 'updated', or 'unsubscribed' (the address opted out and stays out)."""
    sub = check(row, {m["id"] for m in store.members.list()}, {f["id"]: f["member"] for f in store.facilities.list()})
    with store.transaction():
        outcome = store.subscribers.upsert(sub)
        if outcome != "unsubscribed":
            store.audit.add(actor, f"subscriber-{'add' if outcome == 'added' else 'update'}", sub["email"])
        return outcome


def remove(store: Store, email: str, actor: str = SYSTEM) -> str:
    email = email.strip().lower()
    with store.transaction():
        if not store.subscribers.remove(email):
            raise SubscriberError(f"no subscriber {email!r}")
        store.audit.add(actor, "subscriber-remove", email)
    return email


def unsubscribe(store: Store, token: str, actor: str, via: str) -> str:
    """Stop the digests of the subscriber with this token (the link in every digest); its address."""
    with store.transaction():
        sub = store.subscribers.by_token(token)
        if sub is None:
            raise SubscriberError("unknown unsubscribe token")
        store.subscribers.unsubscribe(token)
        store.audit.add(actor, "unsubscribe", sub["email"], {"via": via})
    return sub["email"]


def resubscribe(store: Store, email: str, actor: str, reason: str) -> None:
    """Undo an opt-out, on the subscriber's own request; audited with the reason."""
    email = email.strip().lower()
    if store.subscribers.get(email) is None:
        raise SubscriberError(f"no subscriber {email!r}")
    if not reason.strip():
        raise SubscriberError("give the reason (e.g. the subscriber's request and its date)")
    with store.transaction():
        if not store.subscribers.resubscribe(email):
            raise SubscriberError(f"{email} is subscribed already")
        store.audit.add(actor, "resubscribe", email, {"reason": reason})
