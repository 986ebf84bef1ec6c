"""Incidents at member facilities: intake, tracking to recovery, and the relay to the system
vendor, MHLW's 医療技術情報推進室 and the prefecture.

Incident data is TLP:RED. Its STIX objects are kept apart from advisories (origin 'incident'), so
no collection, digest or export ever carries them; only `share` turns an anonymized lesson into a
new advisory for triage.
"""

from __future__ import annotations

import json
import tomllib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from ceptoar import extensions, mail
from ceptoar.errors import CeptoarError
from ceptoar.files import child, private_dir, write_private
from ceptoar.ingest import store_entries
from ceptoar.mail import SmtpConfig, check_address
from ceptoar.model import (
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
from ceptoar.normalize import advisory
from ceptoar.store import Store, utcnow

STATUSES = ["reported", "vendor-contacted", "reported-to-mhlw", "recovering", "closed"]
FACILITY_TYPES = {"hospital": "病院", "clinic": "診療所", "dental": "歯科診療所", "pharmacy": "薬局"}
NOTE_KINDS = {"damage": "被害", "response": "対応", "recovery": "復旧", "prevention": "再発防止", "general": "メモ"}
LESSONS_SOURCE = "ceptoar-lessons"


class IncidentError(CeptoarError, ValueError):
    pass


@lru_cache(maxsize=1)
def relay_config() -> dict:
    """Where notices go: the operator's relay.toml (configuration folder), else the example."""
    from ceptoar import settings

    return tomllib.loads(settings.current().config_file("relay.toml").read_text(encoding="utf-8"))


def mhlw_due(inc: dict) -> bool:
    """MHLW asks for a report when the information system is impaired, personal data may have
    leaked, or care is disrupted."""
    return bool(inc["service_impact"] or inc["personal_data_leak"] or inc["care_disrupted"])


def next_steps(inc: dict) -> list[str]:
    mhlw = relay_config()["mhlw"]
    steps = []
    if inc["status"] == "reported":
        short = inc["id"][10:18]
        vendor = f"{inc['vendor'] or 'システムベンダー'}" + (f" ({inc['vendor_phone']})" if inc["vendor_phone"] else "")
        steps.append(f"直ちにシステムベンダーに連絡してください: {vendor}  → incidents notify {short} --to vendor")
    if mhlw_due(inc) and STATUSES.index(inc["status"]) < STATUSES.index("reported-to-mhlw"):
        steps.append(f"{mhlw['name']} ({mhlw['phone']}、{mhlw['hours']}) に報告してください"
                     f"  → incidents notify {inc['id'][10:18]} --to mhlw")
        steps.append(f"{inc['prefecture']}にも情報提供してください"
                     f"  → incidents notify {inc['id'][10:18]} --to prefecture")
    if inc["status"] in ("reported-to-mhlw", "recovering"):
        steps.append("被害・対応・復旧・再発防止の状況を記録してください  → incidents update ID --status … --note …")
    return steps


def _stix(inc: dict, created: str, modified: str) -> list[dict]:
    red = TLP_IDS["RED"]
    incident = {
        "type": "incident", "spec_version": "2.1", "id": inc["stix_id"], "created": created, "modified": modified,
        "name": f"{inc['facility']}: サイバー攻撃の疑い", "description": inc["summary"], "object_marking_refs": [red],
    }
    incident = extensions.with_props(incident, extensions.INCIDENT, incident={
        k: inc[k] for k in ("facility_type", "prefecture", "member", "detected_at", "status", "service_impact",
                            "personal_data_leak", "care_disrupted")})
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


def report(store: Store, actor: str, *, facility: str, facility_type: str, prefecture: str, member: str,
           summary: str, detected_at: datetime | None = None, vendor: str | None = None,
           vendor_phone: str | None = None, vendor_email: str | None = None, service_impact: bool = False,
           personal_data_leak: bool = False, care_disrupted: bool = False) -> dict:
    if facility_type not in FACILITY_TYPES:
        raise IncidentError(f"facility type must be one of {', '.join(FACILITY_TYPES)}")
    if store.members.get(member) is None:
        raise IncidentError(f"no member {member!r} (see `ceptoar members list`)")
    if not facility.strip() or not summary.strip() or not prefecture.strip():
        raise IncidentError("facility, prefecture and summary are required")
    if vendor_email:
        vendor_email = check_address(vendor_email)
    now = datetime.now(UTC)
    key = uuid.uuid4()
    inc = {"id": f"incident--{key}", "stix_id": f"incident--{key}", "report_id": f"report--{uuid.uuid4()}",
           "facility": facility.strip(), "facility_type": facility_type, "prefecture": prefecture.strip(),
           "member": member, "summary": summary.strip(), "detected_at": _stamp(detected_at or now),
           "vendor": vendor, "vendor_phone": vendor_phone, "vendor_email": vendor_email,
           "service_impact": service_impact, "personal_data_leak": personal_data_leak,
           "care_disrupted": care_disrupted, "status": "reported",
           "history": [{"status": "reported", "time": utcnow(), "actor": actor}], "notes": [], "notices": [],
           "shared": None, "created": utcnow()}
    inc["stix_created"] = stix_time(now)
    with store.transaction():
        store.incidents.save(inc)
        _store_stix(store, inc, inc["stix_created"], inc["stix_created"])
        store.audit.add(actor, "incident-report", inc["id"], {"member": member, "mhlw_due": mhlw_due(inc)})
    return inc


def find(store: Store, ref: str) -> dict:
    inc = store.incidents.find(ref.strip())
    if inc is None:
        raise IncidentError(f"no incident {ref!r} (give its id or 6+ characters of it)")
    return inc


def show(store: Store, ref: str, actor: str) -> dict:
    """An incident as a person reads it (TLP:RED facts): every reading is audited."""
    inc = find(store, ref)
    store.audit.add(actor, "incident-show", inc["id"])
    return inc


def update(store: Store, ref: str, actor: str, *, status: str | None = None, note: str | None = None,
           note_kind: str = "general") -> dict:
    inc = find(store, ref)
    if status is None and not note:
        raise IncidentError("give --status, --note or both")
    if status is not None:
        if status not in STATUSES:
            raise IncidentError(f"status must be one of {', '.join(STATUSES)}")
        if STATUSES.index(status) < STATUSES.index(inc["status"]):
            raise IncidentError(f"the incident is already {inc['status']}; statuses only move forward")
        if status != inc["status"]:
            inc["status"] = status
            inc["history"].append({"status": status, "time": utcnow(), "actor": actor})
    if note:
        if note_kind not in NOTE_KINDS:
            raise IncidentError(f"note kind must be one of {', '.join(NOTE_KINDS)}")
        inc["notes"].append({"kind": note_kind, "text": note, "time": utcnow(), "actor": actor})
    with store.transaction():
        store.incidents.save(inc)
        previous = store.objects.max_modified([inc["stix_id"]])[inc["stix_id"]]
        _store_stix(store, inc, inc["stix_created"], later_than(now_stix(), previous))
        store.audit.add(actor, "incident-update", inc["id"],
                        {"status": status, "note_kind": note_kind if note else None})
    return inc


def notice(inc: dict, party: str) -> tuple[str, str, str]:
    """(recipient address, subject, body) of the notice to one party, in Japanese."""
    cfg = relay_config()
    facility_type = FACILITY_TYPES[inc["facility_type"]]
    impact = [label for flag, label in (("service_impact", "医療情報システムの障害あり"),
                                         ("care_disrupted", "診療への支障あり"),
                                         ("personal_data_leak", "個人情報漏えいのおそれあり")) if inc[flag]]
    actions = [n["text"] for n in inc["notes"] if n["kind"] in ("response", "recovery", "general")]
    if party == "vendor":
        address = inc["vendor_email"] or cfg.get("vendors", {}).get(inc["vendor"] or "", {}).get("email")
        to_name = inc["vendor"] or "システムベンダー"
        opening = ("貴社が保守を担当されている医療機関のシステムについて、サイバー攻撃の疑いがあり、"
                   "至急のご対応をお願いいたします。")
    elif party == "mhlw":
        address, to_name = cfg["mhlw"]["email"], cfg["mhlw"]["name"]
        opening = "医療機関におけるサイバー攻撃の疑い事案について、下記のとおりご報告いたします。"
    elif party == "prefecture":
        pref = cfg.get("prefectures", {}).get(inc["prefecture"], {})
        address, to_name = pref.get("email"), pref.get("name", inc["prefecture"])
        opening = "管内の医療機関におけるサイバー攻撃の疑い事案について、下記のとおり情報提供いたします。"
    else:
        raise IncidentError("notices go to vendor, mhlw or prefecture")
    if not address:
        raise IncidentError(f"no e-mail address for {party} ({to_name}): give --vendor-email when reporting, or "
                            "add it to relay.toml in the configuration folder (CEPTOAR_CONFIG)")
    address = check_address(address)
    detected = datetime.fromisoformat(inc["detected_at"].replace("Z", "+00:00")).astimezone(JST)
    lines = [
        f"{to_name} 御中", "", opening, "",
        "記", "",
        f"1. 医療機関: {inc['facility']} ({facility_type}、{inc['prefecture']})",
        f"2. 検知日時: {detected:%Y年%m月%d日 %H:%M} (日本時間)",
        f"3. 事象の概要: {inc['summary']}",
        f"4. システム・診療への影響: {'、'.join(impact) if impact else '現時点で確認されていません'}",
        f"5. 個人情報漏えいのおそれ: {'あり' if inc['personal_data_leak'] else '現時点で確認されていません'}",
        f"6. これまでの対応: {' / '.join(actions) if actions else '調査中'}",
        f"7. 現在の状況: {inc['status']}",
        f"8. システムベンダー: {inc['vendor'] or '未登録'}"
        + (f" ({inc['vendor_phone']})" if inc["vendor_phone"] else ""),
        "9. 連絡先: 医療セプター事務局 (本通知の返信先)", "",
        f"(医療セプター 事案番号 {inc['id']})", "", "以上",
        "", "本通知は TLP:RED です。宛先の方限りとし、転送しないでください。",
    ]
    subject = f"【医療セプター】サイバー攻撃の疑い事案の{'ご連絡' if party == 'vendor' else '報告'}: {inc['facility']}"
    return address, subject, "\n".join(lines)


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
                record_notice(store, inc, party, address, how, actor)
            done.append(NoticeSent(party, address, how, subject, body))
    finally:
        if mailer is not None:
            mailer.close()
    return done


def record_notice(store: Store, inc: dict, party: str, address: str, how: str, actor: str) -> None:
    inc["notices"].append({"party": party, "to": address, "how": how, "time": utcnow(), "actor": actor})
    with store.transaction():
        store.incidents.save(inc)
        store.audit.add(actor, "incident-notify", inc["id"], {"party": party, "how": how})


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


def poster_html(facility: str, vendor: str | None, vendor_phone: str | None, vendor_contact: str | None) -> str:
    from ceptoar.digest.render import templates
    cfg = relay_config()
    return templates().get_template("poster.html.j2").render(facility=facility, vendor=vendor,
                                                             vendor_phone=vendor_phone,
                                                         vendor_contact=vendor_contact, mhlw=cfg["mhlw"])


def write_poster(path: Path, **kw) -> None:
    write_private(path, poster_html(**kw))
