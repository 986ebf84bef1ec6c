"""The National Cybersecurity Office's unified incident report (被害報告一元化の共通様式, in use since
2025-10-01; a ransomware and a DDoS variant), filled from the incident record so a hospital types its
facts once for the PPC, the police and its ministry.

The NCO's Excel file itself could not be obtained on this machine (no internet beyond package
registries): the items below follow its published descriptions (the NCO's announcement and the
public comment on the draft: reporter, incident outline, impact, the ransomware items — ransom note,
extension of encrypted files, type, intrusion method, indicators — the DDoS items, personal data,
reports made, consent to sharing with the NCO). ITEMS is the one table to align with the official
file's item names and order once it is at hand; nothing else in the hub knows the layout.

What the record does not hold is left blank and listed (`missing`), never invented.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font

from ceptoar.core.errors import CeptoarError
from ceptoar.core.facts import FACILITY_TYPES
from ceptoar.core.files import write_private
from ceptoar.incidents import obligations as owed
from ceptoar.incidents.reports import STATUS_JA, _fill, _jst, _notes

VARIANTS = {"ransomware": "ランサムウェア事案共通様式", "ddos": "DDoS攻撃事案共通様式"}


class FormError(CeptoarError, ValueError):
    pass


def _reported(party: str) -> Callable[[dict], str | None]:
    def get(inc: dict) -> str | None:
        r = owed.reported(inc).get(party)
        return f"報告済み ({_jst(r['time'])}、{r['how']})" if r else None
    return get


def _flag(key: str) -> Callable[[dict], str | None]:
    return lambda inc: None if inc.get(key) is None else ("あり" if inc[key] else "なし")


def _text(key: str) -> Callable[[dict], str | None]:
    return lambda inc: inc.get(key) or None


def _impact(inc: dict) -> str | None:
    said = [label for flag, label in (("service_impact", "医療情報システムの障害"), ("care_disrupted", "診療への支障"))
            if inc.get(flag)]
    damage = _notes(inc, "damage")
    return "、".join(said + damage) or None


# (section, item, variants it belongs to, how the record gives it)
ITEMS: list[tuple[str, str, tuple[str, ...], Callable[[dict], str | None]]] = [
    ("1 報告者", "組織名", ("ransomware", "ddos"), _text("facility")),
    ("1 報告者", "業種・組織の種類", ("ransomware", "ddos"),
     lambda inc: f"医療 ({FACILITY_TYPES.get(inc['facility_type'], inc['facility_type'])})"),
    ("1 報告者", "所在地(都道府県)", ("ransomware", "ddos"), _text("prefecture")),
    ("1 報告者", "重要インフラ事業者等への該当", ("ransomware", "ddos"),
     lambda inc: "、".join(inc.get("designations") or []) or None),
    ("1 報告者", "担当者氏名", ("ransomware", "ddos"), _text("contact_person")),
    ("1 報告者", "電話番号", ("ransomware", "ddos"), _text("facility_phone")),
    ("1 報告者", "メールアドレス", ("ransomware", "ddos"), _text("contact_email")),
    ("2 事案の概要", "認知日時", ("ransomware", "ddos"), lambda inc: _jst(inc["detected_at"])),
    ("2 事案の概要", "事案の概要", ("ransomware", "ddos"), _text("summary")),
    ("2 事案の概要", "被害を受けたシステム・機器", ("ransomware", "ddos"), _text("affected_systems")),
    ("2 事案の概要", "業務・サービスへの影響", ("ransomware", "ddos"), _impact),
    ("2 事案の概要", "重要インフラサービス維持レベルからの逸脱", ("ransomware", "ddos"), lambda inc: None),
    ("2 事案の概要", "現在の状況", ("ransomware", "ddos"), lambda inc: STATUS_JA[inc["status"]]),
    ("3 攻撃の情報", "ランサムノート(身代金の要求)", ("ransomware",), _text("ransom_demand")),
    ("3 攻撃の情報", "暗号化されたファイルの拡張子", ("ransomware",), _text("encrypted_extension")),
    ("3 攻撃の情報", "ランサムウェアの類型(暗号化・窃取・脅迫)", ("ransomware",), lambda inc: None),
    ("3 攻撃の情報", "侵入方法", ("ransomware",), _text("intrusion_vector")),
    ("3 攻撃の情報", "ランサムウェアの特徴(インディケータ情報)", ("ransomware",), lambda inc: None),
    ("3 攻撃の情報", "攻撃の手法(DDoSの類型)", ("ddos",), _text("intrusion_vector")),
    ("3 攻撃の情報", "攻撃の規模・継続時間", ("ddos",), lambda inc: None),
    ("3 攻撃の情報", "攻撃元の情報", ("ddos",), lambda inc: None),
    ("4 個人情報", "個人データの漏えい等のおそれ", ("ransomware", "ddos"), _flag("personal_data_leak")),
    ("4 個人情報", "漏えい等した個人データの項目", ("ransomware", "ddos"), _text("data_items")),
    ("4 個人情報", "本人の数", ("ransomware", "ddos"),
     lambda inc: None if inc.get("records_affected") is None else f"{inc['records_affected']:,}人"),
    ("4 個人情報", "二次被害又はそのおそれ", ("ransomware", "ddos"), _text("secondary_harm")),
    ("4 個人情報", "本人への対応", ("ransomware", "ddos"), _text("individuals_response")),
    ("4 個人情報", "公表", ("ransomware", "ddos"), _text("public_announcement")),
    ("5 報告の状況", "警察への相談・通報", ("ransomware", "ddos"), _reported("police")),
    ("5 報告の状況", "個人情報保護委員会への報告", ("ransomware", "ddos"),
     lambda inc: _reported("ppc-final")(inc) or _reported("ppc-preliminary")(inc)),
    ("5 報告の状況", "所管省庁への報告", ("ransomware", "ddos"),
     lambda inc: _reported("acd-minister")(inc) or _reported("mhlw")(inc)),
    ("5 報告の状況", "国家サイバー統括室との情報共有への同意", ("ransomware", "ddos"), lambda inc: None),
    ("6 対応", "これまでの対応", ("ransomware", "ddos"),
     lambda inc: " / ".join(_notes(inc, "response", "recovery", "general")) or None),
    ("6 対応", "再発防止策", ("ransomware", "ddos"), lambda inc: " / ".join(_notes(inc, "prevention")) or None),
    ("6 対応", "システムベンダー", ("ransomware", "ddos"),
     lambda inc: (inc["vendor"] + (f" ({inc['vendor_phone']})" if inc.get("vendor_phone") else ""))
     if inc.get("vendor") else None),
]


def variant_of(inc: dict, given: str | None) -> str:
    if given:
        if given not in VARIANTS:
            raise FormError(f"variant must be one of {', '.join(VARIANTS)}")
        return given
    if inc.get("cause") in VARIANTS:
        return inc["cause"]
    raise FormError(f"the NCO's unified form has a ransomware and a DDoS variant; this incident's cause is "
                    f"{inc.get('cause') or 'not recorded'}: give --variant ransomware|ddos (or record the cause "
                    "with `incidents edit ID --cause …`)")


def items(inc: dict, variant: str) -> list[dict]:
    """The form's items for one variant, each with its value from the record (None: blank)."""
    inc = _fill(dict(inc))
    return [{"section": section, "item": item, "value": get(inc)} for section, item, where, get in ITEMS
            if variant in where]


def write_xlsx(path: Path, inc: dict, variant: str, rows: list[dict]) -> None:
    """The items as a workbook (one sheet: section, item, value), private to its owner."""
    wb = Workbook()
    ws = wb.active
    ws.title = "報告様式"
    ws.append([f"{VARIANTS[variant]}(医療セプターによる下書き)"])
    ws["A1"].font = Font(bold=True, size=14)
    ws.append([f"事案番号 {inc['id']} / TLP:RED / 空欄は記録にない項目です。"
               "公開されている様式の項目名・順序と照合してから提出してください。"])
    ws.append([])
    ws.append(["区分", "項目", "記入内容"])
    for cell in ws[4]:
        cell.font = Font(bold=True)
    for r in rows:
        ws.append([r["section"], r["item"], r["value"]])
    ws.column_dimensions["A"].width, ws.column_dimensions["B"].width, ws.column_dimensions["C"].width = 16, 40, 80
    for row in ws.iter_rows(min_row=5):
        row[2].alignment = Alignment(wrap_text=True, vertical="top")
    buf = BytesIO()
    wb.save(buf)
    write_private(path, buf.getvalue())
