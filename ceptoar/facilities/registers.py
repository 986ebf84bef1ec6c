"""Facilities and their registers (台帳) of systems and devices, and the matching of published
advisories against them (ceptoar.facilities.matching).

Registers are TLP:RED: they tell an attacker what a clinic runs. They are read only by the
facility's own digest block and by analysts' commands, every read audited; never by TAXII, exports
or other facilities' digests. Matching runs when an advisory is published (or republished, or
revoked) and when a register is imported, each time for that advisory or that facility alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ceptoar.core import facts
from ceptoar.core.errors import CeptoarError
from ceptoar.core.facts import FACILITY_TYPES
from ceptoar.core.files import csv_rows
from ceptoar.core.model import HUB, SYSTEM, effective_severity, source_origin
from ceptoar.facilities import matching
from ceptoar.facilities.vendors import answer_ja as vendor_answer_ja
from ceptoar.store import Store, chunks
from ceptoar.store.registers import signature

FACILITY_COLUMNS = ("facility_id", "name", "facility_type", "prefecture", "member", "phone", "designations",
                    "municipality")
REGISTER_COLUMNS = ("category", "vendor", "product", "version", "cpe", "purl", "aliases", "internet_exposed",
                    "remote_maintenance", "maintenance_vendor", "note")
CATEGORIES = ("電子カルテ", "PACS", "レセコン", "VPN装置", "ルータ", "ファイアウォール", "サーバOS", "端末OS",
              "医療機器", "その他")
YES = {"yes", "y", "true", "1", "はい", "有", "あり"}
NO = {"no", "n", "false", "0", "いいえ", "無", "なし", ""}
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_ROWS = 5000


class RegisterError(CeptoarError, ValueError):
    pass


@dataclass
class ImportResult:
    added: int = 0
    updated: int = 0
    rows: int = 0
    version: int | None = None
    matches: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def _text(value: str | None, what: str, limit: int = 200) -> str | None:
    try:
        v = facts.text(value, what, limit)
    except facts.FactError as e:
        raise RegisterError(str(e)) from None
    return v.replace("\n", " ") if v else None


# --- facilities -----------------------------------------------------------------------------------

def check_facility(row: dict, members: set[str]) -> dict:
    fid = (row.get("facility_id") or "").strip()
    if not _ID.fullmatch(fid):
        raise RegisterError(f"facility_id {fid!r}: letters, digits, '.', '_' or '-', at most 64")
    ftype = (row.get("facility_type") or "").strip()
    if ftype not in FACILITY_TYPES:
        raise RegisterError(f"facility_type must be one of {', '.join(FACILITY_TYPES)}")
    member = (row.get("member") or "").strip()
    if member not in members:
        raise RegisterError(f"unknown member {member!r} (see `ceptoar members list`)")
    try:
        prefecture, _ = facts.prefecture(row.get("prefecture") or "")
        phone = facts.phone(row.get("phone"), "phone")
        designations = facts.designations(row.get("designations"))
    except facts.FactError as e:
        raise RegisterError(str(e)) from None
    name = _text(row.get("name"), "name")
    if not name:
        raise RegisterError("name is required")
    municipality = _text(row.get("municipality"), "municipality", 100)
    return {"id": fid, "name": name, "facility_type": ftype, "prefecture": prefecture, "member": member,
            "phone": phone, "designations": designations, "municipality": municipality}


def update_facility(store: Store, fid: str, changes: dict, actor: str = SYSTEM) -> tuple[dict, dict]:
    """Change some of a facility's facts (name, type, prefecture, member, phone, designations,
    municipality), checked as an import checks them; audited with the old and new values. Returns
    (the facility, {fact: (old, new)})."""
    current = facility(store, fid)
    given = {k: v for k, v in changes.items() if v is not None}
    if not given:
        raise RegisterError("nothing to change: give at least one of --name, --facility-type, --prefecture, "
                            "--member, --phone, --designations, --municipality")
    row = {"facility_id": fid} | {k: current[k] for k in ("name", "facility_type", "prefecture", "member", "phone",
                                                         "municipality")}
    row["designations"] = current["designations"]
    row |= given
    checked = check_facility(row, {m["id"] for m in store.members.list()})
    changed = {k: (current.get(k), v) for k, v in checked.items() if k != "id" and current.get(k) != v}
    if not changed:
        raise RegisterError("nothing changes: the facts given are already recorded")
    with store.transaction():
        store.facilities.upsert(checked)
        store.audit.add(actor, "facility-update", fid,
                        {k: {"from": old, "to": new} for k, (old, new) in changed.items()})
    return facility(store, fid), changed


def import_facilities(store: Store, text: str, actor: str = SYSTEM, origin: str = "-") -> ImportResult:
    """Every good row imported (a facility already known is updated); bad rows by line number."""
    result = ImportResult()
    reader = csv_rows(text, ("facility_id", "name", "facility_type", "prefecture", "member"), FACILITY_COLUMNS)
    members = {m["id"] for m in store.members.list()}
    good = []
    for line, row in reader:
        try:
            if None in row:
                raise RegisterError("more fields than the header")
            known = store.facilities.get((row.get("facility_id") or "").strip())
            for column in ("designations", "municipality"):  # a file without the column keeps what is set
                if column not in row and known is not None:
                    row[column] = known[column]
            good.append(check_facility(row, members))
        except RegisterError as e:
            result.errors.append((line, str(e)))
    with store.transaction():
        for f in good:
            if store.facilities.upsert(f):
                result.added += 1
            else:
                result.updated += 1
        store.audit.add(actor, "facilities-import", origin, {"added": result.added, "updated": result.updated,
                                                              "errors": len(result.errors)})
    return result


def facility(store: Store, fid: str) -> dict:
    f = store.facilities.get(fid)
    if f is None:
        raise RegisterError(f"no facility {fid!r} (see `ceptoar facilities list`)")
    return f


# --- registers ------------------------------------------------------------------------------------

def _flag(value: str | None, what: str) -> bool:
    v = (value or "").strip().lower()
    if v in YES:
        return True
    if v in NO:
        return False
    raise RegisterError(f"{what} must be yes or no, not {value!r}")


def check_row(row: dict) -> dict:
    category = (row.get("category") or "").strip()
    if category not in CATEGORIES:
        raise RegisterError(f"category must be one of {', '.join(CATEGORIES)}")
    product = _text(row.get("product"), "product")
    if not product:
        raise RegisterError("product is required")
    cpe = (row.get("cpe") or "").strip() or None
    if cpe and matching.cpe_parts(cpe) is None:
        raise RegisterError(f"cpe {cpe[:60]!r} is neither a CPE 2.2 URI (cpe:/a:vendor:product) nor CPE 2.3")
    purl = (row.get("purl") or "").strip() or None
    if purl and (why := matching.purl_error(purl) if purl.startswith("pkg:") else "it does not start with pkg:"):
        raise RegisterError(f"purl {purl[:60]!r} is not a package URL ({why})")
    return {"category": category, "vendor": _text(row.get("vendor"), "vendor"), "product": product,
            "version": _text(row.get("version"), "version", 100), "cpe": cpe, "purl": purl,
            "aliases": _text(row.get("aliases"), "aliases", 500),
            "internet_exposed": _flag(row.get("internet_exposed"), "internet_exposed"),
            "remote_maintenance": _flag(row.get("remote_maintenance"), "remote_maintenance"),
            "maintenance_vendor": _text(row.get("maintenance_vendor"), "maintenance_vendor"),
            "note": _text(row.get("note"), "note", 500), "device": _text(row.get("device"), "device")}


def rows_from_csv(text: str) -> tuple[list[dict], list[tuple[int, str]]]:
    reader = csv_rows(text, ("category", "product"), REGISTER_COLUMNS)
    rows, errors = [], []
    for line, row in reader:
        try:
            if None in row:
                raise RegisterError("more fields than the header")
            rows.append(check_row(row))
        except RegisterError as e:
            errors.append((line, str(e)))
        if len(rows) > MAX_ROWS:
            raise RegisterError(f"more than {MAX_ROWS} rows: split the register")
    return rows, errors


def rows_from_cyclonedx(text: str, device: str) -> tuple[list[dict], list[tuple[int, str]]]:
    """The components of one device's CycloneDX SBOM (JSON) as register rows of category 医療機器."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise RegisterError(f"not JSON: {e}") from None
    except RecursionError:
        raise RegisterError("not a CycloneDX SBOM: nested too deeply") from None
    if not isinstance(doc, dict) or doc.get("bomFormat") != "CycloneDX" or not isinstance(doc.get("components"), list):
        raise RegisterError("not a CycloneDX SBOM (bomFormat CycloneDX with a components list)")
    rows, errors = [], []
    meta = (doc.get("metadata") or {}).get("component") if isinstance(doc.get("metadata"), dict) else None
    for i, c in enumerate([meta] + doc["components"] if isinstance(meta, dict) else doc["components"], 1):
        try:
            if not isinstance(c, dict):
                raise RegisterError("a component is not an object")
            supplier = c.get("supplier") if isinstance(c.get("supplier"), dict) else {}
            vendor = supplier.get("name") or c.get("publisher") or c.get("author") or c.get("group")
            rows.append(check_row({"category": "医療機器", "vendor": vendor if isinstance(vendor, str) else None,
                                   "product": c.get("name") if isinstance(c.get("name"), str) else "",
                                   "version": c.get("version") if isinstance(c.get("version"), str) else None,
                                   "cpe": c.get("cpe") if isinstance(c.get("cpe"), str) else None,
                                   "purl": c.get("purl") if isinstance(c.get("purl"), str) else None,
                                   "note": f"SBOM {c.get('type') or 'component'}", "device": device}))
        except RegisterError as e:
            errors.append((i, f"component {i}: {e}"))
    if len(rows) > MAX_ROWS:
        raise RegisterError(f"more than {MAX_ROWS} components")
    return rows, errors


def row_keys(row: dict) -> set[str]:
    names = [row["product"]] + [a for a in (row.get("aliases") or "").split("|") if a.strip()]
    keys = {matching.product_key(n, row.get("vendor")) for n in names}
    parts = matching.cpe_parts(row.get("cpe"))
    if parts:
        keys.add(f"cpe:{matching.product_key(parts[0])}:{matching.product_key(parts[1])}")
    purl = matching.purl_parts(row.get("purl"))
    if purl:
        keys.add("purl:" + "/".join(purl[:3]))
    return keys - {""}


def affected_keys(affected: list[matching.Affected]) -> set[str]:
    keys = {a.product_k for a in affected}
    keys |= {f"cpe:{matching.product_key(a.vendor)}:{matching.product_key(a.product)}" for a in affected
             if a.via == "cpe"}
    keys |= {"purl:" + "/".join(parts[:3]) for a in affected if (parts := matching.purl_parts(a.purl))}
    return keys - {""}


def import_register(store: Store, fid: str, text: str, actor: str, *, device: str | None = None,
                    origin: str = "-") -> ImportResult:
    """A facility's register from CSV, or one device's CycloneDX SBOM (`device`): bad rows reported
    by line (or component) number, the rest imported as a new version of the register (an SBOM
    replaces that device's rows only), then matched against every published advisory."""
    f = facility(store, fid)
    if device is not None:
        device = _text(device, "device name")
        if not device:
            raise RegisterError("give the device's name with --device")
        rows, errors = rows_from_cyclonedx(text, device)
        kept = [r for r in store.facilities.register(fid) if r.get("device") != device]
        for r in kept:
            r.pop("n", None)
        rows = kept + rows
    else:
        rows, errors = rows_from_csv(text)
    if not rows:
        # Nothing imported: the reasons, by line, are the whole answer.
        why = "; ".join(f"line {n}: {e}" if not e.startswith("component") else e for n, e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise RegisterError("no row could be imported" + (f": {why}{more}" if errors else ""))
    for n, r in enumerate(rows, 1):
        r["n"] = n
    keys = {signature(r): sorted(row_keys(r)) for r in rows}
    result = ImportResult(rows=len(rows), errors=errors)
    with store.transaction():
        result.version, created = store.facilities.replace_register(fid, rows, keys, actor, origin)
        result.matches = match_facility(store, fid, created)
        store.audit.add(actor, "register-import", fid, {"member": f["member"], "version": result.version,
                                                         "rows": len(rows), "errors": len(errors),
                                                         "device": device, "matches": result.matches})
    return result


def read_register(store: Store, fid: str, actor: str) -> list[dict]:
    """A facility's current register (TLP:RED): the read is audited."""
    f = facility(store, fid)
    rows = store.facilities.register(fid)
    store.audit.add(actor, "register-read", fid, {"member": f["member"], "rows": len(rows)})
    return rows


# --- matching -------------------------------------------------------------------------------------

def published_report(store: Store, advisory: str) -> dict | None:
    """The advisory as last published, or None when it is not (or no longer: revoked)."""
    pub = store.publications.latest([advisory]).get(advisory)
    if pub is None or pub.revoked:
        return None
    v = store.objects.get(advisory, pub.version, HUB)
    return v.obj if v else None


def match_advisory(store: Store, advisory: str, kev: set[str] | None = None) -> int:
    """Match one advisory (as published) against every register profile; its matches replaced,
    targeted alerts queued when it is urgent. Returns the number of profiles it matches. `kev`: the
    KEV-listed CVEs, when the caller has them."""
    row = store.advisories.get(advisory) or {"id": advisory}  # gone: matched as nothing, never urgent
    return match_published(store, [(row, published_report(store, advisory))], kev)


def match_published(store: Store, items: list[tuple[dict, dict | None]], kev: set[str] | None = None) -> int:
    """Match advisories (as published) against every register profile: items are (advisory row, its
    report as published, None when revoked or never published). Each advisory's products are kept
    (a register imported later is alerted by them too) and its matches replaced; targeted alerts are
    queued for an urgent one. The profiles are looked up once for the batch. Returns the number of
    matches. `kev`: the KEV-listed CVEs, when the caller has them."""
    affected = {row["id"]: matching.affected_of(report) if report else [] for row, report in items}
    if kev is None and any(affected.values()):
        kev = store.advisories.kev_cves()
    keys = {aid: affected_keys(a) for aid, a in affected.items()}
    wanted = sorted(set().union(*keys.values())) if keys else []
    profiles = store.facilities.profiles_for_keys(wanted) if wanted else []
    by_key: dict[str, list[dict]] = {}
    for pid, ks in store.facilities.profile_keys([p["seq"] for p in profiles]).items():
        for k in ks:
            by_key.setdefault(k, []).append(pid)
    by_id = {p["seq"]: p for p in profiles}
    found: dict[str, list] = {}
    products, hot = [], []
    for row, _report in items:
        aid = row["id"]
        mine = []
        for pid in sorted({pid for k in keys[aid] for pid in by_key.get(k, [])}):
            m = matching.match_row(by_id[pid], affected[aid])
            if m:
                mine.append((pid, m[0], m[1]))
        found[aid] = mine
        is_hot = bool(affected[aid]) and urgent(row, kev)
        products.append((aid, sorted(keys[aid]), [a.as_dict() for a in affected[aid]], is_hot))
        if is_hot and mine:
            hot.append(aid)
    store.facilities.set_products_many(products)
    store.facilities.replace_matches_many(found)
    for aid in hot:
        store.facilities.queue_targeted(advisory=aid)
    return sum(len(m) for m in found.values())


def refresh_all(store: Store, progress=None) -> int:
    """Match every published advisory again (after an upgrade, or a change of the alias list):
    rows without a profile given one, every profile's keys computed again, profiles no row uses
    forgotten. Returns the number of advisories matched again."""
    rows = store.facilities.unprofiled_rows()
    if rows:
        ids, _ = store.facilities.profiles(rows, {signature(r): sorted(row_keys(r)) for r in rows})
        store.facilities.set_row_profiles([(r["facility"], r["n"], ids[signature(r)]) for r in rows])
    for p in store.facilities.all_profiles():
        store.facilities.set_profile_keys(p["seq"], sorted(row_keys(p)))
    store.facilities.prune()
    ids = [a for (a,) in store.execute("SELECT id FROM advisories WHERE status = 'published' ORDER BY id")]
    kev = store.advisories.kev_cves()
    for i, aid in enumerate(ids, 1):
        match_advisory(store, aid, kev)
        if progress and i % 1000 == 0:
            progress(f"{i}/{len(ids)} advisories matched")
    return len(ids)


def match_facility(store: Store, fid: str, created: list[int]) -> int:
    """After a facility's register import: its new profiles (rows no register had before) matched
    against every published advisory (the others are matched already), urgent matches on exposed
    rows queued as targeted alerts. Returns the number of advisories matching the facility."""
    profiles = store.facilities.profiles_by_id(created)
    keys = store.facilities.profile_keys(created)
    by_key: dict[str, list[dict]] = {}
    for p in profiles:
        for k in keys.get(p["seq"], []):
            by_key.setdefault(k, []).append(p)
    found = []
    candidates = store.facilities.advisories_for_keys(sorted(by_key)) if by_key else []
    for advisory, listed in store.facilities.affected(candidates).items():
        affected = [matching.Affected.from_dict(a) for a in listed]
        near = {p["seq"]: p for k in affected_keys(affected) for p in by_key.get(k, [])}  # profiles sharing a key
        for p in near.values():
            m = matching.match_row(p, affected)
            if m:
                found.append((p["seq"], advisory, m[0], m[1]))
    store.facilities.add_matches(found)
    store.facilities.queue_targeted(facility=fid)
    return store.facilities.count_matches(facility=fid)


def alert_on_arrival(store: Store, ids: list[str]) -> int:
    """The urgent path: each of these advisories (just stored from a CLEAR source, not yet decided)
    that is KEV-listed or critical, matched against every register as its source states it, queues
    an alert to each facility with a matching row that is internet-exposed or remotely maintained,
    before any analyst acts. Returns how many alerts were queued."""
    if not ids:
        return 0
    kev = store.advisories.kev_cves()
    queued = 0
    for a in (a for chunk in chunks(ids) for a in store.advisories.list(ids=chunk)):
        if a["status"] != "new" or a["tlp"] != "CLEAR" or not urgent(a, kev):
            continue
        version = store.objects.latest([a["source_report"]], source_origin(a["source"])).get(a["source_report"])
        affected = matching.affected_of(version.obj) if version else []
        keys = affected_keys(affected)
        found = {}
        for profile in store.facilities.profiles_for_keys(sorted(keys)) if keys else []:
            m = matching.match_row(profile, affected)
            if m:
                found[profile["seq"]] = m[0]
        by_facility: dict[str, list[dict]] = {}
        for r in store.facilities.exposed_rows(list(found)):
            by_facility.setdefault(r["facility"], []).append({"row": r["row"], "confidence": found[r["profile"]]})
        queued += store.facilities.queue_on_arrival([(f, a["id"], d) for f, d in by_facility.items()])
    return queued


def reviewed(store: Store, advisory: str, what: str, detail: dict | None = None) -> list[str]:
    """An analyst's decision on an advisory some facilities were alerted about before review
    (`what`: rejected, severity, published): each of them gets a short correction. An alert not
    sent yet is withdrawn when the advisory is rejected. Returns the facilities to be told."""
    if what == "rejected":
        store.facilities.drop_pending(advisory)
    return store.facilities.queue_corrections(advisory, what, detail)


def urgent(advisory: dict, kev: set[str]) -> bool:
    """KEV-listed or critical: worth an alert at once to a facility exposing the product."""
    return effective_severity(advisory) == "critical" or bool(set(advisory.get("cves") or []) & kev) \
        or "kev" in (advisory.get("tags") or [])


def row_line(row: dict) -> str:
    """A register row as one line: category, vendor, product, version, exposure."""
    parts = [f"[{row['category']}]", row.get("vendor") or "", row["product"], row.get("version") or ""]
    flags = [x for x, on in (("インターネットに公開", row.get("internet_exposed")),
                             ("リモート保守", row.get("remote_maintenance"))) if on]
    device = f" (機器: {row['device']})" if row.get("device") else ""
    return " ".join(p for p in parts if p) + device + (f" ({'・'.join(flags)})" if flags else "")


def _answered(own: dict | None, vendor: dict | None, names: dict[str, str]) -> dict:
    """Who answered a match and how: the facility's own answer stands over its vendor's."""
    if own and own.get("status") and own["status"] != "unanswered":
        return {"status": own["status"], "answered_by": "facility"}
    if vendor:
        return {"status": vendor["status"], "answered_by": f"vendor:{vendor['vendor']}",
                "justification": vendor["justification"], "fix_date": vendor["fix_date"],
                "fixed_version": vendor["fixed_version"],
                "answer_ja": vendor_answer_ja(vendor, names.get(vendor["vendor"], vendor["vendor"]))}
    return {"status": (own or {}).get("status", "unanswered"), "answered_by": None}


def match_views(store: Store, actor: str, *, facility_id: str | None = None, advisory: str | None = None,
                member: str | None = None, min_confidence: str = "name") -> list[dict]:
    """Matches as analysts and scripts read them (they reveal registers: audited)."""
    floor = matching.CONFIDENCE.index(min_confidence)
    rows = [m for m in store.facilities.matches(facility=facility_id, advisory=advisory, member=member)
            if matching.CONFIDENCE.index(m["confidence"]) <= floor]
    out = []
    kev = store.advisories.kev_cves()
    answers = store.facilities.latest_responses()
    by_vendor = store.vendors.answers()
    names = {v["id"]: v["name"] for v in store.vendors.list()}
    pubs = store.publications.latest(sorted({m["advisory"] for m in rows}))
    for m in rows:
        row = m["row"]
        pub = pubs.get(m["advisory"])
        view = pub.view if pub else store.advisories.get(m["advisory"]) or {}
        out.append({"facility": m["facility"], "facility_name": m["facility_name"], "member": m["member"],
                    "advisory": m["advisory"], "title": view.get("title"), "product": row_line(row),
                    "row": m["n"], "confidence": m["confidence"], "reasons": m["reasons"],
                    "kev": bool(set(view.get("cves") or []) & kev) or "kev" in (view.get("tags") or []),
                    "severity": view.get("severity"),
                    "internet_exposed": row["internet_exposed"], "remote_maintenance": row["remote_maintenance"]}
                   | _answered(answers.get((m["facility"], m["advisory"])), by_vendor.get((m["advisory"],
                                                                                            m["facility"], m["n"])),
                               names))
    store.audit.add(actor, "matches-read", facility_id or member or advisory or "*", {"count": len(out)})
    return out
