"""The TAXII 2.1 WSGI application: medallion's views and the hub's backend, authentication,
per-request audit, and the fixes medallion 3.0.0 needs (TAXII-CHECKLIST.md), all in this layer:

- every response, errors and 401 included, is TAXII JSON with the TAXII media type (#1);
- `application/taxii+json` without a version is accepted in Accept and Content-Type (#2, #3);
- a POST without Content-Length (chunked) is measured here, never refused for it (#14);
- query parameters are validated by the backend (#7), `next` is stateless (#8, #9).
"""

from __future__ import annotations

import io
import json
from http import HTTPStatus
import logging
import time
import traceback

import medallion
from flask import Flask, Response, g, request
from medallion.exceptions import BackendError, ProcessingError
from medallion.views import collections, discovery, manifest, objects
from werkzeug.exceptions import HTTPException

from ceptoar.taxii import auth
from ceptoar.taxii.backend import MEDIA_TAXII, HubBackend

log = logging.getLogger("ceptoar.taxii")


def taxii_error(status: int, title: str, description: str | None = None, headers: dict | None = None) -> Response:
    body = {"title": title, "http_status": str(status)}
    if description:
        body["description"] = description
    return Response(json.dumps(body), status=status, headers=headers, mimetype=MEDIA_TAXII)


def _page(title: str, body: str, status: int = 200) -> Response:
    html = (f'<!DOCTYPE html><html lang="ja"><head><meta charset="utf-8"><title>{title}</title></head>'
            f'<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto;"><h1>{title}</h1>'
            f"<p>{body}</p></body></html>")
    return Response(html, status=status, mimetype="text/html")


def _versioned(value: str) -> str:
    """Add version=2.1 to a bare application/taxii+json media range (TAXII 2.1 §1.6.8.1)."""
    items = []
    for item in value.split(","):
        base = item.split(";")[0].strip().lower()
        params = [p.strip().lower() for p in item.split(";")[1:]]
        if base == "application/taxii+json" and not any(p.startswith("version=") for p in params):
            item = "application/taxii+json;version=2.1"
        items.append(item.strip())
    return ",".join(items)


class TaxiiMiddleware:
    """WSGI layer in front of Flask: media-type defaults and request bodies without a length."""

    def __init__(self, app, max_content_length: int):
        self.app = app
        self.max = max_content_length

    def __call__(self, environ, start_response):
        if environ.get("HTTP_ACCEPT"):
            environ["HTTP_ACCEPT"] = _versioned(environ["HTTP_ACCEPT"])
        if environ.get("CONTENT_TYPE"):
            environ["CONTENT_TYPE"] = _versioned(environ["CONTENT_TYPE"])
        if environ.get("REQUEST_METHOD") == "POST":
            length = environ.get("CONTENT_LENGTH") or ""
            if not length.isdigit():
                body = environ["wsgi.input"].read(self.max + 1)
                environ["wsgi.input"] = io.BytesIO(body)
                environ["CONTENT_LENGTH"] = str(len(body))
                length = str(len(body))
            if int(length) > self.max:
                resp = taxii_error(413, "Request Entity Too Large",
                                   f"bodies are limited to {self.max} bytes (max_content_length)")
                return resp(environ, start_response)
        return self.app(environ, start_response)


def create_app(db_path: str, *, api_root: str = "ceptoar", max_content_length: int = 10 * 1024 * 1024,
               page_size: int = 100, trust_proxy: bool = False) -> Flask:
    app = Flask("ceptoar.taxii")
    app.taxii_config = {"max_page_size": page_size}
    app.users_backend = {}  # medallion's plain-text user table stays empty: members are in the store
    app.medallion_backend = HubBackend(db=db_path, api_root=api_root, max_content_length=max_content_length)
    for bp in (collections.collections_bp, discovery.discovery_bp, manifest.manifest_bp, objects.objects_bp):
        app.register_blueprint(bp)
    backend: HubBackend = app.medallion_backend

    @medallion.auth.verify_password
    def verify(username, password):
        member = auth.authenticate(backend.store, username, password)
        if member is not None:
            g.member = member
        return member

    @medallion.auth.error_handler
    def unauthorized(status):
        delay = auth.failure_delay(backend.store, _address())
        if delay:
            time.sleep(delay)
        return taxii_error(status, "Unauthorized", "valid credentials are required (HTTP Basic or Bearer)",
                           {"WWW-Authenticate": 'Basic realm="CEPTOAR TAXII"'})

    @app.errorhandler(ProcessingError)
    @app.errorhandler(BackendError)
    def medallion_error(e):
        return taxii_error(e.status, HTTPStatus(e.status).phrase, e.message, getattr(e, "headers", None))

    @app.errorhandler(HTTPException)
    def http_error(e):
        return taxii_error(e.code or 500, e.name, e.description)

    @app.errorhandler(Exception)
    def internal_error(e):
        log.error("internal error on %s %s: %s", request.method, request.path, traceback.format_exc())
        return taxii_error(500, "Internal Server Error", "the server could not complete the request")

    def _address() -> str:
        if trust_proxy and request.headers.get("X-Forwarded-For"):
            return request.headers["X-Forwarded-For"].split(",")[0].strip()
        return request.remote_addr or ""

    @app.route("/unsubscribe/<token>", methods=["GET", "POST"])
    def unsubscribe(token: str):
        """The link in every digest; POST is RFC 8058's one-click (List-Unsubscribe-Post)."""
        store = backend.store
        sub = store.subscribers.by_token(token)
        if sub is None:
            return _page("配信停止 / Unsubscribe", "このリンクは無効です。/ This link is not valid.", 404)
        if request.method == "POST":
            store.subscribers.unsubscribe(token)
            store.audit.add("subscriber", "unsubscribe", sub["email"], {"via": "web"})
            return _page("配信停止 / Unsubscribe", "医療セプターからの配信を停止しました。<br>"
                         "You will no longer receive e-mail from the medical CEPTOAR.")
        return _page("配信停止 / Unsubscribe",
                     "医療セプターからのセキュリティ情報の配信を停止しますか?<br>Stop the CEPTOAR e-mails?"
                     '<form method="post"><button type="submit">配信を停止する / Unsubscribe</button></form>')

    @app.after_request
    def audit(response):
        member = getattr(g, "member", None)
        view_args = request.view_args or {}
        # Unsubscribe tokens are credentials of a sort: never in the log.
        path = "/unsubscribe/…" if request.path.startswith("/unsubscribe/") else request.path
        try:
            backend.store.audit.add(
                member["id"] if member else None,
                "taxii" if response.status_code != 401 else "taxii-denied",
                path,
                {"query": request.query_string.decode("latin-1")} if request.query_string else None,
                member=member["id"] if member else getattr(g, "auth_username", None),
                address=_address(), method=request.method, path=path,
                collection=view_args.get("collection_id"), http_status=response.status_code,
                objects=getattr(g, "objects_returned", None))
        except Exception:  # an access that cannot be audited is not served
            log.error("audit write failed: %s", traceback.format_exc())
            return taxii_error(503, "Service Unavailable", "the access log cannot be written; try again")
        return response

    app.wsgi_app = TaxiiMiddleware(app.wsgi_app, max_content_length)
    return app
