"""The TAXII 2.1 WSGI application: medallion's views and the hub's backend, authentication,
per-request audit, and the fixes medallion 3.0.0 needs (TAXII-CHECKLIST.md), all in this layer:

- every response, errors and 401 included, is TAXII JSON with the TAXII media type (#1);
- `application/taxii+json` without a version is accepted in Accept and Content-Type (#2, #3), and
  `*/*`, `application/*` or no Accept at all get TAXII 2.1 JSON (curl's default);
- a POST without Content-Length (chunked) is measured here, never refused for it (#14);
- query parameters are validated by the backend (#7), `next` is stateless (#8, #9).
"""

from __future__ import annotations

import io
import json
import logging
import traceback
from http import HTTPStatus

import medallion
from flask import Flask, Response, current_app, g, request
from medallion.exceptions import BackendError, ProcessingError
from medallion.views import collections, discovery, manifest, objects
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from ceptoar.core import settings as settings_mod
from ceptoar.sharing import web
from ceptoar.sharing.taxii import accesslog, auth, metrics
from ceptoar.sharing.taxii.backend import MEDIA_TAXII, HubBackend, SplicingJSON

log = logging.getLogger("ceptoar.sharing.taxii")


def taxii_error(status: int, title: str, description: str | None = None, headers: dict | None = None) -> Response:
    body = {"title": title, "http_status": str(status)}
    if description:
        body["description"] = description
    return Response(json.dumps(body), status=status, headers=headers, mimetype=MEDIA_TAXII)


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


def negotiated(accept: str | None) -> str | None:
    """The Accept header medallion should see. A client that takes TAXII 2.1, or anything
    (`*/*`, `application/*`, no Accept at all: curl, browsers, some TAXII clients), gets TAXII 2.1;
    a client that asks only for other types or versions is left to medallion's 406."""
    if not accept or not accept.strip():
        return MEDIA_TAXII
    for item in accept.split(","):
        parts = [p.strip().lower() for p in item.split(";")]
        base, params = parts[0], dict(p.partition("=")[::2] for p in parts[1:] if "=" in p)
        try:
            if float(params.get("q", "1")) <= 0:
                continue  # q=0: explicitly not acceptable
        except ValueError:
            pass
        if base in ("*/*", "application/*") or (base == "application/taxii+json"
                                                and params.get("version", "2.1") == "2.1"):
            return MEDIA_TAXII
    return _versioned(accept)


class TaxiiMiddleware:
    """WSGI layer in front of Flask: media-type defaults, and request bodies measured and checked
    before anyone parses them (no length and not chunked: 411, never a read that waits forever;
    over the limit: 413; JSON nested deeper than any STIX object: 400)."""

    def __init__(self, app, max_content_length: int):
        self.app = app
        self.max = max_content_length

    def __call__(self, environ, start_response):
        environ["HTTP_ACCEPT"] = negotiated(environ.get("HTTP_ACCEPT"))
        if environ.get("CONTENT_TYPE"):
            environ["CONTENT_TYPE"] = _versioned(environ["CONTENT_TYPE"])
        if environ.get("REQUEST_METHOD") in ("POST", "PUT", "PATCH"):
            length = environ.get("CONTENT_LENGTH") or ""
            chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() or \
                environ.get("wsgi.input_terminated")
            if not length.isdigit():
                if not chunked:
                    return taxii_error(411, "Length Required", "send Content-Length or a chunked body")(
                        environ, start_response)
                body = environ["wsgi.input"].read(self.max + 1)
                environ["wsgi.input"] = io.BytesIO(body)
                environ["CONTENT_LENGTH"] = length = str(len(body))
            if int(length) > self.max:
                return taxii_error(413, "Request Entity Too Large",
                                   f"bodies are limited to {self.max} bytes (max_content_length)")(
                    environ, start_response)
            body = environ["wsgi.input"].read(int(length))
            environ["wsgi.input"] = io.BytesIO(body)
            if json_depth(body) > MAX_JSON_DEPTH:
                return taxii_error(400, "Bad Request", f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")(
                    environ, start_response)
        return self.app(environ, start_response)


MAX_JSON_DEPTH = 64


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (strings skipped), in one pass,
    without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for b in body:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:
                escaped = True
            elif b == 0x22:
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        elif b in (0x5D, 0x7D):
            depth -= 1
    return deepest


def create_app(db_path: str, *, api_root: str = "ceptoar", max_content_length: int = 10 * 1024 * 1024,
               page_size: int = 100, proxies: int = 0, public_url: str | None = None, max_objects: int = 1000,
               max_objects_per_day: int = 10000, proxy_key: str | None = None,
               metrics_token: str | None = None, read_db: str | None = None) -> Flask:
    """The TAXII app. `proxies`: how many reverse proxies in front set X-Forwarded-For/-Proto/-Host
    (only those are believed); `public_url`: the hub's external URL, for discovery; `max_objects`
    and `max_objects_per_day`: what one member may submit; `proxy_key`: the secret the TLS proxy
    sends with the client certificates it verified (none: certificates are not used)."""
    app = Flask("ceptoar.sharing.taxii")
    app.json = SplicingJSON(app)  # pages of stored objects are put together, not parsed and dumped again
    app.url_map.strict_slashes = False  # no redirects built from the Host header
    app.taxii_config = {"max_page_size": page_size}
    app.users_backend = {}  # medallion's plain-text user table stays empty: members are in the store
    app.medallion_backend = HubBackend(db=db_path, api_root=api_root, max_content_length=max_content_length,
                                       public_url=public_url, max_objects=max_objects,
                                       max_objects_per_day=max_objects_per_day, read_db=read_db)
    for bp in (collections.collections_bp, discovery.discovery_bp, manifest.manifest_bp, objects.objects_bp):
        app.register_blueprint(bp)
    backend: HubBackend = app.medallion_backend
    _authentication(app, backend, proxy_key)
    _error_handlers(app)
    web.register(app, lambda: backend.store)
    metrics.register(app, lambda: backend.store, metrics_token)
    _audit_hook(app, backend)
    app.wsgi_app = TaxiiMiddleware(app.wsgi_app, max_content_length)
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    return app


def _authentication(app: Flask, backend: HubBackend, proxy_key: str | None) -> None:
    def verify(username, password):
        member = auth.authenticate(backend.store, username, password, request.remote_addr or "", proxy_key)
        if member is not None:
            g.member = member
        return member

    app.ceptoar_verify = verify  # medallion's auth object is shared by every app: each answers for itself


def _error_handlers(app: Flask) -> None:
    """Every answer that is not a success is a TAXII error in TAXII JSON."""
    @app.before_request
    def methods():
        """HEAD is no TAXII method (405); OPTIONS says what is, in TAXII JSON."""
        allow = {"Allow": "GET, POST, DELETE, OPTIONS"}
        if request.method == "HEAD":
            return taxii_error(405, "Method Not Allowed", "use GET", allow)
        if request.method == "OPTIONS":
            return Response("{}", status=200, mimetype=MEDIA_TAXII, headers=allow)
        return None

    @app.errorhandler(auth.TooManyFailures)
    def locked(e):
        return taxii_error(429, "Too Many Requests", str(e), {"Retry-After": str(e.retry_after)})

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


def _audit_hook(app: Flask, backend: HubBackend) -> None:
    """Every request is audited before its answer leaves (one that cannot be audited is not
    served); the store's connection goes back after it."""
    @app.after_request
    def audit(response):
        if request.path == "/healthz":  # no data, no credentials: polled every few seconds
            return response
        member = getattr(g, "member", None)
        view_args = request.view_args or {}
        # Unsubscribe tokens are credentials of a sort: never in the log.
        path = accesslog.mask(request.path)
        try:
            backend.store.audit.add(
                member["id"] if member else None,
                "taxii" if response.status_code != 401 else
                "taxii-denied" if getattr(g, "auth_username", None) else "taxii-anonymous",
                path,
                ({"query": request.query_string.decode("latin-1")} if request.query_string else {})
                | ({"via": g.auth_method} if getattr(g, "auth_method", None) else {}) or None,
                member=member["id"] if member else getattr(g, "auth_username", None),
                address=request.remote_addr or "", method=request.method, path=path,
                collection=view_args.get("collection_id"), http_status=response.status_code,
                objects=getattr(g, "objects_returned", None))
        except Exception:  # an access that cannot be audited is not served
            log.error("audit write failed: %s", traceback.format_exc())
            return taxii_error(503, "Service Unavailable", "the access log cannot be written; try again")
        return response

    @app.teardown_request
    def release(_exc):
        backend.release()


def create_app_from_env(db_path: str) -> Flask:
    """The app as the settings configure it (the same for gunicorn, `ceptoar serve` and `run`)."""

    cfg = settings_mod.load(db_path)
    settings_mod.use(cfg)
    return create_app(
        db_path,
        api_root=cfg.taxii_api_root,
        max_content_length=cfg.taxii_max_content_length,
        page_size=cfg.taxii_page_size,
        proxies=cfg.taxii_proxies,
        public_url=cfg.public_url,
        max_objects=cfg.taxii_max_objects,
        max_objects_per_day=cfg.taxii_max_objects_per_day,
        proxy_key=cfg.taxii_proxy_key,
        metrics_token=cfg.metrics_token,
        read_db=cfg.taxii_read_db,
    )


@medallion.auth.verify_password
def _verify(username, password):
    return current_app.ceptoar_verify(username, password)


@medallion.auth.error_handler
def _unauthorized(status):
    return taxii_error(status, "Unauthorized", "valid credentials are required (HTTP Basic, Bearer or Token)",
                       {"WWW-Authenticate": 'Basic realm="CEPTOAR TAXII"'})
