"""Whom a clinic can call at 2 a.m.: the contacts the incident acknowledgement and the in-hospital
notice carry, each with its hours, from the operator's contacts.toml and relay.toml: the
secretariat (its line and its after-hours line), the association's emergency desk where it has one,
the prefectural police's cyber-crime desk and MHLW's office.

The examples shipped with the hub mark every made-up telephone number `(example)`; such a value,
or one whose subscriber number is all zeros, is a placeholder. `incidents report` refuses to
acknowledge an incident with one and `ceptoar status` names each, so no clinic is sent to a
number nobody answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ceptoar.core import settings

_EXAMPLE = re.compile(r"\((?:example|例)\)|（例）|example", re.IGNORECASE)


def is_placeholder(value: str | None) -> bool:
    """A telephone number (or any contact value) that was never replaced: marked (example) or 例,
    or a number whose last eight digits are all zeros (03-0000-0000)."""
    if not value:
        return False
    digits = re.sub(r"\D", "", value)
    return bool(_EXAMPLE.search(value)) or (len(digits) >= 10 and set(digits[-8:]) == {"0"})


@dataclass
class Contact:
    role: str            # what it is for, in Japanese
    name: str
    phone: str | None
    hours: str | None
    where: str           # the file and section it comes from
    configured: bool = True
    fallback: str | None = None  # what to say when it is not configured

    @property
    def placeholder(self) -> bool:
        return is_placeholder(self.phone)

    def line(self) -> str:
        if not self.configured and self.fallback:
            return f"{self.role}: {self.fallback}"
        if not self.configured:
            return f"{self.role}: 未設定 ({self.where})"
        return (f"{self.role}: {self.name}" + (f" ☎ {self.phone}" if self.phone else "")
                + (f" ({self.hours})" if self.hours else ""))


def police_desk(prefecture: str) -> dict:
    """The prefectural police's cyber-crime desk: relay.toml's, else its name (警視庁, 大阪府警察…)."""
    default = "警視庁" if prefecture == "東京都" else f"{prefecture}警察"
    desk = settings.current().relay().get("police", {}).get(prefecture, {})
    return {"name": f"{default} サイバー犯罪相談窓口"} | desk


def emergency(member: str | None, prefecture: str | None) -> list[Contact]:
    """The contacts for one facility (its association, its prefecture), in the order to call them
    after the system vendor: the secretariat, its after-hours line, the association's desk, the
    police, MHLW."""
    cfg = settings.current()
    contacts, relay = cfg.contacts(), cfg.relay()
    sec = contacts.get("ceptoar", {})
    out = [Contact("医療セプター事務局", sec.get("name", "医療セプター事務局"), sec.get("phone"), sec.get("hours"),
                   "contacts.toml [ceptoar]")]
    after = contacts.get("after_hours")
    out.append(Contact("医療セプター 夜間・休日窓口", (after or {}).get("name", ""), (after or {}).get("phone"),
                       (after or {}).get("hours"), "contacts.toml [after_hours]", configured=bool(after)))
    desk = contacts.get("associations", {}).get(member or "")
    if desk:
        out.append(Contact("所属団体の緊急窓口", desk.get("name", member or ""), desk.get("phone"), desk.get("hours"),
                           f'contacts.toml [associations."{member}"]'))
    if prefecture:
        police = police_desk(prefecture)
        out.append(Contact("警察(サイバー犯罪相談窓口)", police["name"], police.get("phone"), police.get("hours"),
                           f'relay.toml [police."{prefecture}"]', configured=bool(police.get("phone")),
                           fallback=f"{police['name']} — 番号未登録のため最寄りの警察署へ(緊急時は110番)"))
    mhlw = relay.get("mhlw", {})
    out.append(Contact("厚生労働省", mhlw.get("name", "厚生労働省"), mhlw.get("phone"), mhlw.get("hours"),
                       "relay.toml [mhlw]"))
    return out


def placeholders() -> list[str]:
    """Every contact value in contacts.toml and relay.toml still at an example value, as
    'file [section] key: value'."""
    cfg = settings.current()
    found = []

    def walk(where: str, section: str, table: dict) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(where, f"{section}.{key}" if section else key, value)
            elif key in ("phone", "hours", "name") and isinstance(value, str) and is_placeholder(value):
                found.append(f"{where} [{section}] {key}: {value}")

    walk("contacts.toml", "", cfg.contacts())
    walk("relay.toml", "", cfg.relay())
    return found
