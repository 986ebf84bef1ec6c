"""Maintenance vendors (保守業者) as parties: the companies that maintain a clinic's PACS, electronic
chart or VPN, named in its register's `maintenance_vendor` column. A vendor has an id, a name, an
address and phone, and aliases; a register's name for it resolves by id, name or alias, compared as
keys (Unicode NFKC, case folded, spaces and punctuation dropped, company words such as 株式会社 or
Co., Ltd. dropped at either end), so 「株式会社 メディ保守」, 「ﾒﾃﾞｨ保守」 and "Medi-Hoshu Co., Ltd." can all be
one vendor once its aliases say so. Names that resolve to no vendor are listed (`unresolved`) so the
secretariat can register the vendor.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime
from collections.abc import Callable
from dataclasses import dataclass, field

from ceptoar.core import facts
from ceptoar.core.errors import CeptoarError
from ceptoar.core.files import csv_rows
from ceptoar.core.mail import AddressError, check_address
from ceptoar.core.model import SYSTEM
from ceptoar.facilities import matching
from ceptoar.store import Store

VENDOR_COLUMNS = ("vendor_id", "name", "email", "phone", "aliases")
ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_ALIASES = 20
_JA_CORP = r"(?:株式会社|有限会社|合同会社|\(株\)|\(有\)|\(同\))"
_CORP_ENDS = re.compile(rf"^\s*{_JA_CORP}\s*|\s*{_JA_CORP}\s*$")


class VendorError(CeptoarError, ValueError):
    """A vendor definition that cannot be taken, or one that does not exist; one line for the user."""


@dataclass
class ImportResult:
    added: int = 0
    updated: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def key(name: str | None) -> str:
    """A vendor's name as compared: Japanese company words dropped at either end, then matching's
    vendor key (NFKC, case folded, punctuation and English company suffixes dropped)."""
    return matching.vendor_key(_CORP_ENDS.sub("", unicodedata.normalize("NFKC", name or "")))


def check_vendor(row: dict) -> dict:
    """One vendor from user input (the CLI or a CSV row), or VendorError saying what is wrong."""
    vid = (row.get("vendor_id") or row.get("id") or "").strip()
    if not ID_RE.fullmatch(vid):
        raise VendorError(f"vendor id {vid[:40]!r} must be lower-case letters, digits, '-' or '_' (up to 63)")
    try:
        name = " ".join((facts.text(row.get("name"), "name", 200) or "").split())
        email = check_address(row.get("email") or "")
        phone = facts.phone(row.get("phone"))
        given = row.get("aliases") or []
        given = given.split("|") if isinstance(given, str) else given
        aliases = [" ".join(facts.text(a, "alias", 200).split()) for a in given if a and a.strip()]
    except (AddressError, facts.FactError) as e:
        raise VendorError(str(e)) from None
    if not name or not key(name):
        raise VendorError("a vendor needs a name")
    if len(aliases) > MAX_ALIASES:
        raise VendorError(f"more than {MAX_ALIASES} aliases")
    return {"id": vid, "name": name, "email": email, "phone": phone, "aliases": list(dict.fromkeys(aliases))}


def _clash(store: Store, vendor: dict) -> str | None:
    """Another vendor already answering to one of this vendor's names, or None."""
    mine = {key(n) for n in [vendor["id"], vendor["name"], *vendor["aliases"]]} - {""}
    for other in store.vendors.list():
        if other["id"] == vendor["id"]:
            continue
        theirs = {key(n) for n in [other["id"], other["name"], *other["aliases"]]}
        shared = mine & theirs
        if shared:
            return f"the name {sorted(shared)[0]!r} already names vendor {other['id']!r}"
    return None


def add(store: Store, row: dict, actor: str = SYSTEM) -> bool:
    """Add (or redefine) a vendor; True when new. Two vendors never answer to the same name."""
    vendor = check_vendor(row)
    with store.transaction():
        clash = _clash(store, vendor)
        if clash:
            raise VendorError(clash)
        new = store.vendors.upsert(vendor)
        store.audit.add(actor, "vendor-add" if new else "vendor-update", vendor["id"],
                        {"name": vendor["name"], "aliases": len(vendor["aliases"])})
    return new


def import_vendors(store: Store, text: str, actor: str = SYSTEM, origin: str = "-") -> ImportResult:
    """A CSV of vendors (vendor_id,name,email,phone,aliases): good rows taken, bad ones by line."""
    result = ImportResult()
    for line, row in csv_rows(text, ("vendor_id", "name", "email"), VENDOR_COLUMNS):
        try:
            if None in row:
                raise VendorError("more fields than the header")
            if add(store, row, actor):
                result.added += 1
            else:
                result.updated += 1
        except VendorError as e:
            result.errors.append((line, str(e)))
    store.audit.add(actor, "vendors-import", origin, {"added": result.added, "updated": result.updated,
                                                       "errors": len(result.errors)})
    return result


def get(store: Store, vid: str) -> dict:
    v = store.vendors.get(vid)
    if v is None:
        raise VendorError(f"no vendor {vid!r} (see `ceptoar vendors list`)")
    return v


def remove(store: Store, vid: str, actor: str = SYSTEM) -> None:
    with store.transaction():
        get(store, vid)
        store.vendors.remove(vid)
        store.audit.add(actor, "vendor-remove", vid)


def resolver(store: Store) -> Callable[[str | None], str | None]:
    """A function from a register's maintenance_vendor to the vendor id it names, or None."""
    index: dict[str, str] = {}
    for v in store.vendors.list():
        for n in [v["id"], v["name"], *v["aliases"]]:
            index.setdefault(key(n), v["id"])
    return lambda name: index.get(key(name)) if name and key(name) else None


def with_vendors(store: Store, rows: list[dict]) -> list[dict]:
    """Register rows with `vendor_id`: the vendor their maintenance_vendor resolves to (None: unresolved)."""
    resolve = resolver(store)
    return [r | {"vendor_id": resolve(r.get("maintenance_vendor"))} for r in rows]


def unresolved(store: Store) -> list[dict]:
    """The maintenance_vendor names of every current register that name no vendor, with how many rows
    and facilities use each, most used first."""
    resolve = resolver(store)
    found = [{"name": name, "rows": rows, "facilities": fac}
             for name, rows, fac in store.vendors.maintained_names() if resolve(name) is None]
    return sorted(found, key=lambda u: (-u["rows"], u["name"]))


# --- answers -----------------------------------------------------------------------------------
STATUSES = ("not_affected", "affected", "fixed", "under_investigation")
# CSAF 2.0 / VEX justifications of not_affected (CSAF 2.0 §3.2.3.5, flags' labels).
JUSTIFICATIONS = ("component_not_present", "vulnerable_code_not_present", "vulnerable_code_not_in_execute_path",
                  "vulnerable_code_cannot_be_controlled_by_adversary", "inline_mitigations_already_exist")
STATUS_JA = {"not_affected": "該当しません", "affected": "該当します", "fixed": "修正済みです",
             "under_investigation": "調査中です"}
JUSTIFICATION_JA = {"component_not_present": "該当する部品を含まない",
                    "vulnerable_code_not_present": "脆弱なコードを含まない",
                    "vulnerable_code_not_in_execute_path": "脆弱なコードが実行されない",
                    "vulnerable_code_cannot_be_controlled_by_adversary": "攻撃者が脆弱なコードを操作できない",
                    "inline_mitigations_already_exist": "緩和策が組み込まれている"}


def answer(store: Store, vid: str, advisory: str, *, product: str, version: str | None = None, status: str,
           justification: str | None = None, fix_date: str | None = None, fixed_version: str | None = None,
           note: str | None = None, facilities: list[str] = (), actor: str = SYSTEM, via: str = "cli",
           today: str | None = None) -> int:
    """A vendor's answer for the rows it was asked about of one advisory: those of `product` (and
    `version`, "" for the rows without one, and the chosen `facilities`; else all its listed
    customers). Returns how many rows it answers; VendorError (nothing changed) for an unknown
    vendor, a status or justification outside the lists, a fix date in the past, or rows it was
    never asked about."""

    get(store, vid)
    if status not in STATUSES:
        raise VendorError(f"status {status!r} must be one of {', '.join(STATUSES)}")
    if status == "not_affected" and justification not in JUSTIFICATIONS:
        raise VendorError(f"not_affected needs a justification, one of {', '.join(JUSTIFICATIONS)}")
    if status != "not_affected" and justification:
        raise VendorError("a justification goes with not_affected only")
    if fix_date:
        try:
            planned = date.fromisoformat(fix_date)
        except ValueError:
            raise VendorError(f"fix date {fix_date[:20]!r} is not a date (YYYY-MM-DD)") from None
        if planned.isoformat() < (today or datetime.now(UTC).date().isoformat()):
            raise VendorError(f"fix date {fix_date} is in the past")
        if status != "affected":
            raise VendorError("a planned fix date goes with affected only")
    if status == "fixed" and not fixed_version:
        raise VendorError("fixed needs the version that fixes it (--fixed-version)")
    try:
        note = facts.text(note, "the note", 500)
        fixed_version = facts.text(fixed_version, "the fixed version", 100)
    except facts.FactError as e:
        raise VendorError(str(e)) from None
    rows = [r for r in store.vendors.requested_rows(vid, advisory)
            if r["product"] is not None and key(r["product"]) == key(product)
            and (version is None or (r["version"] or "").strip() == version.strip())
            and (not facilities or r["facility"] in facilities)]
    if not rows:
        raise VendorError(f"vendor {vid!r} was not asked about {product!r}"
                          + (f" {version}" if version else "") + " for this advisory"
                          + (" at those facilities" if facilities else ""))
    missing = set(facilities) - {r["facility"] for r in rows}
    if missing:
        raise VendorError(f"vendor {vid!r} was not asked about {product!r} at {', '.join(sorted(missing))}")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with store.transaction():
        store.vendors.put_answers([{"vendor": vid, "advisory": advisory, "facility": r["facility"], "n": r["n"],
                                    "status": status, "justification": justification, "fix_date": fix_date,
                                    "fixed_version": fixed_version, "note": note, "time": now, "actor": actor,
                                    "via": via} for r in rows])
        store.audit.add(actor, "vendor-answer", vid, {"advisory": advisory, "status": status, "rows": len(rows),
                                                      "facilities": len({r["facility"] for r in rows})})
    return len(rows)


def status_ja(a: dict) -> str:
    """A vendor's answer in plain Japanese: 「該当しません(該当する部品を含まない)」,
    「該当します(2026年12月20日に修正予定)」."""
    text = STATUS_JA[a["status"]]
    if a.get("justification"):
        text += f"({JUSTIFICATION_JA[a['justification']]})"
    elif a.get("fix_date"):
        y, m, d = a["fix_date"].split("-")
        text += f"({int(y)}年{int(m)}月{int(d)}日に修正予定)"
    elif a.get("fixed_version"):
        text += f"(修正版 {a['fixed_version']})"
    return text


def answer_ja(a: dict, vendor_name: str) -> str:
    """「保守業者(○○)の回答: 該当しません(該当する部品を含まない)」 / 「…: 該当します(2026年12月20日に修正予定)」."""
    return f"保守業者({vendor_name})の回答: {status_ja(a)}"
