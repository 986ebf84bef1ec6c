"""What a facility hit by a cyberattack owes, and by when: the reports each incident's facts call
for (vendor, MHLW, prefecture, police, the Personal Information Protection Commission's 速報 and
確報), each with its deadline, derived again whenever the facts change; and the checks on the facts
themselves (causes; prefectures, telephone numbers and free text are ceptoar.core.facts').

Deadlines count from the detection time. The PPC's are in days from the day it was known, in
Japan time (初日不算入: detected on 1 December, a 30-day 確報 is due by the end of 31 December);
the others are hours, set in relay.toml (`[deadlines]`) by the operator.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from ceptoar.core.facts import FactError
from ceptoar.core.model import JST

CAUSES = {
    "ransomware": "ランサムウェア", "unauthorized-access": "不正アクセス", "malware": "マルウェア感染",
    "insider": "内部不正", "misdelivery": "誤送信・誤送付", "loss": "紛失・盗難", "system-failure": "システム障害",
    "unknown": "調査中", "other": "その他",
}
MALICIOUS = {"ransomware", "unauthorized-access", "malware", "insider"}  # 不正の目的をもって行われたおそれ

PARTIES = {
    "vendor": "システムベンダー(保守業者)",
    "mhlw": "厚生労働省",
    "prefecture": "都道府県(保健所)",
    "police": "都道府県警察(サイバー犯罪相談窓口)",
    "ppc-preliminary": "個人情報保護委員会(速報)",
    "ppc-final": "個人情報保護委員会(確報)",
}
STATES = {"pending": "未報告", "overdue": "期限超過", "done": "報告済み", "not-required": "対象外"}
DEFAULT_DEADLINES = {"vendor_hours": 0, "mhlw_hours": 24, "prefecture_hours": 24, "police_hours": 24,
                     "ppc_preliminary_days": 5, "ppc_final_days": 30, "ppc_final_malicious_days": 60}


def cause(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in CAUSES:
        raise FactError(f"cause must be one of {', '.join(CAUSES)}")
    return value


def crime_suspected(inc: dict) -> bool:
    flag = inc.get("crime_suspected")
    return bool(flag) if flag is not None else inc.get("cause") in MALICIOUS


def required(inc: dict) -> dict[str, bool]:
    """Which reports the facts call for."""
    mhlw = bool(inc["service_impact"] or inc["care_disrupted"] or inc["personal_data_leak"])
    leak = bool(inc["personal_data_leak"])
    return {"vendor": True, "mhlw": mhlw, "prefecture": mhlw, "police": crime_suspected(inc),
            "ppc-preliminary": leak, "ppc-final": leak}


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
    return detected + timedelta(hours=float(limits[f"{party}_hours"]))


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
               "deadline_jst": f"{due_jst:%Y-%m-%d %H:%M}", "days_left": (due_jst.date() - today).days}
        if party in done:
            row |= {"reported_at": done[party]["time"], "how": done[party]["how"]}
        out.append(row)
    return out


def open_obligations(inc: dict, now: datetime | None = None, limits: dict | None = None) -> list[dict]:
    return [o for o in obligations(inc, now, limits) if o["state"] in ("pending", "overdue")]
