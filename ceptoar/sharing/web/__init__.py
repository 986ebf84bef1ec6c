"""The hub's own web pages (served by the same app as TAXII): unsubscribe, facilities' answers to
advisories matched to their registers, the associations' summary of those answers, a digest's
whole list, and their safety.

Every page is rendered from a template with every value escaped, and sent with a restrictive
Content-Security-Policy: no scripts, no outside resources, forms only to the hub itself.
"""

from __future__ import annotations

from pathlib import Path

import medallion
from flask import Flask, Response, g, request
from jinja2 import Environment

from ceptoar.clinics import responses
from ceptoar.clinics.digest import lists, subscribers
from ceptoar.clinics.digest.delivery import advisories_for
from ceptoar.clinics.digest.render import item, jst, rank_key
from ceptoar.core import settings
from ceptoar.core.output import csv_text
from ceptoar.core.templates import environment
from ceptoar.facilities import registers

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
        return page("respond.html.j2", 400 if error else 200, state="ask", contact=contact, facility=fac,
                    title=report.get("name"), lines=lines, answers=responses.ANSWERS, history=history,
                    current=history[-1] if history else None, error=error, saved=saved)


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
