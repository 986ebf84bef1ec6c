"""Rendering: one digest (or flash alert) per segment, member × clearance × frequency × language,
as UTF-8 MIME with text and HTML parts. Per recipient only headers and the unsubscribe link change:
the body bytes are built once and the link is substituted."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from jinja2 import Environment

from ceptoar.clinics.responses import ANSWERS, ANSWERS_EN
from ceptoar.core import extensions, mail, settings
from ceptoar.core.model import JST, TLP_ORDER, effective_severity
from ceptoar.core.output import clean
from ceptoar.core.templates import environment
from ceptoar.facilities.matching import CONFIDENCE, CONFIDENCE_JA
from ceptoar.facilities.registers import row_line
from ceptoar.publishing import clinic
from ceptoar.store import Store

PLACEHOLDER = "@@UNSUBSCRIBE_URL@@"
LIST_PLACEHOLDER = "@@DIGEST_URL@@"  # each recipient's signed link to the digest's whole list
# Where a subscriber's facility block goes (its own line in each part): the rest is the segment's.
FACILITY_TEXT, FACILITY_HTML = "@@FACILITY_TEXT@@", "@@FACILITY_HTML@@"
HERE = Path(__file__).parent
SEVERITY = {"ja": {"critical": "緊急", "high": "高", "medium": "中", "low": "低", None: "未評価"},
            "en": {"critical": "Critical", "high": "High", "medium": "Medium", "low": "Low", None: "Not rated"}}
TLP_TEXT = {
    "ja": {"CLEAR": "TLP:CLEAR — 公開情報です。自由に共有できます。",
           "GREEN": "TLP:GREEN — 医療セプターの会員とその関係者の間に限って共有できます。公開しないでください。",
           "AMBER": "TLP:AMBER — 受信した組織の中で、知る必要のある人に限って共有できます。",
           "AMBER+STRICT": "TLP:AMBER+STRICT — 受信した組織の中に限って共有できます。",
           "RED": "TLP:RED — 受信者本人限りです。転送しないでください。"},
    "en": {"CLEAR": "TLP:CLEAR — public information, may be shared freely.",
           "GREEN": "TLP:GREEN — share within the medical CEPTOAR community only; do not publish.",
           "AMBER": "TLP:AMBER — share within your organization, on a need-to-know basis.",
           "AMBER+STRICT": "TLP:AMBER+STRICT — share within your organization only.",
           "RED": "TLP:RED — for the named recipient only; do not forward."},
}
TLP_COLOR = {"CLEAR": "#555", "GREEN": "#33a532", "AMBER": "#c78500", "AMBER+STRICT": "#c78500", "RED": "#c00"}
# (subject, heading) of each kind of message, per language.
TITLES = {
    "ja": {"digest": ("【医療セプター】セキュリティ情報 {date} ({n}件)", "{date}のセキュリティ情報 ({n}件)"),
           "flash": ("【医療セプター】緊急セキュリティ情報 {date}", "緊急のお知らせ (警戒強化期間中)"),
           "targeted": ("【医療セプター】緊急: 貴院の {device} に該当する情報 ({n}件)",
                        "緊急: 貴院の台帳の機器({exposure})に該当します"),
           "correction": ("【医療セプター】訂正: 先にお送りした緊急情報について ({n}件)",
                          "先にお送りした緊急情報の訂正・確認結果")},
    "en": {"digest": ("[Medical CEPTOAR] Security information {date} ({n} items)",
                      "Security information of {date} ({n} items)"),
           "flash": ("[Medical CEPTOAR] URGENT security information {date}", "Urgent notice (heightened alert period)"),
           "targeted": ("[Medical CEPTOAR] URGENT: {n} item(s) affect your {device}",
                        "Urgent: this affects a system in your register ({exposure})"),
           "correction": ("[Medical CEPTOAR] Correction of urgent information sent earlier ({n})",
                          "Corrections and review results of urgent information sent earlier")},
}
# A register row's exposure, exactly as the row states it.
EXPOSURE = {"ja": {(True, True): "インターネットに公開・リモート保守", (True, False): "インターネットに公開",
                   (False, True): "リモート保守", (False, False): "台帳に登録"},
            "en": {(True, True): "exposed to the internet and remotely maintained",
                   (True, False): "exposed to the internet", (False, True): "remotely maintained",
                   (False, False): "in your register"}}
# What the digest counts beyond the items it shows (by kind), and the note on unreviewed alerts.
COUNT_KINDS = {"ja": {"kev": "悪用が確認された脆弱性", "vulnerability": "脆弱性", "notice": "注意喚起・お知らせ",
                      "lesson": "事例共有"},
               "en": {"kev": "known exploited vulnerabilities", "vulnerability": "vulnerabilities",
                      "notice": "notices", "lesson": "lessons shared"}}
UNREVIEWED = {"ja": ("※印の情報は、医療セプターの分析担当者が確認する前に自動でお送りしています。"
                     "確認の結果、内容が変わった場合は訂正をお送りします。"),
              "en": ("Items marked * were sent automatically, before review by the CEPTOAR secretariat's analysts; "
                     "if review changes them, a correction follows.")}
CORRECTIONS = {"ja": {"rejected": "分析の結果、貴院への対応は不要と判断されました(取り下げ)。",
                      "severity": "分析の結果、重要度が「{from_}」から「{to}」に変更されました。",
                      "published": "分析担当者が確認し、正式に配信しました(重要度: {severity})。"},
               "en": {"rejected": "Review found no action needed by your facility (withdrawn).",
                      "severity": "Review changed its severity from {from_} to {to}.",
                      "published": "Reviewed by the secretariat and published (severity: {severity})."}}
BRIEF_MAX = 30  # items a digest lists in one line each, after those it shows in full
HTML_TEXT = {
    "ja": {"severity": "重要度", "kev": "悪用が確認されています (CISA KEV)", "action": "対応",
           "original": "英語の原文", "products": "対象製品", "summary": "概要", "details": "詳細",
           "jvn": "(JVN、日本語)", "footer_member": "このメールは{}の会員向けに医療セプターが配信しています。",
           "period_title": "警戒強化期間中です:",
           "period_text": "政府から、重要インフラ事業者等に対しサイバーセキュリティ対策の強化が要請されています。",
           "notice_title": "サイバー攻撃が疑われたら (院内掲示用)",
           "notice_vendor": "まず、お使いの電子カルテ等のシステムベンダー(保守業者)に直ちに連絡してください。",
           "notice_mhlw": ("システムが停止した、診療に支障が出た、個人情報が漏えいしたおそれがある場合は"
                           "報告してください:"),
           "notice_ceptoar": "医療セプター事務局にもご一報ください。", "hours": "平日 9:00–18:00",
           "unsubscribe": "配信停止"},
    "en": {"severity": "Severity", "kev": "Known exploited (CISA KEV)", "action": "What to do",
           "original": "Original", "products": "Products", "summary": "Summary", "details": "Details",
           "jvn": "(JVN, Japanese)", "footer_member": "Sent by the medical CEPTOAR to members of {}.",
           "period_title": "Heightened alert period:",
           "period_text": "The government asks critical-infrastructure operators to strengthen cybersecurity.",
           "notice_title": "If you suspect a cyberattack (post this in your facility)",
           "notice_vendor": "Call your system vendor (maintenance contractor) at once.",
           "notice_mhlw": "If systems stopped, care was disrupted or personal data may have leaked, report to",
           "notice_ceptoar": "Let the CEPTOAR secretariat know as well.", "hours": "weekdays 9:00-18:00 JST",
           "unsubscribe": "Unsubscribe"},
}


def templates() -> Environment:
    return environment(HERE / "templates")


def safe_url(url: str | None) -> str | None:
    """A link worth making clickable: http(s) only, no spaces, quotes or control characters;
    anything else is shown as text."""
    if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s\"'<>\\\x00-\x1f\x7f-\x9f]+", url, re.I):
        return None
    return url


@dataclass
class Rendered:
    subject: str
    head: bytes  # headers common to every recipient of the segment
    body: bytes  # MIME body with PLACEHOLDER where each recipient's unsubscribe URL goes
    count: int
    tlp: str
    text: str = ""  # the parts as rendered, for previews
    html: str = ""
    items: dict = field(default_factory=dict)  # advisory id → its item as shown (for facility blocks)
    lang: str = "ja"
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # per segment: compose's pieces, …

    def pieces(self, stuffed: bool) -> list:
        """The body cut where each recipient's parts go: literal bytes (with every '.' after a line
        break doubled when `stuffed`; a '.' opening a piece is compose's to judge) and the names
        "url", "text", "html". Cut once per segment, not per message."""
        if ("pieces", stuffed) not in self.cache:
            out, pos = [], 0
            for m in _CUTS.finditer(self.body):
                out += [mail.stuff_lines(self.body[pos:m.start()]) if stuffed else self.body[pos:m.start()],
                        _CUT_NAMES[m.group(0)]]
                pos = m.end()
            out.append(mail.stuff_lines(self.body[pos:]) if stuffed else self.body[pos:])
            self.cache["pieces", stuffed] = out
        return self.cache["pieces", stuffed]


_CUT_NAMES = {PLACEHOLDER.encode(): "url", LIST_PLACEHOLDER.encode(): "list",
              (FACILITY_TEXT + "\r\n").encode(): "text", (FACILITY_HTML + "\r\n").encode(): "html"}
_CUTS = re.compile(b"|".join(re.escape(k) for k in _CUT_NAMES))


def jst(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(JST)


# KEV's standard required actions, in Japanese (free text stays as written, under 英語の原文). Keys as
# `_kev_sentence` makes them of the text for clinics: lower case, one space, no final period.
KEV_ACTIONS_JA = {
    "apply mitigations per vendor instructions or discontinue use of the product if mitigations are unavailable":
        "ベンダーの指示に従って緩和策を適用してください。緩和策がない場合は、その製品の使用を中止してください。",
    "apply updates per vendor instructions": "ベンダーの指示に従ってアップデートを適用してください。",
    "apply updates per vendor instructions or discontinue use of the product if updates are unavailable":
        "ベンダーの指示に従ってアップデートを適用してください。アップデートがない場合は、その製品の使用を中止してください。",
    "apply remediations or mitigations per vendor instructions or discontinue use of the product if remediation "
    "or mitigations are unavailable":
        "ベンダーの指示に従って修正または緩和策を適用してください。どちらもない場合は、その製品の使用を中止してください。",
    "the impacted product is end-of-life and should be disconnected if still in use":
        "この製品はサポートが終了しています。使用中であれば、ネットワークから切り離してください。",
    "the impacted products are end-of-life and should be disconnected if still in use":
        "これらの製品はサポートが終了しています。使用中であれば、ネットワークから切り離してください。",
}
def _kev_sentence(text: str) -> str:
    return " ".join(text.split()).lower().rstrip(".").strip()


MAX_CVES = 5
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, None: 4}


CSAF_ACTIONS_JA = {
    "vendor_fix": "製造元から修正版(アップデート)が提供されています。保守業者に適用を依頼してください。",
    "optional_patch": "製造元から任意の修正プログラムが提供されています。適用するか保守業者に相談してください。",
    "mitigation": "製造元が被害を抑える対策(緩和策)を示しています。保守業者と確認して実施してください。",
    "workaround": "製造元が回避策を示しています。保守業者と確認して実施してください。",
    "fix_planned": "修正版は提供予定です。提供されるまで、製造元が示す対策を保守業者と確認してください。",
    "none_available": "現時点で修正版はありません。製造元が示す対策を保守業者と確認してください。",
    "no_fix_planned": ("修正版は提供されない予定です。"
                       "ネットワークからの切り離しや機器の更新を保守業者と検討してください。"),
}
KIND_ACTIONS = {
    "vulnerability": {
        "ja": ("お使いの製品が該当するか保守業者・販売店に確認し、"
               "該当する場合は修正版への更新または回避策の適用を依頼してください。"),
        "en": "Check with your vendor whether you use the product; if so, apply the update or the workaround."},
    "notice": {"ja": "内容をお読みになり、記載された対策を実施してください(リンク先に詳細があります)。",
               "en": "Read the notice and follow what it asks (details at the link)."},
    "lesson": {"ja": "院内で共有し、同じ被害を防ぐための対策がご自身の施設でも取られているか確認してください。",
               "en": "Share it in your facility and check that the measures it describes are in place."},
}
SHORTENERS = {"bit.ly", "t.co", "goo.gl", "tinyurl.com", "ow.ly", "is.gd", "buff.ly", "x.gd", "lnkd.in", "amzn.to",
              "rebrand.ly", "cutt.ly", "t.ly", "v.gd", "shorturl.at", "rb.gy", "tiny.cc", "bl.ink", "s.id"}
SUMMARY_MAX = 400


def kind_of(report: dict, cves: list[str], kev: bool) -> str:
    """vulnerability, notice (注意喚起, a ministry's circular) or lesson (an incident shared)."""
    if "incident-lesson" in (extensions.prop(report, "medical_signals", list) or []):
        return "lesson"
    if cves or kev or extensions.prop(report, "csaf", dict):
        return "vulnerability"
    return "notice"


def products_of(report: dict) -> str | None:
    """The affected products as the source names them (with JVN's affected versions)."""
    kev = extensions.prop(report, "kev", dict) or {}
    if isinstance(kev.get("product"), str) and kev["product"]:
        vendor = kev.get("vendor_project") if isinstance(kev.get("vendor_project"), str) else ""
        # "Git Git" is "Git", "Microsoft Microsoft Windows" "Microsoft Windows": no vendor twice.
        same = vendor and kev["product"].casefold().startswith(vendor.casefold())
        return kev["product"] if same or not vendor else f"{vendor} {kev['product']}"
    names = [p for p in ((extensions.prop(report, "csaf", dict) or {}).get("products") or []) if isinstance(p, str)]
    if not names:
        for p in extensions.prop(report, "products", list) or []:
            if isinstance(p, dict) and isinstance(p.get("product"), str):
                versions = [v for v in p.get("versions") or [] if isinstance(v, str)]
                names.append(" ".join([p["product"], *versions[:2]]))
    names = list(dict.fromkeys(names))
    if not names:
        return None
    return "、".join(names[:3]) + (f" ほか {len(names) - 3} 製品" if len(names) > 3 else "")


def product_name(report: dict, title: str) -> str:
    """The product an English vulnerability item is about, to name it in a fixed Japanese title:
    KEV's vendor and product; a CSAF advisory's title (CISA titles them by vendor and product)."""
    if (extensions.prop(report, "kev", dict) or {}).get("product"):
        return products_of(report) or title
    return title if len(title) <= 60 else products_of(report) or title


def english_action(report: dict) -> str | None:
    """The source's own words on what to do, when it gives any (KEV, CSAF), without what only US
    federal agencies must do."""
    kev = extensions.prop(report, "kev", dict) or {}
    remediations = [x for r in (extensions.prop(report, "csaf", dict) or {}).get("remediations") or []
                    if (x := clinic.for_clinics(r))]
    return clinic.for_clinics(kev.get("required_action")) or (" / ".join(remediations[:3]) if remediations else None)


def fixed_action_ja(report: dict) -> str | None:
    """KEV's standard required actions and CSAF's remediation categories in fixed Japanese."""
    kev = extensions.prop(report, "kev", dict) or {}
    if isinstance(kev.get("required_action"), str):
        return KEV_ACTIONS_JA.get(_kev_sentence(clinic.for_clinics(kev["required_action"]) or ""))
    categories = (extensions.prop(report, "csaf", dict) or {}).get("remediation_categories") or []
    phrases = [CSAF_ACTIONS_JA[c] for c in categories if c in CSAF_ACTIONS_JA]
    return "".join(dict.fromkeys(phrases)) or None


def lines(text: str | None) -> str:
    """Multi-line text made safe line by line (control characters shown, line breaks kept)."""
    return "\n".join(clean(line) for line in (text or "").split("\n"))


def link(url: str | None) -> dict | None:
    """A link as mail shows it: the whole URL as its text (its host visible); clickable only
    when it is plain http(s) and not a link shortener."""
    if not isinstance(url, str) or not url.strip():
        return None
    target = safe_url(url)
    host = urlsplit(target).hostname if target else None
    if host and host.lower().removeprefix("www.") in SHORTENERS:
        target = None
    return {"href": target, "text": clean(url)}


def item(a: dict, lang: str) -> dict:
    """One advisory as a digest shows it. For a Japanese reader: the analyst's text first, else
    JVN's Japanese entry, else the source's own Japanese; what exists only in English is shown
    apart, under 英語の原文, and nothing pretends to be translated."""
    report = a["report"]
    kev = "kev" in a.get("tags", []) or bool(extensions.prop(report, "kev", dict))
    severity = digest_severity(a, kev)
    kind = kind_of(report, a["cves"], kev)
    text = extensions.prop(report, "clinic", dict) or {}
    jvn = text.get("jvn") if isinstance(text.get("jvn"), dict) else {}
    own_ja = (report.get("lang") or a.get("lang")) == "ja"
    title, source_link = a["title"] or "", link(a.get("url"))
    out = {"severity_label": SEVERITY[lang][severity], "severity": severity, "tlp": a["tlp"], "kev": kev, "kind": kind,
           "products": products_of(report), "cves": short_cves(a["cves"], lang), "original": None,
           "medical": bool(a.get("medical")) or "medical" in (a.get("tags") or []),
           "pre_review": bool(a.get("pre_review")), "published": a.get("published"),
           "ransomware": kev and ((extensions.prop(report, "kev", dict) or {}).get("known_ransomware_campaign_use")
                                  or "").lower() == "known",
           "epss": a.get("epss"), "epss_text": epss_text(a.get("epss"), lang)}
    if lang == "en":
        return out | {"title": clean(title), "summary": lines(text.get("summary_en")),
                      "action": lines(text.get("action_en") or english_action(report) or KIND_ACTIONS[kind]["en"]),
                      "link": source_link}
    own_jvn = extensions.prop(report, "jvn", dict) or {}
    summary = text.get("summary_ja") or (jvn.get("overview") if jvn else None) or \
        (clinic.plain(report.get("description")) if own_ja else None)
    action = (text.get("action_ja") or (jvn.get("solution") if jvn else None)
              or (clinic.plain(own_jvn.get("solution")) if own_ja else None)
              or (fixed_action_ja(report) if kind == "vulnerability" else None) or KIND_ACTIONS[kind]["ja"])
    out |= {"summary": lines(clinic.plain(summary, SUMMARY_MAX)), "action": lines(action)}
    if own_ja:
        return out | {"title": clean(title), "link": source_link}
    # Not written in Japanese: a Japanese title (JVN's, else a fixed phrasing naming the product),
    # the English apart with its own link.
    ja_title = (jvn.get("title") if jvn else None) or \
        (f"{product_name(report, title)} の脆弱性" if kind == "vulnerability" and out["products"] else None)
    english = english_action(report)
    out["original"] = {"title": clean(title) if ja_title else None,
                       "text": lines(english) if english and not text.get("action_ja") else None,
                       "link": source_link if jvn else None}
    if not any(out["original"].values()):
        out["original"] = None
    return out | {"title": clean(ja_title or title), "link": link(jvn.get("url")) if jvn else source_link,
                  "jvn": bool(jvn)}


def digest_severity(a: dict, kev: bool) -> str | None:
    """The analyst's or the score's severity; an actively exploited vulnerability is at least high."""
    sev = effective_severity(a)
    if kev and SEVERITY_ORDER[sev] > SEVERITY_ORDER["high"]:
        return "high"
    return sev


def short_cves(cves: list[str], lang: str) -> list[str]:
    """At most five CVE ids; the rest counted."""
    if len(cves) <= MAX_CVES:
        return cves
    more = len(cves) - MAX_CVES
    return cves[:MAX_CVES] + [f"ほか {more} 件" if lang == "ja" else f"and {more} more"]


def _wrap(text: str, width: int = 300) -> str:
    """SMTP lines stay under 998 octets: hard-wrap long lines (UTF-8: up to 3 octets a character)."""
    out = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        indent = line[:len(line) - len(line.lstrip(" "))]
        out.extend(textwrap.wrap(line, width, break_long_words=True, replace_whitespace=False,
                                 subsequent_indent=indent) or [""])
    return "\n".join(out)


EPSS_LIKELY = 0.1  # an EPSS probability from which an advisory ranks with the likely exploited


def rank_key(i: dict) -> tuple:
    """Most urgent first: actively exploited (used by ransomware campaigns first, as CISA's KEV
    catalog says), then likely to be exploited soon (EPSS ≥ 10%), then medical, then by severity."""
    return (not i["kev"], not i.get("ransomware"), not (i.get("epss") or 0) >= EPSS_LIKELY, not i["medical"],
            SEVERITY_ORDER[i["severity"]])


def epss_text(value, lang: str) -> str | None:
    """FIRST's EPSS in plain words: 「今後30日間に悪用される可能性の推定: 12%（EPSS）」."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    pct = "1%未満" if value < 0.01 and lang == "ja" else "under 1%" if value < 0.01 else f"{value * 100:.0f}%"
    return (f"今後30日間に悪用される可能性の推定: {pct}（EPSS）" if lang == "ja"
            else f"Estimated chance of exploitation in the next 30 days: {pct} (EPSS)")


def render(store: Store, advisories: list[dict], *, lang: str, member_name: str, until: str,
           periods: list[dict], kind: str = "digest", since: str | None = None,
           devices: dict[str, dict] | None = None) -> Rendered:
    """One segment's message, most urgent first (`rank_key`). A digest shows at most
    `digest_max_items` items in full, up to BRIEF_MAX more in one line each, and counts the rest by
    kind, with each recipient's link to the whole list; an advisory older than the window (`since`:
    a backfill) is only counted (a facility's own matches are in its block). A flash bundle shows
    everything; an urgent one (`targeted`) too, naming the device (`devices`: advisory → register
    row) of the most urgent item."""
    c = settings.current().contacts()
    office = settings.current().relay()["mhlw"]  # whom to call: the same office as the incident notices
    mhlw = {"office": office["name"], "office_en": office.get("name_en") or office["name"], "phone": office["phone"],
            "hours": office.get("hours", "")}
    day = jst(until)
    n = len(advisories)
    items = [item(a, lang) | {"id": a["id"]} for a in advisories]
    items.sort(key=rank_key)  # the order within each rank kept (newest first)
    full, brief, counted = items, [], []
    limit = settings.current().digest_max_items
    if kind == "digest" and limit > 0:  # 0: every item in full
        fresh = [i for i in items if not since or not i["published"] or i["published"] >= since]
        full, brief = fresh[:limit], fresh[limit:limit + BRIEF_MAX]
        shown = {i["id"] for i in full + brief}
        counted = [i for i in items if i["id"] not in shown]
    counts = {}
    for i in counted:
        key = "kev" if i["kev"] else i["kind"]
        counts[key] = counts.get(key, 0) + 1
    count_rows = [{"label": COUNT_KINDS[lang][k], "n": counts[k]} for k in COUNT_KINDS[lang] if k in counts]
    date_text = f"{day.year}年{day.month}月{day.day}日" if lang == "ja" else f"{day:%Y-%m-%d}"
    device, exposure = _headline(items, devices or {}, lang)
    subject, heading = (t.format(date=date_text, n=n, device=device, exposure=exposure)
                        for t in TITLES[lang].get(kind, TITLES[lang]["digest"]))
    tlps = [a["tlp"] for a in advisories]
    tlp = max(tlps, key=TLP_ORDER.index) if tlps else "CLEAR"
    period_rows = [{"name": p["name"], "note": p.get("note"), "start_jst": f"{jst(p['start']):%Y-%m-%d %H:%M}",
                    "end_jst": f"{jst(p['end']):%Y-%m-%d %H:%M}"} for p in periods]
    ctx = {"advisories": full, "brief": [i | {"n": k} for k, i in enumerate(brief, len(full) + 1)],
           "counts": count_rows, "counted": len(counted), "list_url": LIST_PLACEHOLDER if counted or brief else None,
           "unreviewed": UNREVIEWED[lang] if any(i["pre_review"] for i in items) else None,
           "periods": period_rows, "heading": heading, "subject": subject, "lang": lang,
           "tlp_banner": TLP_TEXT[lang][tlp], "tlp_color": TLP_COLOR[tlp], "ceptoar": c["ceptoar"],
           "mhlw": mhlw, "member_name": member_name, "t": HTML_TEXT[lang],
           "mhlw_office": mhlw["office"] if lang == "ja" else mhlw["office_en"],
           "ceptoar_name": c["ceptoar"]["name"] if lang == "ja" else c["ceptoar"]["name_en"]}
    text = _wrap(templates().get_template(f"digest_{lang}.txt.j2").render(ctx))
    html = _wrap(templates().get_template("digest.html.j2").render(ctx))
    # One segment, serialized once; each recipient's headers go between its head and body (compose).
    head, body = mail.segment(mail.message(subject, text, html, headers={"X-CEPTOAR-TLP": tlp}))
    return Rendered(subject=subject, head=head, body=body, count=n, tlp=tlp,
                    text=text.replace(FACILITY_TEXT + "\n", ""), html=html.replace(FACILITY_HTML + "\n", ""),
                    items={i["id"]: i for i in items}, lang=lang)


def _headline(items: list[dict], devices: dict[str, dict], lang: str) -> tuple[str, str]:
    """(the device of the most urgent item that has one, its exposure as its row states it)."""
    for i in items:
        row = devices.get(i["id"])
        if row:
            name = " ".join(x for x in (row.get("category"), row.get("product")) if x)
            return clean(name), EXPOSURE[lang][bool(row.get("internet_exposed")), bool(row.get("remote_maintenance"))]
    return ("機器" if lang == "ja" else "systems"), EXPOSURE[lang][False, False]


def render_corrections(corrections: list[dict], *, lang: str, member_name: str, until: str) -> Rendered:
    """A facility's corrections of alerts sent before review: each advisory's title as sent, and
    what review decided (never more than the alert carried)."""
    c = settings.current().contacts()
    rows = []
    for x in corrections:
        d = x.get("detail") or {}
        words = {k: SEVERITY[lang].get(d.get(v), d.get(v)) for k, v in
                 (("from_", "from"), ("to", "to"), ("severity", "severity"))}
        rows.append({"title": clean(x.get("title") or x["advisory"]),
                     "what": CORRECTIONS[lang][x["what"]].format(**words)})
    subject, heading = (t.format(n=len(rows)) for t in TITLES[lang]["correction"])
    ctx = {"rows": rows, "heading": heading, "subject": subject, "lang": lang, "member_name": member_name,
           "ceptoar": c["ceptoar"], "ceptoar_name": c["ceptoar"]["name"] if lang == "ja" else c["ceptoar"]["name_en"],
           "t": HTML_TEXT[lang]}
    text = _wrap(templates().get_template(f"correction_{lang}.txt.j2").render(ctx))
    html = _wrap(templates().get_template("correction.html.j2").render(ctx))
    head, body = mail.segment(mail.message(subject, text, html, headers={"X-CEPTOAR-TLP": "CLEAR"}))
    return Rendered(subject=subject, head=head, body=body, count=len(rows), tlp="CLEAR", text=text, html=html,
                    lang=lang)


def facility_block(r: Rendered, matches: list[dict], *, links: dict | None = None,
                   answers: dict | None = None, reminders: list[dict] | None = None,
                   more: int = 0, limit: int = 0, vendor_answers: dict[str, str] | None = None
                   ) -> tuple[str, str] | None:
    """The small per-facility part of a digest: the segment's advisories that match the
    facility's register (`matches`, each with its register row), each with the register's own
    line, the confidence and what to do; those on an internet-exposed or remotely maintained row
    first, then the surest (the version in range), each in the digest's order. `limit`: at most
    that many in full (0: all), the rest counted."""

    by_advisory: dict[str, dict] = {}
    for m in matches:
        if m["advisory"] not in r.items:
            continue
        entry = by_advisory.setdefault(m["advisory"], {"lines": [], "confidence": m["confidence"], "exposed": False})
        entry["exposed"] |= bool(m["row"].get("internet_exposed") or m["row"].get("remote_maintenance"))
        entry["lines"].append(row_line(m["row"]))
        if CONFIDENCE.index(m["confidence"]) < CONFIDENCE.index(entry["confidence"]):
            entry["confidence"] = m["confidence"]
    if not by_advisory and not reminders:
        return None
    en = {"version": "your version is in the affected range", "product": "same product (version not checked)",
          "name": "same product name (vendor not confirmed)"}
    rows = []
    order = sorted((aid for aid in r.items if aid in by_advisory),  # stable: the digest's order within
                   key=lambda a: (not by_advisory[a]["exposed"], CONFIDENCE.index(by_advisory[a]["confidence"])))
    hidden = max(0, len(order) - limit) if limit else 0
    for aid in order[:len(order) - hidden]:  # exposed rows first, then the digest's order: urgent first
        item = r.items[aid]
        if aid in by_advisory:
            e = by_advisory[aid]
            answer = (answers or {}).get(aid)
            rows.append({"title": item["title"], "cves": item["cves"][:3],
                         "lines": [clean(x) for x in dict.fromkeys(e["lines"])][:5],
                         "confidence_text": (CONFIDENCE_JA if r.lang == "ja" else en)[e["confidence"]],
                         "action": item["action"], "link": link((links or {}).get(aid)),
                         "answer": _answer_text(answer, r.lang) if answer else None,
                         "vendor_answer": (vendor_answers or {}).get(aid)})
    late = [{"title": i["title"], "link": link(i["link"])} for i in reminders or []]
    ctx = {"rows": rows, "total": len(order), "hidden": hidden, "lang": r.lang, "reminders": late, "more": more}
    text = _wrap(templates().get_template("facility_block.txt.j2").render(ctx))
    html = _wrap(templates().get_template("facility_block.html.j2").render(ctx))
    return text, html


def _answer_text(answer: dict, lang: str) -> str:

    text = (ANSWERS if lang == "ja" else ANSWERS_EN)[answer["status"]]
    return text + (f" ({answer['fixed_on']})" if answer.get("fixed_on") else "")


def compose(r: Rendered, *, message_id: str, email: str, name: str, unsubscribe_url: str,
            block: tuple[str, str] | None = None, stuffed: bool = False, list_url: str = "") -> bytes:
    """One recipient's message: the segment's bytes with the recipient's headers (an address or
    name cannot add a header), unsubscribe link, link to the whole list and facility block.
    `stuffed`: dot-stuffed for SMTP (RFC 5321 4.5.2) already, the segment's pieces once per segment,
    not the whole message each time."""
    c = settings.current().contacts()["ceptoar"]
    headers = (mail.to_header(name, email) + f"Message-ID: {message_id}\r\n".encode()
               + mail.url_list_header("List-Unsubscribe", [unsubscribe_url, f"mailto:{c['email']}?subject=unsubscribe"])
               + mail.LIST_UNSUBSCRIBE_POST + b"\r\n")
    # Lines end in CRLF on the wire; an empty block leaves no line behind.
    text, html = (x.replace("\n", "\r\n").encode() for x in block or ("", ""))
    parts = {"url": unsubscribe_url.encode(), "list": list_url.encode(),
             "text": mail.stuff_lines(text) if stuffed else text,
             "html": mail.stuff_lines(html) if stuffed else html}
    out, line_start = [r.head, headers], True  # the body starts a line, after the headers' blank line
    for p in r.pieces(stuffed):
        b = p if isinstance(p, bytes) else parts[p]
        if b:
            if stuffed and line_start and b[:1] == b".":
                out.append(b".")  # a line this piece opens
            out.append(b)
            line_start = b[-1:] == b"\n"
    return b"".join(out)
