"""What each facility answered about an advisory matched to its register, and what its
association sees of the answers.

Staff answer through a personal link in their digest: signed with the hub's key (HMAC-SHA256),
bound to the facility and the advisory, valid for `response_link_days`. Every answer is kept as
history and audited; the latest one is the facility's status for that advisory. Unanswered high
or critical matches older than `response_reminder_days` are reminded in the next digests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, date, datetime, timedelta

from ceptoar.core import settings
from ceptoar.core.errors import CeptoarError
from ceptoar.core.model import effective_severity
from ceptoar.core.output import has_control
from ceptoar.store import Store, utcnow

ANSWERS = {"not-applicable": "該当しない", "applicable": "該当する・対応中", "fixed": "対応済み",
           "checking": "保守業者に確認中"}
ANSWERS_EN = {"not-applicable": "Not applicable", "applicable": "Applicable, being handled", "fixed": "Fixed",
              "checking": "Checking with the maintenance vendor"}
SUMMARY_COLUMNS = ["advisory", "title", "member", "matched", "answered", "applicable", "fixed", "open", "oldest_open"]
NOTE_MAX = 500


class ResponseError(CeptoarError, ValueError):
    pass


def link_key(store: Store) -> bytes:
    """The hub's key for the personal links in mail (answers, a digest's whole list)."""
    return bytes.fromhex(store.meta("response_key"))


def sign(key: bytes, *parts) -> str:
    """The signature of a personal link: HMAC-SHA256 over its parts joined by '|' (each kind of link
    starts its parts differently, so none can stand for another), 24 bytes in URL-safe base64."""
    mac = hmac.new(key, "|".join(str(p) for p in parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")


def expiry(days: int | None = None, now: float | None = None) -> int:
    """When a link made now stops working (epoch seconds): `response_link_days` from now."""
    days = settings.current().response_link_days if days is None else days
    return int((now or time.time()) + days * 86400)


def linker(store: Store, base_url: str, *, days: int | None = None, now: float | None = None):
    """A function (facility, advisory, rank) → the personal answer link of a facility for an
    advisory, valid `response_link_days` (the key and the expiry read once, for a whole digest run).
    `rank`: the TLP the advisory reached the recipients at; the page shows the advisory only while
    it is served at that TLP or lower."""

    expires, key, base = expiry(days, now), link_key(store), base_url.rstrip("/")

    def link(facility: str, advisory: str, rank: int = 0) -> str:
        uuid = advisory.split("--", 1)[-1]
        return f"{base}/respond/{facility}/{uuid}/{expires}.{rank}/{sign(key, facility, advisory, expires, rank)}"

    return link


def check_ranked(store: Store, token: str, sig: str, *parts, now: float | None = None) -> tuple[str, int]:
    """('ok' | 'expired' (a genuine link past its time) | 'invalid' (tampered, unknown), the TLP
    rank the link was made for) of a link whose token is EXPIRES.RANK, signed over `parts`, then
    the expiry and the rank."""
    expires, _, rank = token.partition(".")
    if not expires.isdigit() or len(expires) > 12 or not rank.isdigit() or len(rank) > 1 or len(sig) > 64:
        return "invalid", 0
    if not hmac.compare_digest(sign(link_key(store), *parts, int(expires), int(rank)), sig):
        return "invalid", 0
    if int(expires) < (now or time.time()):
        return "expired", int(rank)
    return "ok", int(rank)


def check(store: Store, facility: str, uuid: str, token: str, sig: str, now: float | None = None) -> tuple[str, int]:
    """A facility's answer link: check_ranked() over the facility and the advisory."""
    return check_ranked(store, token, sig, facility, f"report--{uuid}", now=now)


def answer(store: Store, facility: str, advisory: str, status: str, *, fixed_on: str | None = None,
           note: str | None = None, actor: str = "facility", via: str = "web") -> dict:
    """Record one answer (kept as history, audited)."""
    if status not in ANSWERS:
        raise ResponseError(f"対応状況を選んでください (answer must be one of {', '.join(ANSWERS)})")
    if fixed_on:
        try:
            day = date.fromisoformat(fixed_on)
        except ValueError:
            raise ResponseError("日付は 2026-11-20 のように入力してください (the date is YYYY-MM-DD)") from None
        if day > datetime.now(UTC).date() + timedelta(days=1):
            raise ResponseError("対応済みの日付に未来の日付は入力できません (the date cannot be in the future)")
        fixed_on = day.isoformat()
    if status != "fixed":
        fixed_on = None
    note = " ".join((note or "").split())[:NOTE_MAX] or None
    if note and has_control(note, newlines=False):
        raise ResponseError("メモに使えない文字が含まれています (the note contains control characters)")
    row = {"facility": facility, "advisory": advisory, "status": status, "fixed_on": fixed_on, "note": note,
           "time": utcnow(), "actor": actor, "via": via}
    with store.transaction():
        store.facilities.add_response(row)
        store.audit.add(actor, "response", advisory, {"facility": facility, "status": status, "via": via})
    return row


REMINDERS_MAX = 20  # a digest reminds of the newest unanswered ones and counts the rest


def due_reminders(store: Store, facilities: list[str], days: int | None = None, now: datetime | None = None,
                  kev: set[str] | None = None) -> dict[str, list[str]]:
    """Per facility, the advisories matched to it more than `days` (`response_reminder_days`) ago,
    high or critical (or KEV-listed), published, never answered: newest first. One query for all the
    facilities' candidates; `kev`: the KEV-listed CVEs, when the caller has them (a digest run)."""

    days = settings.current().response_reminder_days if days is None else days
    now = now or datetime.now(UTC)
    before = (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S")
    old = store.facilities.unanswered(facilities, before)
    if not old:
        return {}
    kev = store.advisories.kev_cves() if kev is None else kev
    due = {fid: [a["id"] for a in rows if effective_severity(a) in ("high", "critical") or set(a["cves"]) & kev
                 or "kev" in a["tags"]] for fid, rows in old.items()}
    due = {fid: ids for fid, ids in due.items() if ids}
    # A maintenance vendor that answered every matched row not affected (or fixed) settles it: the
    # facility is not reminded.
    by_vendor = store.vendors.answers() if due else {}
    if by_vendor:
        settled: dict[tuple[str, str], bool] = {}
        wanted = sorted({a for ids in due.values() for a in ids})
        for m in store.facilities.matches(facilities=sorted(due), advisories=wanted):
            a = by_vendor.get((m["advisory"], m["facility"], m["n"]))
            key = (m["facility"], m["advisory"])
            settled[key] = settled.get(key, True) and a is not None and a["status"] in ("not_affected", "fixed")
        due = {fid: [a for a in ids if not settled.get((fid, a))] for fid, ids in due.items()}
    return {fid: ids for fid, ids in due.items() if ids}


def summary(store: Store, *, member: str | None = None, advisory: str | None = None) -> list[dict]:
    """Per advisory and association: facilities matched, answered, applicable, fixed, and the
    oldest open match (matched, and not answered as not applicable or fixed)."""
    latest = store.facilities.latest_responses()
    groups: dict[tuple[str, str], dict] = {}
    for m in store.facilities.matches(member=member, advisory=advisory):
        key = (m["advisory"], m["member"])
        g = groups.setdefault(key, {"advisory": m["advisory"], "member": m["member"], "facilities": set(),
                                    "answered": set(), "applicable": set(), "fixed": set(), "open": {}})
        f = m["facility"]
        g["facilities"].add(f)
        status = latest.get((f, m["advisory"]), {}).get("status")
        if status:
            g["answered"].add(f)
        if status in ("applicable", "checking"):
            g["applicable"].add(f)
        if status == "fixed":
            g["fixed"].add(f)
        if status not in ("not-applicable", "fixed"):
            g["open"][f] = min(g["open"].get(f, m["matched"]), m["matched"])
    out = []
    for (aid, mid), g in sorted(groups.items()):
        a = store.advisories.get(aid) or {}
        oldest = min(g["open"].values()) if g["open"] else None
        out.append({"advisory": aid, "title": a.get("title"), "member": mid, "matched": len(g["facilities"]),
                    "answered": len(g["answered"]), "applicable": len(g["applicable"]), "fixed": len(g["fixed"]),
                    "open": len(g["open"]), "oldest_open": oldest})
    return out
