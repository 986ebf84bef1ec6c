"""The hub's own web pages (served by the same app as TAXII): unsubscribe, and their safety.

Every page is rendered from a template with every value escaped, and sent with a restrictive
Content-Security-Policy: no scripts, no outside resources, forms only to the hub itself.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from flask import Flask, Response, request
from jinja2 import Environment, FileSystemLoader

from ceptoar.digest import subscribers

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True,
                       lstrip_blocks=True)


def page(template: str, status: int = 200, **context) -> Response:
    html = _env().get_template(template).render(**context)
    return Response(html, status=status, mimetype="text/html", headers=SECURITY_HEADERS)


def register(app: Flask, store_of) -> None:
    """The pages, on an app whose backend gives the store (`store_of()`)."""

    @app.route("/unsubscribe/<token>", methods=["GET", "POST"])
    def unsubscribe(token: str):
        """The link in every digest; POST is RFC 8058's one-click (List-Unsubscribe-Post)."""
        store = store_of()
        sub = store.subscribers.by_token(token)
        if sub is None:
            return page("unsubscribe.html.j2", 404, state="invalid")
        if request.method == "POST":
            subscribers.unsubscribe(store, token, "subscriber", "web")
            return page("unsubscribe.html.j2", state="done")
        return page("unsubscribe.html.j2", state="ask")
