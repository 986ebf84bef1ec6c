"""Incidents at member facilities: intake, tracking to recovery, corrections, the reports each
incident owes (ceptoar.incidents.obligations: vendor, MHLW, prefecture, police, the Personal Information
Protection Commission's 速報 and 確報, the ACD law's reports, the owning municipality), the notices that
make them, and the acknowledgement the facility gets with the contacts it can call.

Incident data is TLP:RED. Its STIX objects are kept apart from advisories (origin 'incident'), so
no collection, digest or export ever carries them; only `share` turns an anonymized lesson into a
new advisory for triage.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ceptoar.core import extensions, mail, settings
from ceptoar.core import facts as checks
from ceptoar.core.errors import CeptoarError
from ceptoar.core.facts import FACILITY_TYPES
from ceptoar.core.files import child, private_dir, write_private
from ceptoar.core.mail import SmtpConfig, check_address
from ceptoar.core.model import (
    INCIDENT,
    JST,
    TLP_IDS,
    TLP_ORDER,
    Source,
    later_than,
    now_stix,
    serialize,
    stix_time,
    tlp_name,
)
from ceptoar.incidents import contacts as desks
from ceptoar.incidents import obligations as owed
from ceptoar.ingest.entries import store_entries
from ceptoar.normalize import advisory
from ceptoar.store import Store, utcnow

STATUSES = ["reported", "vendor-contacted", "reported-to-mhlw", "recovering", "closed"]
STATUS_JA = {"reported": "受付済み(対応開始前)", "vendor-contacted": "ベンダーに連絡済み",
             "reported-to-mhlw": "厚生労働省に報告済み", "recovering": "復旧作業中", "closed": "対応終了"}
# The facts `edit` corrects: name → (Japanese label, how a value is checked).
FACTS = {
    "summary": "事象の概要", "prefecture": "都道府県", "facility_phone": "医療機関の電話番号",
    "contact_person": "医療機関の担当者", "vendor": "システムベンダー", "vendor_phone": "ベンダーの電話番号",
    "vendor_email": "ベンダーのメールアドレス", "service_impact": "医療情報システムの障害",
    "care_disrupted": "診療への支障", "personal_data_leak": "個人データ漏えい等のおそれ",
    "crime_suspected": "犯罪の疑い", "records_affected": "本人の数", "cause": "原因",
    "data_items": "漏えい等した個人データの項目", "secondary_harm": "二次被害又はそのおそれ",
    "individuals_response": "本人への対応", "public_announcement": "公表",
    "contact_email": "医療機関の連絡先メールアドレス", "affected_systems": "被害を受けたシステム・機器",
    "ransom_demand": "身代金の要求(ランサムノート)", "encrypted_extension": "暗号化されたファイルの拡張子",
    "intrusion_vector": "侵入方法", "specified_computer": "特定重要電子計算機に係る事象",
    "designations": "指定・区分", "municipality": "設置自治体",
}
# The PPC report's items that come from facts: fact → option that records it.
PPC_FACTS = {"data_items": "--data-items", "records_affected": "--records-affected", "cause": "--cause",
             "secondary_harm": "--secondary-harm", "individuals_response": "--individuals-response",
             "public_announcement": "--public-announcement"}
NOTICE_PARTIES = list(owed.PARTIES)
NOTE_KINDS = {"damage": "被害", "response": "対応", "recovery": "復旧", "prevention": "再発防止", "general": "メモ"}
LESSONS_SOURCE = "ceptoar-lessons"


class IncidentError(CeptoarError, ValueError):
    pass


def _fill(inc: dict) -> dict:
    """An incident recorded by an older hub, with the facts added since (unknown: None)."""
    for k in ("facility_phone", "contact_person", "crime_suspected", "records_affected", "cause", "data_items",
              "secondary_harm", "individuals_response", "public_announcement", "facility_id", "municipality",
              "contact_email", "affected_systems", "ransom_demand", "encrypted_extension", "intrusion_vector",
              "specified_computer"):
        inc.setdefault(k, None)
    inc.setdefault("designations", [])
    inc.setdefault("reports", [])
    inc.setdefault("corrections", [])
    return inc


def obligations(inc: dict, now: datetime | None = None) -> list[dict]:
    """Every report the incident may owe, with its state, deadline and basis, and whether the hub
    knows where it goes (`configured`: an address in relay.toml or on the incident)."""
    rows = owed.obligations(inc, now, settings.current().relay().get("deadlines"))
    for o in rows:
        o["configured"] = _recipient(_fill(inc), o["party"])[0] is not None
    return rows


def open_obligations(inc: dict, now: datetime | None = None) -> list[dict]:
    return [o for o in obligations(inc, now) if o["state"] in ("pending", "overdue")]


def mhlw_due(inc: dict) -> bool:
    """MHLW asks for a report when the information system is impaired, personal data may have
    leaked, or care is disrupted (and it has not been made yet)."""
    return any(o["party"] == "mhlw" for o in open_obligations(inc))


def next_steps(inc: dict) -> list[str]:
    cfg = settings.current().relay()
    short = inc["id"][10:18]
    steps = []
    for o in open_obligations(inc):
        party = o["party"]
        if party == "vendor":
            who = (inc["vendor"] or "システムベンダー") + (f" ({inc['vendor_phone']})" if inc["vendor_phone"] else "")
            text = f"直ちにシステムベンダーに連絡してください: {who}"
        elif party == "mhlw":
            text = f"{cfg['mhlw']['name']} ({cfg['mhlw']['phone']}、{cfg['mhlw']['hours']}) に報告してください"
        elif party == "prefecture":
            text = f"{inc['prefecture']}(保健所)にも情報提供してください"
        elif party == "police":
            text = f"{_police(inc)['name']}に相談・通報してください"
        elif party == "acd-minister":
            text = "特定侵害事象として厚生労働大臣(特定社会基盤事業所管大臣)に報告してください"
        elif party == "acd-nco":
            text = "特定侵害事象として内閣総理大臣(国家サイバー統括室)に報告してください"
        elif party == "municipality":
            text = f"設置自治体({inc['municipality'] or '未登録'})の担当部局に報告してください"
        else:
            text = f"{cfg['ppc']['name']}に{'速報' if party == 'ppc-preliminary' else '確報'}を提出してください"
        where = "" if o["configured"] else f" [宛先未設定: {_missing_address_hint(inc, party)}]"
        steps.append(f"{text} (期限 {o['deadline_jst']}、{o['basis_ja']}){where}"
                     f" → incidents notify {short} --to {party}")
    if inc["status"] in ("reported-to-mhlw", "recovering"):
        steps.append("被害・対応・復旧・再発防止の状況を記録してください  → incidents update ID --note … --note-kind …")
    return steps


def _police(inc: dict) -> dict:
    return desks.police_desk(inc["prefecture"])


def check_facts(facts: dict, on_notice=None) -> dict:
    """The facts given, checked and made canonical (prefecture among the 47, telephone numbers,
    addresses, causes, counts, free text); FactError (an IncidentError) says what is wrong."""
    out = {}
    for k, v in facts.items():
        if v is None:
            continue
        if k == "prefecture":
            v, notice = checks.prefecture(v)
            if notice and on_notice:
                on_notice(notice)
        elif k in ("facility_phone", "vendor_phone"):
            v = checks.phone(v, FACTS[k])
        elif k in ("vendor_email", "contact_email"):
            v = check_address(v) if v.strip() else None
        elif k == "designations":
            v = checks.designations(v)
        elif k == "municipality":
            v = checks.text(v, FACTS[k], 100)
        elif k == "cause":
            v = owed.cause(v)
        elif k == "records_affected":
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise IncidentError("records affected (本人の数) is a count: 0 or more")
        elif k in ("service_impact", "care_disrupted", "personal_data_leak", "crime_suspected", "specified_computer"):
            v = bool(v)
        elif k in FACTS:
            v = checks.text(v, FACTS[k], 4000 if k == "summary" else 500)
        else:
            raise IncidentError(f"not a fact of an incident: {k}")
        out[k] = v
    return out


def _stix(inc: dict, created: str, modified: str) -> list[dict]:
    red = TLP_IDS["RED"]
    incident = {
        "type": "incident", "spec_version": "2.1", "id": inc["stix_id"], "created": created, "modified": modified,
        "name": f"{inc['facility']}: サイバー攻撃の疑い", "description": inc["summary"], "object_marking_refs": [red],
    }
    incident = extensions.with_props(incident, extensions.INCIDENT, incident={
        k: inc.get(k) for k in ("facility_type", "prefecture", "member", "detected_at", "status", "service_impact",
                                "personal_data_leak", "care_disrupted", "crime_suspected", "cause",
                                "records_affected", "designations") if inc.get(k) not in (None, [])})
    report = {
        "type": "report", "spec_version": "2.1", "id": inc["report_id"], "created": created, "modified": modified,
        "name": f"インシデント報告: {inc['facility']}", "published": created, "report_types": ["incident"],
        "object_refs": [inc["stix_id"]], "object_marking_refs": [red], "description": inc["summary"],
    }
    return [incident, report]


def _store_stix(store: Store, inc: dict, created: str, modified: str) -> None:
    """Stored under the incident origin, which holds these ids: no publication can draw them in."""
    rows = []
    for obj in _stix(inc, created, modified):
        text, h = serialize(obj)
        rows.append((obj["id"], obj["modified"], obj["type"], h, text, TLP_ORDER.index("RED"), False))
    store.objects.claim([r[0] for r in rows], INCIDENT)
    store.objects.put(rows, INCIDENT)


def _stamp(d: datetime) -> str:
    return stix_time(d)


def report(store: Store, actor: str, *, facility: str | None = None, facility_type: str | None = None,
           prefecture: str | None = None, member: str | None = None, summary: str, facility_id: str | None = None,
           designations: list[str] | None = None, municipality: str | None = None,
           detected_at: datetime | None = None, vendor: str | None = None,
           vendor_phone: str | None = None, vendor_email: str | None = None, service_impact: bool = False,
           personal_data_leak: bool = False, care_disrupted: bool = False, facility_phone: str | None = None,
           contact_person: str | None = None, cause: str | None = None, crime_suspected: bool | None = None,
           records_affected: int | None = None, on_notice=None, allow_examples: bool = False, **more) -> dict:
    """Record an incident. A registered facility (`facility_id`) gives its name, type, prefecture,
    association, designations and municipality from the register of facilities; else they are
    given here (`facility`…, `designations`). Refused (IncidentError, nothing recorded) while a
    contact the acknowledgement carries is still an example value, unless `allow_examples` (the demo).
    `more`: further facts by name (affected_systems, ransom_demand, intrusion_vector, …)."""
    if facility_id:
        if facility or facility_type or member or designations:
            raise IncidentError("give --facility-id alone: name, type, association and designations come from the "
                                "register of facilities (or --facility … for a facility the hub does not know)")
        known = store.facilities.get(facility_id)
        if known is None:
            raise IncidentError(f"no facility {facility_id!r} (see `ceptoar facilities list`, or give --facility …)")
        facility, facility_type, member = known["name"], known["facility_type"], known["member"]
        prefecture = prefecture or known["prefecture"]
        designations, municipality = known["designations"], municipality or known["municipality"]
        facility_phone = facility_phone or known["phone"]
    if not facility or not facility_type or not member:
        raise IncidentError("give --facility-id ID, or --facility, --facility-type, --prefecture and --member")
    if facility_type not in FACILITY_TYPES:
        raise IncidentError(f"facility type must be one of {', '.join(FACILITY_TYPES)}")
    if store.members.get(member) is None:
        raise IncidentError(f"no member {member!r} (see `ceptoar members list`)")
    if not facility.strip() or not summary.strip() or not (prefecture or "").strip():
        raise IncidentError("facility, prefecture and summary are required")
    unknown = set(more) - set(FACTS)
    if unknown:
        raise IncidentError(f"not a fact of an incident: {', '.join(sorted(unknown))}")
    facts = check_facts({"prefecture": prefecture, "summary": summary, "vendor": vendor, "vendor_phone": vendor_phone,
                         "vendor_email": vendor_email, "facility_phone": facility_phone,
                         "contact_person": contact_person, "cause": cause, "crime_suspected": crime_suspected,
                         "records_affected": records_affected, "designations": designations or [],
                         "municipality": municipality} | more, on_notice)
    if not allow_examples:
        unreplaced = [c for c in desks.emergency(member, facts["prefecture"]) if c.configured and c.placeholder]
        if unreplaced:
            raise IncidentError("the acknowledgement would send the clinic to an example number: "
                                + "; ".join(f"{c.where} phone {c.phone!r}" for c in unreplaced)
                                + " — set the real numbers in the configuration folder (CEPTOAR_CONFIG) first")
    now = datetime.now(UTC)
    key = uuid.uuid4()
    inc = _fill({"id": f"incident--{key}", "stix_id": f"incident--{key}", "report_id": f"report--{uuid.uuid4()}",
                 "facility": facility.strip(), "facility_type": facility_type, "member": member,
                 "facility_id": facility_id, "detected_at": _stamp(detected_at or now), "vendor": None,
                 "vendor_phone": None, "vendor_email": None, "service_impact": service_impact,
                 "personal_data_leak": personal_data_leak, "care_disrupted": care_disrupted, "status": "reported",
                 "history": [{"status": "reported", "time": utcnow(), "actor": actor}], "notes": [], "notices": [],
                 "shared": None, "created": utcnow()} | facts)
    inc["stix_created"] = stix_time(now)
    with store.transaction():
        store.incidents.save(inc)
        _store_stix(store, inc, inc["stix_created"], inc["stix_created"])
        store.audit.add(actor, "incident-report", inc["id"],
                        {"member": member, "facility_id": facility_id,
                         "owed": [o["party"] for o in open_obligations(inc)]})
    return inc


def find(store: Store, ref: str) -> dict:
    inc = store.incidents.find(ref.strip())
    if inc is None:
        raise IncidentError(f"no incident {ref!r} (give its id or 6+ characters of it)")
    return _fill(inc)


def _save_version(store: Store, inc: dict) -> None:
    """The incident saved, and a new STIX version of it (under the incident origin)."""
    store.incidents.save(inc)
    previous = store.objects.max_modified([inc["stix_id"]])[inc["stix_id"]]
    _store_stix(store, inc, inc["stix_created"], later_than(now_stix(), previous))


def edit(store: Store, ref: str, actor: str, facts: dict, on_notice=None) -> tuple[dict, dict]:
    """Corrections of the recorded facts: each a new STIX version, audited with the old and new
    values. The reports owed are derived again from the corrected facts. Returns (incident,
    {fact: (old, new)})."""
    inc = find(store, ref)
    given = {k: v for k, v in facts.items() if v is not None}
    if not given:
        raise IncidentError("nothing to correct: give at least one fact (see `incidents edit --help`)")
    clean = check_facts(given, on_notice)
    if "vendor_email" in given and clean.get("vendor_email") is None:
        clean["vendor_email"] = None  # "" clears it
    changed = {k: (inc.get(k), v) for k, v in clean.items() if inc.get(k) != v}
    if not changed:
        raise IncidentError("nothing changes: the facts given are already recorded")
    before = [o["party"] for o in open_obligations(inc)]
    for k, (_old, new) in changed.items():
        inc[k] = new
    inc["corrections"].append({"time": utcnow(), "actor": actor, "changes": {k: list(v) for k, v in changed.items()}})
    with store.transaction():
        _save_version(store, inc)
        store.audit.add(actor, "incident-edit", inc["id"],
                        {"changes": {k: {"from": old, "to": new} for k, (old, new) in changed.items()},
                         "owed_before": before, "owed": [o["party"] for o in open_obligations(inc)]})
    return inc, changed


def record_report(store: Store, ref: str, party: str, actor: str, *, how: str = "telephone",
                  at: datetime | None = None, note: str | None = None) -> dict:
    """A report made outside the hub (by telephone, the PPC's online form, in person) closes
    that obligation; audited."""
    inc = find(store, ref)
    if party not in owed.PARTIES:
        raise IncidentError(f"reports go to {', '.join(owed.PARTIES)}")
    note = checks.text(note, "note", 500)
    inc["reports"].append({"party": party, "time": _stamp(at or datetime.now(UTC)), "how": how, "actor": actor,
                           **({"note": note} if note else {})})
    with store.transaction():
        _save_version(store, inc)
        store.audit.add(actor, "incident-reported", inc["id"], {"party": party, "how": how})
    return inc


def show(store: Store, ref: str, actor: str) -> dict:
    """An incident as a person reads it (TLP:RED facts): every reading is audited."""
    inc = find(store, ref)
    store.audit.add(actor, "incident-show", inc["id"])
    return inc


def update(store: Store, ref: str, actor: str, *, status: str | None = None, note: str | None = None,
           note_kind: str = "general", reason: str | None = None, force: bool = False) -> dict:
    """Move the status (back only with a reason; closed only with every report made, or with
    --force and a reason) and record notes."""
    inc = find(store, ref)
    if status is None and not note:
        raise IncidentError("give --status, --note or both")
    reason = checks.text(reason, "reason", 500)
    audited: dict = {}
    if status is not None:
        if status not in STATUSES:
            raise IncidentError(f"status must be one of {', '.join(STATUSES)}")
        if STATUSES.index(status) < STATUSES.index(inc["status"]) and not reason:
            raise IncidentError(f"the incident is already {inc['status']}; statuses only move forward "
                                "unless you give --reason (a correction, audited)")
        pending = open_obligations(inc)
        if status == "closed" and inc["status"] != "closed" and pending:
            if not (force and reason):
                due = ", ".join(f"{o['party']} (期限 {o['deadline_jst']})" for o in pending)
                raise IncidentError(f"reports still owed: {due}. Record each (`incidents reported` or `incidents "
                                    "notify`), or close anyway with --force --reason TEXT")
            audited["forced_with_open"] = [o["party"] for o in pending]
        if status != inc["status"]:
            audited |= {"from": inc["status"], "to": status}
            if reason:
                audited["reason"] = reason
            inc["history"].append({"status": status, "time": utcnow(), "actor": actor,
                                   **({"reason": reason} if reason else {})})
            inc["status"] = status
    if note:
        if note_kind not in NOTE_KINDS:
            raise IncidentError(f"note kind must be one of {', '.join(NOTE_KINDS)}")
        inc["notes"].append({"kind": note_kind, "text": note, "time": utcnow(), "actor": actor})
    with store.transaction():
        _save_version(store, inc)
        store.audit.add(actor, "incident-update", inc["id"],
                        {"status": status, "note_kind": note_kind if note else None, **audited})
    return inc


def _jst(ts: str) -> str:
    t = datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(JST)
    return f"{t:%Y年%m月%d日 %H:%M} (日本時間)"


def _yes(flag, yes: str = "あり", no: str = "現時点で確認されていません") -> str:
    return yes if flag else no


UNKNOWN = "未確認"


def missing_ppc_facts(inc: dict) -> list[str]:
    """The PPC report's items the facility has not given yet, as the option that records each."""
    missing = [opt for fact, opt in PPC_FACTS.items() if inc.get(fact) in (None, "", "unknown")]
    if not any(n["kind"] == "prevention" for n in inc["notes"]):
        missing.append("再発防止策 (incidents update ID --note … --note-kind prevention)")
    return missing


def notice(inc: dict, party: str) -> tuple[str, str, str]:
    """(recipient address, subject, body) of the notice to one party, in Japanese, from the facts
    recorded (what the facility has not given yet reads 未確認)."""
    inc = _fill(inc)
    address, to_name, opening = _recipient(inc, party)
    if not address:
        raise IncidentError(f"no e-mail address for {party} ({to_name}): {_missing_address_hint(inc, party)} "
                            "in the configuration folder (CEPTOAR_CONFIG)")
    address = check_address(address)
    ppc = party.startswith("ppc-")
    secretariat = settings.current().contacts()["ceptoar"]
    items = _ppc_items(inc) if ppc else _incident_items(inc)
    lines = [f"{to_name} 御中", "", opening, "", "記", ""]
    lines += [f"{i}. {label}: {value}" for i, (label, value) in enumerate(items, 1)]
    if ppc:
        lines += ["", f"報告者: {inc['facility']} 担当者・連絡先: {_contact(inc)}"]
    lines += ["", f"取りまとめ: {secretariat['name']} (電話 {secretariat['phone']}、{secretariat['email']})",
              f"(医療セプター 事案番号 {inc['id']})", "", "以上",
              "", "本通知は TLP:RED です。宛先の方限りとし、転送しないでください。"]
    what = {"vendor": "ご連絡", "police": "ご相談", "ppc-preliminary": "報告(速報)", "ppc-final": "報告(確報)"}
    subject = (f"【医療セプター】{'個人データの漏えい等' if ppc else 'サイバー攻撃の疑い事案'}の"
               f"{what.get(party, '報告')}: {inc['facility']}")
    return address, subject, "\n".join(lines)


def _recipient(inc: dict, party: str) -> tuple[str | None, str, str]:
    """(address or None, the name the notice is addressed to, its opening sentence) for one party."""
    cfg = settings.current().relay()
    if party == "vendor":
        address = inc["vendor_email"] or cfg.get("vendors", {}).get(inc["vendor"] or "", {}).get("email")
        return address, inc["vendor"] or "システムベンダー", (
            "貴社が保守を担当されている医療機関のシステムについて、サイバー攻撃の疑いがあり、至急のご対応をお願いいたします。")
    if party == "mhlw":
        return cfg["mhlw"].get("email"), cfg["mhlw"]["name"], (
            "医療機関におけるサイバー攻撃の疑い事案について、下記のとおりご報告いたします。")
    if party == "prefecture":
        pref = cfg.get("prefectures", {}).get(inc["prefecture"], {})
        return pref.get("email"), pref.get("name", inc["prefecture"]), (
            "管内の医療機関におけるサイバー攻撃の疑い事案について、下記のとおり情報提供いたします。")
    if party == "police":
        police = _police(inc)
        return police.get("email"), police["name"], (
            "医療機関におけるサイバー攻撃(犯罪の疑い)について、下記のとおりご相談・通報いたします。")
    if party in ("acd-minister", "acd-nco"):
        office = cfg.get(party.replace("-", "_"))
        name = (office or {}).get("name", owed.PARTIES[party])
        return (office or {}).get("email"), name, (
            f"{owed.ACD_LAW}に基づき、特別社会基盤事業者である医療機関の特定重要電子計算機に係る特定侵害事象"
            "(そのおそれを含む)について、下記のとおり報告いたします。")
    if party == "municipality":
        office = cfg.get("municipalities", {}).get(inc["municipality"] or "", {})
        return office.get("email"), office.get("name", f"{inc['municipality'] or '設置自治体'} 担当部局"), (
            "貴自治体が開設する医療機関におけるサイバー攻撃の疑い事案について、下記のとおりご報告いたします。")
    if party.startswith("ppc-"):
        kind = "速報" if party == "ppc-preliminary" else "確報"
        return cfg["ppc"].get("email"), cfg["ppc"]["name"], (
            f"個人データの漏えい等(要配慮個人情報を含むおそれ)について、個人情報の保護に関する法律第26条に"
            f"基づき、下記のとおり報告({kind})いたします。")
    raise IncidentError(f"notices go to {', '.join(NOTICE_PARTIES)}")


def _missing_address_hint(inc: dict, party: str) -> str:
    where = {"vendor": f"give it with `incidents edit {inc['id'][10:18]} --vendor-email ADDR`, or add "
                       f"[vendors.\"{inc['vendor'] or '名前'}\"] email to relay.toml",
             "mhlw": "set [mhlw] email in relay.toml",
             "prefecture": f"add [prefectures.\"{inc['prefecture']}\"] email to relay.toml",
             "police": f"add [police.\"{inc['prefecture']}\"] email to relay.toml",
             "acd-minister": "add [acd_minister] name and email to relay.toml (the office MHLW names for "
                             "特定侵害事象 reports)",
             "acd-nco": "add [acd_nco] name and email to relay.toml (the National Cybersecurity Office's "
                        "reporting desk)",
             "municipality": (f"add [municipalities.\"{inc['municipality']}\"] email to relay.toml"
                              if inc.get("municipality") else
                              f"record the owning municipality (`facilities update {inc.get('facility_id') or 'ID'} "
                              "--municipality NAME`) and add [municipalities.\"NAME\"] email to relay.toml")}
    return where.get(party, "set [ppc] email in relay.toml (or report through the Commission's online form "
                            "and record it with `incidents reported`)")


def _contact(inc: dict) -> str:
    return " / ".join(x for x in (inc["contact_person"], inc["facility_phone"], inc.get("contact_email")) if x) \
        or UNKNOWN


def _notes(inc: dict, *kinds: str) -> list[str]:
    return [n["text"] for n in inc["notes"] if n["kind"] in kinds]


def _ppc_items(inc: dict) -> list[tuple[str, str]]:
    """The items of the Personal Information Protection Commission's report (速報 and 確報)."""
    count = inc["records_affected"]
    actions = _notes(inc, "response", "recovery", "general")
    return [
        ("概要", f"{inc['facility']} ({FACILITY_TYPES[inc['facility_type']]}、{inc['prefecture']}) において、"
               f"{_jst(inc['detected_at'])}に検知。{inc['summary']}"),
        ("漏えい等が発生し、又は発生したおそれがある個人データの項目", inc["data_items"] or UNKNOWN),
        ("漏えい等が発生し、又は発生したおそれがある個人データに係る本人の数",
         f"{count:,}人" if count is not None else UNKNOWN),
        ("原因", owed.CAUSES[inc["cause"]] if inc["cause"] else UNKNOWN),
        ("二次被害又はそのおそれの有無及びその内容", inc["secondary_harm"] or UNKNOWN),
        ("本人への対応の実施状況", inc["individuals_response"] or UNKNOWN),
        ("公表の実施状況", inc["public_announcement"] or UNKNOWN),
        ("再発防止のための措置", " / ".join(_notes(inc, "prevention")) or UNKNOWN),
        ("その他参考となる事項", f"これまでの対応: {' / '.join(actions) or '調査中'}。"
                             f"不正の目的をもって行われたおそれ: {_yes(inc['cause'] in owed.MALICIOUS)}"),
    ]


def _incident_items(inc: dict) -> list[tuple[str, str]]:
    """The items of a notice to the vendor, MHLW, the prefecture or the police."""
    impact = [label for flag, label in (("service_impact", "医療情報システムの障害あり"),
                                         ("care_disrupted", "診療への支障あり"),
                                         ("personal_data_leak", "個人データ漏えい等のおそれあり")) if inc[flag]]
    actions = _notes(inc, "response", "recovery", "general")
    designated = "、".join(inc.get("designations") or [])
    return [
        ("医療機関", f"{inc['facility']} ({FACILITY_TYPES[inc['facility_type']]}、{inc['prefecture']})"
                    + (f" [{designated}]" if designated else "")),
        ("医療機関の担当者・連絡先", _contact(inc)),
        ("検知日時", _jst(inc["detected_at"])),
        ("事象の概要", inc["summary"]),
        ("原因", owed.CAUSES[inc["cause"]] if inc["cause"] else "調査中"),
        ("システム・診療への影響", "、".join(impact) if impact else "現時点で確認されていません"),
        ("個人データ漏えい等のおそれ", _yes(inc["personal_data_leak"])
         + (f" (本人の数: {inc['records_affected']:,}人)" if inc["records_affected"] is not None else "")),
        ("犯罪の疑い", _yes(owed.crime_suspected(inc))),
        ("これまでの対応", " / ".join(actions) if actions else "調査中"),
        ("現在の状況", STATUS_JA[inc["status"]]),
        ("システムベンダー", (inc["vendor"] or "未登録")
         + (f" ({inc['vendor_phone']})" if inc["vendor_phone"] else "")),
    ]


def acknowledgement(inc: dict) -> tuple[str, str]:
    """(subject, text) of the acknowledgement for the facility: the incident's number, the reports it
    owes with their deadlines and each deadline's basis, and whom to call, with hours."""
    inc = _fill(inc)
    subject = f"【医療セプター】インシデントのご報告を受け付けました: {inc['facility']}"
    lines = [f"{inc['facility']} ご担当者様", "", "医療セプターです。サイバー攻撃の疑い事案のご報告を受け付けました。",
             f"受付番号: {inc['id'][10:18]}  検知日時: {_jst(inc['detected_at'])}", ""]
    todo = open_obligations(inc)
    if todo:
        lines.append("■ 必要な報告と期限")
        for o in todo:
            lines += [f"・{o['label']}: 期限 {o['deadline_jst']} (日本時間)", f"    根拠: {o['basis_ja']}"]
        lines.append("")
    lines.append("■ 困ったときの連絡先(夜間・休日を含む)")
    lines += [f"・{c.line()}" for c in desks.emergency(inc["member"], inc["prefecture"])]
    lines += ["", "電源を切ったり初期化したりせず、ネットワークから切り離したまま、",
              "システムベンダーの指示を待ってください。", "", "本通知は TLP:RED です。院内の関係者限りとしてください。"]
    return subject, "\n".join(lines) + "\n"


@dataclass
class NoticeSent:
    party: str
    address: str
    how: str  # sent | written PATH | printed
    subject: str
    body: str


def send_notices(store: Store, inc: dict, parties: list[str], actor: str, *, smtp: SmtpConfig | None = None,
                 out_dir: Path | None = None, dry_run: bool = False) -> list[NoticeSent]:
    """Build each party's notice (one message builder, base64 since Japanese lines run long), send
    it when SMTP is given, write it as .eml under `out_dir`, and record it on the incident (audited)
    unless `dry_run`. A refusal or an unreachable server stops with a DeliveryError."""
    notices = []
    for party in parties:
        address, subject, body = notice(inc, party)
        msg = mail.message(subject, body, to=address, eight_bit=False,
                           headers={"Message-ID": mail.message_id(f"{inc['id']}|{party}|{utcnow()}"),
                                    "X-CEPTOAR-TLP": "RED"})
        notices.append((party, address, subject, body, msg.as_bytes()))
    mailer = mail.Mailer(smtp) if smtp and not dry_run else None
    if mailer is not None:
        mailer.connect()
    done = []
    try:
        for party, address, subject, body, data in notices:
            how = "printed"
            if out_dir is not None:
                path = child(private_dir(out_dir), f"{inc['id'][10:18]}-{party}.eml")
                write_private(path, data)
                how = f"written {path}"
            if mailer is not None:
                refusal = mailer.send(mail.sender().addr_spec, address, data)
                if refusal:
                    raise mail.DeliveryError(f"{party} ({address}) refused: {refusal}")
                how = "sent"
            if not dry_run:
                record_notice(store, inc, party, address, how, actor, closes=how == "sent")
            done.append(NoticeSent(party, address, how, subject, body))
    finally:
        if mailer is not None:
            mailer.close()
    return done


def send_acknowledgement(store: Store, inc: dict, actor: str, *, address: str | None = None,
                         smtp: SmtpConfig | None = None, out_dir: Path | None = None) -> NoticeSent:
    """The facility's acknowledgement: sent to `address` when SMTP is given, written as .eml under
    `out_dir`, else printed (returned); audited (`incident-acknowledge`)."""
    subject, body = acknowledgement(inc)
    to = check_address(address) if address else ""
    how = "printed"
    if to and (smtp or out_dir):
        msg = mail.message(subject, body, to=to, eight_bit=False,
                           headers={"Message-ID": mail.message_id(f"{inc['id']}|ack|{utcnow()}"),
                                    "X-CEPTOAR-TLP": "RED"})
        if out_dir is not None:
            path = child(private_dir(out_dir), f"{inc['id'][10:18]}-acknowledgement.eml")
            write_private(path, msg.as_bytes())
            how = f"written {path}"
        if smtp is not None:
            mailer = mail.Mailer(smtp)
            mailer.connect()
            try:
                refusal = mailer.send(mail.sender().addr_spec, to, msg.as_bytes())
            finally:
                mailer.close()
            if refusal:
                raise mail.DeliveryError(f"the acknowledgement to {to} was refused: {refusal}")
            how = "sent"
    store.audit.add(actor, "incident-acknowledge", inc["id"], {"how": how.split(" ")[0], "to": bool(to)})
    return NoticeSent("facility", to, how, subject, body)


def record_notice(store: Store, inc: dict, party: str, address: str, how: str, actor: str, *,
                  closes: bool) -> None:
    """A notice prepared; one sent by the hub also records the report (closing that obligation)."""
    inc["notices"].append({"party": party, "to": address, "how": how, "time": utcnow(), "actor": actor})
    if closes:
        inc["reports"].append({"party": party, "time": utcnow(), "how": "e-mail (ceptoar notify)", "actor": actor})
    with store.transaction():
        if closes:
            _save_version(store, inc)
        else:
            store.incidents.save(inc)
        store.audit.add(actor, "incident-notify", inc["id"], {"party": party, "how": how, "reported": closes})


def share(store: Store, ref: str, actor: str, *, tlp: str, summary: str) -> str:
    """An anonymized lesson (no facility name, no personal data) enters triage as a new advisory."""
    inc = find(store, ref)
    tlp = tlp_name(tlp)
    if tlp == "RED":
        raise IncidentError("a lesson for other members cannot be TLP:RED")
    for secret in (inc["facility"], inc["vendor_phone"], inc["vendor_email"]):
        if secret and secret in summary:
            raise IncidentError("the summary names the facility or its contacts: anonymize it first")
    if store.sources.get(LESSONS_SOURCE) is None:
        store.sources.upsert({"id": LESSONS_SOURCE, "kind": "stix", "url": "https://ceptoar.example.jp/lessons",
                              "name": "医療セプター 事例共有", "tlp": "GREEN", "lang": "ja", "enabled": False,
                              "defined_by": "incidents"}, keep_enabled=False)
    source = Source(id=LESSONS_SOURCE, kind="stix", name="医療セプター 事例共有", tlp=tlp, lang="ja")
    entry = advisory(source, f"lesson:{inc['id']}", title=f"【事例共有】{FACILITY_TYPES[inc['facility_type']]}における"
                     "サイバー攻撃の疑い事案", description=summary, tlp=tlp, raw=json.dumps({"summary": summary}),
                     medical_signals=["incident-lesson"])
    with store.transaction():
        store_entries(store, source, [entry], actor)
        inc["shared"] = entry.report["id"]
        store.incidents.save(inc)
        store.audit.add(actor, "incident-share", inc["id"], {"advisory": entry.report["id"], "tlp": tlp})
    return entry.report["id"]
