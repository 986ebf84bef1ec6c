"""The hub's own web pages (served by the same app as TAXII): unsubscribe, facilities' answers to
advisories matched to their registers, maintenance vendors' answers for their customers, the
associations' summary of those answers, a digest's whole list, and their safety.

Every page is rendered from a template with every value escaped, and sent with a restrictive
Content-Security-Policy: no scripts, no outside resources, forms only to the hub itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import medallion
from flask import Flask, Response, g, request
from jinja2 import Environment

from ceptoar.clinics import responses, vendor_requests
from ceptoar.clinics.digest import lists, subscribers
from ceptoar.clinics.digest.delivery import advisories_for
from ceptoar.clinics.digest.render import item, jst, rank_key
from ceptoar.core import settings
from ceptoar.core.model import TLP_ORDER
from ceptoar.core.output import csv_text
from ceptoar.core.templates import environment
from ceptoar.facilities import registers, vendors

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _env() -> Environment:
    return environment(HERE / "templates", keep_trailing_newline=False)


def page(template: str, status: int = 200, **context) -> Response:
    html = _env().get_template(template).render(**context)
    return Response(html, status=status, mimetype="text/html", headers=SECURITY_HEADERS)


def register(app: Flask, store_of) -> None:
    """The pages, on an app whose backend gives the store (`store_of()`)."""
    _unsubscribe_page(app, store_of)
    _answer_page(app, store_of)
    _vendor_page(app, store_of)
    _summary_page(app, store_of)
    _digest_page(app, store_of)


def _unsubscribe_page(app: Flask, store_of) -> None:
    @app.route("/unsubscribe/<token>", methods=["GET", "POST"])
    def unsubscribe(token: str):
        """The link in every digest; POST is RFC 8058's one-click (List-Unsubscribe-Post), or
        the subscriber's own "subscribe again" from the page that confirmed the opt-out."""
        store = store_of()
        contact = settings.current().contacts()["ceptoar"]
        sub = store.subscribers.by_token(token)
        if sub is None:
            return page("unsubscribe.html.j2", 404, state="invalid", contact=contact, address=None)
        address = masked(sub["email"])
        if request.method == "POST" and request.form.get("action") == "resubscribe":
            if sub["unsubscribed"] is not None:
                subscribers.resubscribe(store, sub["email"], "subscriber", "the subscriber's own link (web)")
            return page("unsubscribe.html.j2", state="resubscribed", contact=contact, address=address)
        if request.method == "POST":
            if sub["unsubscribed"] is None:
                subscribers.unsubscribe(store, token, "subscriber", "web")
            return page("unsubscribe.html.j2", state="done", contact=contact, address=address)
        state = "done" if sub["unsubscribed"] is not None else "ask"
        return page("unsubscribe.html.j2", state=state, contact=contact, address=address)



def _answer_page(app: Flask, store_of) -> None:
    @app.route("/respond/<facility>/<uuid>/<token>/<sig>", methods=["GET", "POST"])
    def respond(facility: str, uuid: str, token: str, sig: str):
        """A facility's answer about one advisory, through the personal link in its mail."""
        store = store_of()
        contact = settings.current().contacts()["ceptoar"]
        state, rank = responses.check(store, facility, uuid, token, sig)
        if state != "ok":
            return page("respond.html.j2", 410 if state == "expired" else 404, state=state, contact=contact)
        advisory = f"report--{uuid}"
        fac = store.facilities.get(facility)
        report = registers.published_report(store, advisory)
        current = store.advisories.get(advisory)
        # Never more than the mail carried: an advisory now served above that TLP is not shown.
        if fac is None or report is None or current is None or current["tlp_rank"] > rank:
            return page("respond.html.j2", 404, state="gone", contact=contact)
        lines = [registers.row_line(m["row"]) for m in store.facilities.matches(facility=facility, advisory=advisory)]
        error, saved = None, None
        if request.method == "POST":
            try:
                saved = responses.answer(store, facility, advisory, request.form.get("status", ""),
                                         fixed_on=request.form.get("fixed_on") or None,
                                         note=request.form.get("note"), actor=f"facility:{facility}", via="web")
            except responses.ResponseError as e:
                error = str(e)
        history = store.facilities.responses(facility, advisory)
        names = {v["id"]: v["name"] for v in store.vendors.list()}
        said = list(dict.fromkeys(vendors.answer_ja(a, names.get(a["vendor"], a["vendor"]))
                                  for a in store.vendors.answers_at(facility, advisory)))
        return page("respond.html.j2", 400 if error else 200, state="ask", contact=contact, facility=fac,
                    title=report.get("name"), lines=lines, answers=responses.ANSWERS, history=history,
                    current=history[-1] if history else None, error=error, saved=saved, vendor_answers=said)


def _groups(rows: list[dict], answered: dict) -> list[dict]:
    """A vendor's asked-about rows of one advisory, per product and version, each row with its answer."""
    groups: dict[tuple, dict] = {}
    for r in rows:
        if r["product"] is None:
            continue  # the row has left its register since the request
        version = (r["version"] or "").strip()
        g = groups.setdefault((vendors.key(r["product"]), version), {
            "name": " ".join(x for x in (r["vendor"], r["product"]) if x), "product": r["product"],
            "version": version, "rows": []})
        a = answered.get((r["facility"], r["n"]))
        g["rows"].append(r | {"answer": vendors.status_ja(a) if a else None})
    ordered = sorted(groups.values(), key=lambda g: (g["name"].casefold(), g["version"]))
    return [g | {"index": i} for i, g in enumerate(ordered)]


def _vendor_page(app: Flask, store_of) -> None:
    @app.route("/vendor/<vid>/<uuid>/<token>/<sig>", methods=["GET", "POST"])
    def vendor_answer(vid: str, uuid: str, token: str, sig: str):
        """A maintenance vendor's answer about one advisory for the customers it was asked about,
        through the link in its request: per product and version, for all of them or chosen ones."""
        store = store_of()
        contact = settings.current().contacts()["ceptoar"]
        state, rank = vendor_requests.check(store, vid, uuid, token, sig)
        if state != "ok":
            return page("vendor_answer.html.j2", 410 if state == "expired" else 404, state=state, contact=contact)
        advisory = f"report--{uuid}"
        vendor, current = store.vendors.get(vid), store.advisories.get(advisory)
        report = registers.published_report(store, advisory)
        # Never more than the request carried, nor more than the vendor may be told now.
        if vendor is None or current is None or report is None or current["tlp_rank"] > rank \
                or current["tlp_rank"] > TLP_ORDER.index(vendor["clearance"]):
            return page("vendor_answer.html.j2", 404, state="gone", contact=contact)
        error, saved = None, None
        groups = _groups(store.vendors.requested_rows(vid, advisory), store.vendors.answers_of(vid, advisory))
        if request.method == "POST":
            error, saved = _vendor_post(store, vid, advisory, groups)
            if saved:
                groups = _groups(store.vendors.requested_rows(vid, advisory), store.vendors.answers_of(vid, advisory))
        else:
            store.audit.add(f"vendor:{vid}", "vendor-page-read", vid,
                            {"advisory": advisory, "rows": sum(len(g["rows"]) for g in groups)})
        return page("vendor_answer.html.j2", 400 if error else 200, state="ask", contact=contact, vendor=vendor,
                    title=report.get("name") or advisory, tlp=current["tlp"],
                    cves=[r["external_id"] for r in report.get("external_references") or []
                          if r.get("source_name") == "cve" and r.get("external_id")][:10],
                    groups=groups, statuses=vendors.STATUS_JA, justifications=vendors.JUSTIFICATION_JA,
                    error=error, saved=saved, today=datetime.now(UTC).date().isoformat())


def _vendor_post(store, vid: str, advisory: str, groups: list[dict]) -> tuple[str | None, dict | None]:
    """(an error to show, or what was saved) for one group's form."""
    form = request.form
    index = form.get("group", "")
    group = groups[int(index)] if index.isdigit() and int(index) < len(groups) else None
    if group is None:
        return "この回答欄は古くなっています。ページを読み込み直してください (unknown product)", None
    status = form.get("status", "")
    if status not in vendors.STATUSES:
        return "回答を選んでください (choose an answer)", None
    mine = {r["facility"] for r in group["rows"]}
    chosen = form.getlist("facility")
    if not chosen:
        return "回答する医療機関を選んでください (choose at least one facility)", None
    if set(chosen) - mine:
        return "この製品についてお尋ねしていない医療機関が含まれています (a facility outside this request)", None
    try:
        n = vendors.answer(store, vid, advisory, product=group["product"], version=group["version"], status=status,
                           justification=(form.get("justification") or None) if status == "not_affected" else None,
                           fix_date=(form.get("fix_date") or None) if status == "affected" else None,
                           fixed_version=(form.get("fixed_version") or None) if status == "fixed" else None,
                           note=form.get("note") or None,
                           facilities=[] if set(chosen) == mine else sorted(set(chosen)),
                           actor=f"vendor:{vid}", via="web")
    except vendors.VendorError as e:
        return f"ご回答を受け付けられませんでした: {e}", None
    return None, {"name": group["name"], "version": group["version"], "status": vendors.STATUS_JA[status], "rows": n}


def _summary_page(app: Flask, store_of) -> None:
    @app.route("/responses", methods=["GET"])
    @medallion.auth.login_required
    def responses_summary():
        """An association's summary of its facilities' answers (member credentials), or CSV."""
        store = store_of()
        member = g.member
        rows = responses.summary(store, member=member["id"])
        store.audit.add(member["id"], "responses-read", member["id"], {"rows": len(rows)})
        if request.args.get("format") == "csv":
            return Response(csv_text(rows, responses.SUMMARY_COLUMNS), mimetype="text/csv",
                            headers=SECURITY_HEADERS | {"Content-Disposition": 'attachment; filename="responses.csv"'})
        return page("responses.html.j2", rows=rows, member=member, columns=responses.SUMMARY_COLUMNS)


def masked(email: str) -> str:
    """An address as the unsubscribe page shows it: enough to recognize, not to harvest."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}{'*' * max(3, len(local) - 1)}@{domain}"


LIST_PAGE = 20  # items a page of a digest's whole list shows


def _digest_page(app: Flask, store_of) -> None:
    @app.route("/digest/<token>/<window>/<sig>", methods=["GET"])
    def digest_list(token: str, window: str, sig: str):
        """Every item of one digest in full, a page at a time, through the subscriber's own link
        in it: what that subscriber may see now (its member's collections and clearance)."""
        store = store_of()
        contact = settings.current().contacts()["ceptoar"]
        state, since, until = lists.check(store, token, window, sig)
        sub = store.subscribers.by_token(token) if state == "ok" else None
        if sub is None:
            return page("digest_list.html.j2", 410 if state == "expired" else 404,
                        state="expired" if state == "expired" else "invalid", contact=contact)
        number = request.args.get("page", "1")
        number = int(number) if number.isdigit() and len(number) < 6 else 1
        shown, _name = advisories_for(store, sub["member"], sub["clearance"], since, until)
        lang = sub["lang"] if sub["lang"] in ("ja", "en") else "ja"
        items = sorted((item(a, lang) | {"id": a["id"]} for a in shown), key=rank_key)
        pages = max(1, -(-len(items) // LIST_PAGE))
        number = min(max(1, number), pages)
        here = items[(number - 1) * LIST_PAGE:number * LIST_PAGE]
        return page("digest_list.html.j2", state="ok", contact=contact, items=here, total=len(items), page=number,
                    pages=pages, first=(number - 1) * LIST_PAGE + 1, lang=lang,
                    since=jst(since).strftime("%Y-%m-%d %H:%M"), until=jst(until).strftime("%Y-%m-%d %H:%M"))
