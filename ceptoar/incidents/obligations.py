"""What a facility hit by a cyberattack owes, and by when: the reports each incident's facts and
the facility's designations call for (vendor, MHLW, prefecture, police, the Personal Information
Protection Commission's 速報 and 確報; for a 特別社会基盤事業者 the reports the Active Cyber Defense law
requires to the competent minister and the Prime Minister; for a 自治体立 hospital its municipality),
each with its deadline, derived again whenever the facts change; and the checks on the facts
themselves (causes; prefectures, telephone numbers and free text are ceptoar.core.facts').

Every deadline carries its basis: the words of the rule (「速やかに」, 「30日以内」…) and whether the
hours or days the hub counts are the rule's own (`law`) or the secretariat's policy (`policy`, set
in relay.toml `[deadlines]`). Deadlines count from the detection time. The PPC's are in days from
the day it was known, in Japan time (初日不算入: detected on 1 December, a 30-day 確報 is due by the
end of 31 December); the others are hours.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from ceptoar.core.facts import FactError
from ceptoar.core.model import JST

CAUSES = {
    "ransomware": "ランサムウェア", "unauthorized-access": "不正アクセス", "malware": "マルウェア感染",
    "insider": "内部不正", "misdelivery": "誤送信・誤送付", "loss": "紛失・盗難", "system-failure": "システム障害",
    "ddos": "DDoS攻撃", "unknown": "調査中", "other": "その他",
}
MALICIOUS = {"ransomware", "unauthorized-access", "malware", "insider", "ddos"}  # 不正の目的をもって行われたおそれ
NOT_ATTACKS = {"misdelivery", "loss", "system-failure"}  # no unauthorized act on a computer (特定不正行為)
ACD = "特別社会基盤事業者"
MUNICIPAL = "自治体立"

PARTIES = {
    "vendor": "システムベンダー(保守業者)",
    "mhlw": "厚生労働省",
    "prefecture": "都道府県(保健所)",
    "police": "都道府県警察(サイバー犯罪相談窓口)",
    "ppc-preliminary": "個人情報保護委員会(速報)",
    "ppc-final": "個人情報保護委員会(確報)",
    "acd-minister": "厚生労働大臣(特定社会基盤事業所管大臣)",
    "acd-nco": "内閣総理大臣(国家サイバー統括室)",
    "municipality": "設置自治体(病院事業・情報政策の担当部局)",
}
ACD_LAW = "重要電子計算機に対する不正な行為による被害の防止に関する法律 第2章(特定侵害事象等の報告)"
# party → (the words of the rule, where they come from, whether the hub's count is the rule's own).
RULES = {
    "vendor": ("直ちに", "厚生労働省「医療機関におけるサイバーセキュリティ対策チェックリスト」等の初動対応", False),
    "mhlw": ("速やかに", "厚生労働省の通知(医療機関等におけるサイバーセキュリティ対策の強化について)", False),
    "prefecture": ("速やかに", "同通知(都道府県等への情報提供)", False),
    "police": ("速やかに", "同通知(犯罪の疑いがある場合の警察への相談・通報)", False),
    "ppc-preliminary": ("速やかに", "個人情報の保護に関する法律第26条第1項・同法施行規則第8条第1項"
                        "(委員会ガイドラインでは概ね3〜5日以内)", False),
    "ppc-final": ("30日以内(不正の目的をもって行われたおそれがある場合は60日以内)",
                  "個人情報の保護に関する法律施行規則第8条第2項", True),
    "acd-minister": ("主務省令で定めるところにより", ACD_LAW, False),
    "acd-nco": ("主務省令で定めるところにより", ACD_LAW, False),
    "municipality": ("速やかに", "厚生労働省の通知(地方公共団体が開設する医療機関は設置自治体にも報告)", False),
}
# Where the hub counts hours or days of its own; the operator may change each in relay.toml.
POLICY_NOTE = "期限の時間は事務局の方針(relay.toml [deadlines])で、法令の定めではありません"
CONFIRM_NOTE = "法令上の期限は主務省令で確認してください(既定値は設定で変えられます)"
STATES = {"pending": "未報告", "overdue": "期限超過", "done": "報告済み", "not-required": "対象外"}
DEFAULT_DEADLINES = {"vendor_hours": 0, "mhlw_hours": 24, "prefecture_hours": 24, "police_hours": 24,
                     "ppc_preliminary_days": 5, "ppc_final_days": 30, "ppc_final_malicious_days": 60,
                     "acd_minister_hours": 24, "acd_nco_hours": 24, "municipality_hours": 24}


def cause(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in CAUSES:
        raise FactError(f"cause must be one of {', '.join(CAUSES)}")
    return value


def crime_suspected(inc: dict) -> bool:
    flag = inc.get("crime_suspected")
    return bool(flag) if flag is not None else inc.get("cause") in MALICIOUS


def acd_event(inc: dict) -> bool:
    """A 特定侵害事象 to report under the ACD law: the facility is a 特別社会基盤事業者, the event may
    be an unauthorized act on a computer (not a misdelivery, a loss or a plain failure), and the
    computer is not known to lie outside its 特定重要電子計算機 (`specified_computer` False)."""
    return ACD in (inc.get("designations") or []) and inc.get("cause") not in NOT_ATTACKS \
        and inc.get("specified_computer") is not False


def required(inc: dict) -> dict[str, bool]:
    """Which reports the facts call for."""
    mhlw = bool(inc["service_impact"] or inc["care_disrupted"] or inc["personal_data_leak"])
    leak = bool(inc["personal_data_leak"])
    acd = acd_event(inc)
    return {"vendor": True, "mhlw": mhlw, "prefecture": mhlw, "police": crime_suspected(inc),
            "ppc-preliminary": leak, "ppc-final": leak, "acd-minister": acd, "acd-nco": acd,
            "municipality": mhlw and MUNICIPAL in (inc.get("designations") or [])}


def basis(party: str) -> dict:
    """How a party's deadline is set: the rule's words, where from, and whether the count is the rule's."""
    words, source, law = RULES[party]
    note = CONFIRM_NOTE if party.startswith("acd-") else POLICY_NOTE
    label = f"「{words}」({source})" + ("" if law else f"。{note}")
    return {"rule": words, "basis": source, "deadline_basis": "law" if law else "policy", "basis_ja": label}


def _detected(inc: dict) -> datetime:
    return datetime.fromisoformat(inc["detected_at"].replace("Z", "+00:00"))


def deadline(inc: dict, party: str, limits: dict | None = None) -> datetime:
    """When the report to `party` is due (UTC)."""
    limits = DEFAULT_DEADLINES | (limits or {})
    detected = _detected(inc)
    if party.startswith("ppc-"):
        if party == "ppc-preliminary":
            days = limits["ppc_preliminary_days"]
        else:
            days = limits["ppc_final_malicious_days" if inc.get("cause") in MALICIOUS else "ppc_final_days"]
        day = detected.astimezone(JST).date() + timedelta(days=int(days))
        return datetime.combine(day, time(23, 59, 59), JST).astimezone(UTC)
    return detected + timedelta(hours=float(limits[f"{party.replace('-', '_')}_hours"]))


def reported(inc: dict) -> dict[str, dict]:
    """party → the first record of a report made to it."""
    out: dict[str, dict] = {}
    for r in inc.get("reports") or []:
        out.setdefault(r["party"], r)
    return out


def obligations(inc: dict, now: datetime | None = None, limits: dict | None = None) -> list[dict]:
    """Every report an incident may owe, with its state: done, pending, overdue or not-required."""
    now = now or datetime.now(UTC)
    today = now.astimezone(JST).date()
    done, need = reported(inc), required(inc)
    out = []
    for party, label in PARTIES.items():
        due = deadline(inc, party, limits)
        due_jst = due.astimezone(JST)
        if party in done:
            state = "done"
        elif not need[party]:
            state = "not-required"
        else:
            state = "overdue" if now > due else "pending"
        row = {"party": party, "label": label, "required": need[party], "state": state,
               "state_ja": STATES[state], "deadline": due.strftime("%Y-%m-%dT%H:%M:%SZ"),
               "deadline_jst": f"{due_jst:%Y-%m-%d %H:%M}", "days_left": (due_jst.date() - today).days} | basis(party)
        if party in done:
            row |= {"reported_at": done[party]["time"], "how": done[party]["how"]}
        out.append(row)
    return out


def open_obligations(inc: dict, now: datetime | None = None, limits: dict | None = None) -> list[dict]:
    return [o for o in obligations(inc, now, limits) if o["state"] in ("pending", "overdue")]
