"""Facts about facilities and what they tell the hub, checked once for every room that takes them
(facility registers, incident reports): the kinds of facility, their designations, the 47
prefectures, Japanese telephone numbers and free text for notices."""

from __future__ import annotations

import difflib
import re
import unicodedata

from ceptoar.core.errors import CeptoarError
from ceptoar.core.output import has_control

FACILITY_TYPES = {"hospital": "病院", "clinic": "診療所", "dental": "歯科診療所", "pharmacy": "薬局"}

PREFECTURES = [
    "北海道", "青森県", "岩手県", "宮城県", "秋田県", "山形県", "福島県", "茨城県", "栃木県", "群馬県", "埼玉県",
    "千葉県", "東京都", "神奈川県", "新潟県", "富山県", "石川県", "福井県", "山梨県", "長野県", "岐阜県", "静岡県",
    "愛知県", "三重県", "滋賀県", "京都府", "大阪府", "兵庫県", "奈良県", "和歌山県", "鳥取県", "島根県", "岡山県",
    "広島県", "山口県", "徳島県", "香川県", "愛媛県", "高知県", "福岡県", "佐賀県", "長崎県", "熊本県", "大分県",
    "宮崎県", "鹿児島県", "沖縄県",
]
_SHORT = {p[:-1] if p != "北海道" else p: p for p in PREFECTURES}

# What a facility may be designated as, each with the rule that designates it.
DESIGNATIONS = {
    "特定機能病院": "医療法第4条の2 (厚生労働大臣の承認)",
    "地域医療支援病院": "医療法第4条 (都道府県知事の承認)",
    "基幹インフラ": ("経済施策を一体的に講ずることによる安全保障の確保の推進に関する法律 第50条 "
                     "(特定社会基盤事業者)"),
    "特別社会基盤事業者": ("重要電子計算機に対する不正な行為による被害の防止に関する法律 第2条 "
                           "(特定重要電子計算機を使用する特定社会基盤事業者)"),
    "自治体立": "地方公共団体が開設する医療機関 (設置自治体への報告を伴う)",
}


class FactError(CeptoarError, ValueError):
    pass


def designations(value: str | list[str] | None) -> list[str]:
    """A facility's designations (`|`-separated text, or a list), each one of DESIGNATIONS, in that
    order and without repeats; FactError names a designation outside the list."""
    given = value.split("|") if isinstance(value, str) else list(value or [])
    out = []
    for d in given:
        d = unicodedata.normalize("NFKC", d or "").strip()
        if not d:
            continue
        if d not in DESIGNATIONS:
            raise FactError(f"designation {d[:40]!r} must be one of {', '.join(DESIGNATIONS)}")
        out.append(d)
    return [d for d in DESIGNATIONS if d in out]


def prefecture(name: str) -> tuple[str, str | None]:
    """One of the 47 (and a notice when a short form was completed), or FactError with suggestions."""
    given = unicodedata.normalize("NFKC", name or "").strip()
    if given in PREFECTURES:
        return given, None
    if given in _SHORT:
        full = _SHORT[given]
        return full, f"prefecture {given!r} taken as {full}"
    near = difflib.get_close_matches(given, PREFECTURES + list(_SHORT), n=3, cutoff=0.3)
    hint = f" (did you mean {', '.join(dict.fromkeys(_SHORT.get(n, n) for n in near))}?)" if near else ""
    raise FactError(f"unknown prefecture {name!r}: give one of the 47, e.g. 東京都, 大阪府, 北海道{hint}")


def phone(value: str | None, what: str = "telephone number") -> str | None:
    """A Japanese telephone number as written (full-width digits made plain), or FactError."""
    if value is None or not value.strip():
        return None
    v = unicodedata.normalize("NFKC", value).strip()
    digits = re.sub(r"\D", "", v)
    domestic = digits.startswith("0") and 10 <= len(digits) <= 11
    international = v.startswith("+81") and 11 <= len(digits) <= 12
    if not re.fullmatch(r"\+?[0-9()\- ]+", v) or not (domestic or international):
        raise FactError(f"{what} {value!r} is not a Japanese telephone number (e.g. 03-1234-5678)")
    return v


def text(value: str | None, what: str, limit: int = 2000) -> str | None:
    """Free text for a notice: no control characters but line breaks, at most `limit` characters."""
    if value is None:
        return None
    v = value.replace("\r\n", "\n").strip()
    if has_control(v):
        raise FactError(f"{what} contains control characters")
    if len(v) > limit:
        raise FactError(f"{what} is {len(v)} characters; at most {limit}")
    return v or None
