"""One request per maintenance vendor, not one per clinic.

When a published advisory matches register rows that a registered vendor maintains, the vendor is
asked once, in one message per run (bundled as the clinics' alerts are), listing each matched product
and version with the facilities that run it: the facility's name and prefecture and the register
line. A vendor learns only the rows it maintains, nothing else of any register, and an advisory only
up to its clearance (TLP:GREEN unless the secretariat raises it: what lies above waits, and goes when
the clearance allows). Each disclosure is audited (`vendor-request`: the vendor, the advisory and how
many facilities); a row once asked about is not asked again.

Each advisory in a request carries the vendor's answer link: signed with the hub's key as the
facilities' links are (HMAC-SHA256, a different message so neither can stand for the other), bound to
the vendor, the advisory and the TLP it was told at, valid `response_link_days`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ceptoar.clinics import responses
from ceptoar.core import mail
from ceptoar.clinics.digest.render import SEVERITY
from ceptoar.core.mail import DeliveryError
from ceptoar.core.model import TLP_ORDER, effective_severity
from ceptoar.core.settings import SmtpConfig
from ceptoar.facilities import registers, vendors
from ceptoar.store import Store


@dataclass
class Request:
    vendor: dict
    advisories: dict[str, dict] = field(default_factory=dict)  # advisory → {title, tlp, cves, severity, rows}

    @property
    def keys(self) -> list[tuple[str, str, str, int]]:
        vid = self.vendor["id"]
        return [(vid, aid, r["facility"], r["n"]) for aid, a in self.advisories.items() for r in a["rows"]]

    @property
    def facilities(self) -> int:
        return len({r["facility"] for a in self.advisories.values() for r in a["rows"]})


def linker(store: Store, base_url: str, *, days: int | None = None,
           now: float | None = None) -> Callable[[str, str, int], str]:
    """A function (vendor, advisory, rank) → the vendor's answer link for an advisory it was told at
    TLP `rank`; the page shows the advisory only while it is served at that TLP or lower."""
    expires, key, base = responses.expiry(days, now), responses.link_key(store), base_url.rstrip("/")

    def link(vid: str, advisory: str, rank: int) -> str:
        uuid = advisory.split("--", 1)[-1]
        sig = responses.sign(key, "vendor", vid, advisory, expires, rank)
        return f"{base}/vendor/{vid}/{uuid}/{expires}.{rank}/{sig}"

    return link


def check(store: Store, vid: str, uuid: str, token: str, sig: str, now: float | None = None) -> tuple[str, int]:
    """('ok' | 'expired' | 'invalid', the TLP rank the link was made for) of a vendor's answer link."""
    if len(vid) > 63 or len(uuid) > 64:
        return "invalid", 0
    return responses.check_ranked(store, token, sig, "vendor", vid, f"report--{uuid}", now=now)


def pending(store: Store) -> list[Request]:
    """What each vendor has not been asked yet and may be told, one Request per vendor."""
    resolve = vendors.resolver(store)
    clearance = {v["id"]: v for v in store.vendors.list()}
    asked = store.vendors.requested()
    out: dict[str, Request] = {}
    titles: dict[str, str | None] = {}
    for m in store.vendors.maintained_matches():
        vid = resolve(m["maintenance_vendor"])
        if vid is None or (vid, m["advisory"], m["facility"], m["n"]) in asked:
            continue
        v = clearance[vid]
        if TLP_ORDER.index(m["tlp"]) > TLP_ORDER.index(v["clearance"]):
            continue  # above what this vendor may be told: waits for a raised clearance
        req = out.setdefault(vid, Request(v))
        if m["advisory"] not in titles:  # as published: never upstream facts not yet reviewed
            titles[m["advisory"]] = (registers.published_report(store, m["advisory"]) or {}).get("name")
        a = req.advisories.setdefault(m["advisory"], {
            "title": titles[m["advisory"]] or m["advisory"], "tlp": m["tlp"], "cves": json.loads(m["cves"] or "[]"),
            "severity": effective_severity(m), "rows": []})
        a["rows"].append({k: m[k] for k in ("facility", "facility_name", "prefecture", "n", "category", "vendor",
                                            "product", "version")})
    return [out[k] for k in sorted(out)]


def render(req: Request, link: Callable[[str, str, int], str] | None = None) -> tuple[str, str]:
    """(subject, text) of one vendor's request, in Japanese; `link`: its answer links (linker())."""
    n, f = len(req.advisories), req.facilities
    subject = f"【医療セプター】保守先の医療機関に該当する可能性のある脆弱性情報 ({n}件・{f}施設)"
    lines = [f"{req.vendor['name']} ご担当者様", "",
             "医療セプターです。貴社が保守を担当されている医療機関の台帳(システム・機器の一覧)に、",
             "次の脆弱性情報に該当する可能性のある製品があります。該当するかどうか、修正の予定を",
             "医療機関に代わってご確認いただけますようお願いいたします。", ""]
    for aid, a in req.advisories.items():
        label = SEVERITY["ja"].get(a["severity"]) if a["severity"] else None
        lines += ["────────────────────────────────────", f"■ {a['title']}",
                  f"  TLP:{a['tlp']}" + (f"    重要度: {label}" if label else "")
                  + (f"    CVE: {', '.join(a['cves'][:5])}" if a["cves"] else ""), f"  (ID: {aid})"]
        by_product: dict[tuple, list[dict]] = {}
        for r in a["rows"]:
            by_product.setdefault((r["vendor"] or "", r["product"], r["version"] or ""), []).append(r)
        for (maker, product, version), rows in by_product.items():
            name = " ".join(x for x in (maker, product) if x)
            lines.append(f"  ・{name}" + (f" {version}" if version else " (版は未記入)"))
            lines += [f"      {r['facility_name']} ({r['prefecture']}) 台帳 {r['n']} 行目: [{r['category']}]"
                      for r in rows]
        if link is not None:
            lines.append(f"  回答(該当の有無・修正予定): {link(req.vendor['id'], aid, TLP_ORDER.index(a['tlp']))}")
        lines.append("")
    lines += ["この情報は貴社が保守を担当する行に限ってお知らせしています。TLP の取り扱いにご注意ください。",
              "お問い合わせ: 医療セプター事務局"]
    return subject, "\n".join(lines) + "\n"


def reminders(store: Store, today: str) -> dict[str, list[dict]]:
    """Per vendor, the fixes it planned whose date has passed (its answer still `affected`)."""
    out: dict[str, list[dict]] = {}
    for r in store.vendors.overdue_fixes(today):
        out.setdefault(r["vendor"], []).append(r)
    return out


def render_reminder(vendor: dict, rows: list[dict],
                    link: Callable[[str, str, int], str] | None = None) -> tuple[str, str]:
    subject = f"【医療セプター】修正予定日を過ぎた件のご確認 ({len({r['advisory'] for r in rows})}件)"
    lines = [f"{vendor['name']} ご担当者様", "", "次の件は、ご回答いただいた修正予定日を過ぎています。修正の状況を",
             "お知らせください(修正済みの場合は修正版を、延期の場合は新しい予定日を)。", ""]
    for aid in dict.fromkeys(r["advisory"] for r in rows):
        mine = [r for r in rows if r["advisory"] == aid]
        lines += [f"■ {mine[0]['title'] or aid} (ID: {aid})"]
        for pv in dict.fromkeys((" ".join(x for x in (r["maker"], r["product"]) if x), r["version"] or "",
                                 r["fix_date"]) for r in mine):
            count = sum(1 for r in mine if (" ".join(x for x in (r["maker"], r["product"]) if x),
                                              r["version"] or "", r["fix_date"]) == pv)
            lines.append(f"  ・{pv[0]} {pv[1]}".rstrip() + f": 修正予定日 {pv[2]} ({count}施設)")
        if link is not None:
            lines.append(f"  回答: {link(vendor['id'], aid, TLP_ORDER.index(mine[0]['tlp']))}")
        lines.append("")
    return subject, "\n".join(lines) + "\n"


def _highest(tlps) -> str:
    return max(tlps, key=TLP_ORDER.index)


@dataclass
class Sent:
    vendor: str
    advisories: int
    facilities: int
    status: str  # sent | written | failed
    detail: str = ""


def _deliver(smtp: SmtpConfig, to: str, msg) -> bool:
    mailer = mail.Mailer(smtp)
    try:
        mailer.connect()
        return not mailer.send(mail.sender().addr_spec, to, msg.as_bytes())
    except DeliveryError:
        return False
    finally:
        mailer.close()


def send(store: Store, actor: str, smtp: SmtpConfig | None, out_dir: Path | None = None,
         base_url: str | None = None) -> list[Sent]:
    """Each vendor's pending request: sent (`smtp`), or written as .eml under `out_dir` (a dry run:
    nothing recorded). A request is recorded (and audited) only once its server took it. `base_url`:
    where its answer links point (none: the request says to answer the secretariat by phone or mail)."""
    results = []
    link = linker(store, base_url) if base_url else None
    today = datetime.now(UTC).date().isoformat()
    for vid, late in reminders(store, today).items():
        v = store.vendors.get(vid)
        if v is None:
            continue
        subject, text = render_reminder(v, late, link)
        msg = mail.message(subject, text, to=v["email"], headers={"X-CEPTOAR-TLP": _highest(r["tlp"] for r in late)})
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"vendor-{vid}-reminder.eml").write_bytes(msg.as_bytes())
            results.append(Sent(vid, len({r["advisory"] for r in late}), 0, "written", "reminder"))
            continue
        if smtp is None:
            raise DeliveryError("no SMTP server configured (CEPTOAR_SMTP_HOST): use --out DIR for a dry run")
        if _deliver(smtp, v["email"], msg):
            with store.transaction():
                store.vendors.mark_reminded([(vid, r["advisory"], r["facility"], r["n"]) for r in late])
                store.audit.add(actor, "vendor-reminder", vid, {"advisories": sorted({r["advisory"] for r in late})})
            results.append(Sent(vid, len({r["advisory"] for r in late}), 0, "sent", "reminder"))
    for req in pending(store):
        subject, text = render(req, link)
        msg = mail.message(subject, text, to=req.vendor["email"],
                           headers={"X-CEPTOAR-TLP": _highest(a["tlp"] for a in req.advisories.values())})
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"vendor-{req.vendor['id']}.eml").write_bytes(msg.as_bytes())
            results.append(Sent(req.vendor["id"], len(req.advisories), req.facilities, "written"))
            continue
        if smtp is None:
            raise DeliveryError("no SMTP server configured (CEPTOAR_SMTP_HOST): use --out DIR for a dry run")
        mailer = mail.Mailer(smtp)
        try:
            mailer.connect()
            refusal = mailer.send(mail.sender().addr_spec, req.vendor["email"], msg.as_bytes())
        except DeliveryError as e:
            results.append(Sent(req.vendor["id"], len(req.advisories), req.facilities, "failed", str(e)))
            continue
        finally:
            mailer.close()
        if refusal:
            results.append(Sent(req.vendor["id"], len(req.advisories), req.facilities, "failed", str(refusal)))
            continue
        with store.transaction():
            store.vendors.record_requests(req.keys)
            for aid, a in req.advisories.items():
                store.audit.add(actor, "vendor-request", req.vendor["id"],
                                {"advisory": aid, "tlp": a["tlp"], "rows": len(a["rows"]),
                                 "facilities": len({r["facility"] for r in a["rows"]})})
        results.append(Sent(req.vendor["id"], len(req.advisories), req.facilities, "sent"))
    return results
