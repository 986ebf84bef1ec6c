"""HTTP(S) GET with a wall-clock deadline, a body size cap, a real User-Agent and conditional GET.

A hostile server can keep a connection busy without ever tripping a per-read timeout (headers or a
body one byte at a time, endless `100 Continue`). `deadline()` bounds the whole exchange — connect,
headers, body — and nests (a request inside a source run gets what is left of the run's time). It
uses SIGALRM, so it is exact on the main thread (every CLI command and the worker); elsewhere only
the per-read timeouts apply.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin

import requests

from ceptoar import USER_AGENT
from ceptoar.core.errors import CeptoarError

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_REDIRECTS = 5


class FetchError(CeptoarError):
    """The fetch failed; the message is one line for the user and for `last_error`. `wait`: how
    long the server asked to be left alone (its Retry-After), in seconds."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.wait = wait


class DeadlineExceeded(FetchError):
    pass


@dataclass
class Response:
    status: int  # 200 or 304
    body: bytes | bytearray = b""
    etag: str | None = None
    last_modified: str | None = None
    charset: str | None = None
    url: str = ""
    headers: dict = field(default_factory=dict)

    def take_body(self) -> bytes | bytearray:
        """The body, handed over: this response holds it no longer, so it goes as soon as its new
        holder lets it go (a bundle of tens of megabytes is not kept through the storing)."""
        body, self.body = self.body, b""
        return body

    @property
    def wait(self) -> float | None:
        """How long the server asks before the next poll (Retry-After, Cache-Control: max-age)."""
        return upstream_wait(self.headers)


MAX_WAIT = 86400.0  # what an upstream may ask is capped at a day: a typo upstream must not stop a source


def upstream_wait(headers) -> float | None:
    """Seconds before the server wants to be asked again: the longer of its Retry-After (seconds or
    an HTTP date) and its Cache-Control max-age (not with no-cache or no-store), at most a day."""
    found = []
    retry = (headers.get("Retry-After") or "").strip()
    if retry.isdigit():
        found.append(float(retry))
    elif retry:
        try:
            found.append((parsedate_to_datetime(retry) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError, OverflowError):
            pass
    control = [d.strip().lower() for d in (headers.get("Cache-Control") or "").split(",")]
    if "no-cache" not in control and "no-store" not in control:
        for d in control:
            name, _, value = d.partition("=")
            if name.strip() == "max-age" and value.strip().strip('"').isdigit():
                found.append(float(value.strip().strip('"')))
    wait = max(found, default=0.0)
    return min(wait, MAX_WAIT) if wait > 0 else None


def charset_of(content_type: str | None) -> str | None:
    for part in (content_type or "").split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k.strip().lower() == "charset" and v.strip():
            return v.strip().strip("\"'")
    return None


# --- the wall-clock deadline ------------------------------------------------------------------------
_deadlines: list[tuple[float, str]] = []  # (monotonic end, what) of the deadlines in force, innermost last


def _alarm(_signum, _frame):
    end, what = _deadlines[-1] if _deadlines else (0, "the request")
    raise DeadlineExceeded(f"timed out: {what}")


def _arm() -> None:
    if _deadlines:
        signal.setitimer(signal.ITIMER_REAL, max(0.001, _deadlines[-1][0] - time.monotonic()))
    else:
        signal.setitimer(signal.ITIMER_REAL, 0)


@contextmanager
def deadline(seconds: float, what: str):
    """Everything inside must finish within `seconds` (and within any enclosing deadline), else
    DeadlineExceeded. Only for network work: never around a database transaction."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    end = time.monotonic() + seconds
    what = f"{what} took longer than {seconds:g} s"
    if _deadlines and _deadlines[-1][0] <= end:
        end, what = _deadlines[-1]
    if not _deadlines:
        previous = signal.signal(signal.SIGALRM, _alarm)
    _deadlines.append((end, what))
    _arm()
    try:
        yield
    finally:
        _deadlines.pop()
        _arm()
        if not _deadlines:
            signal.signal(signal.SIGALRM, previous)


# --- GET ------------------------------------------------------------------------------------------
_session: requests.Session | None = None


def session() -> requests.Session:
    global _session
    if _session is None:
        _session = requests.Session()
        _session.headers["User-Agent"] = USER_AGENT
        _session.trust_env = False  # no proxies from the environment: feeds are fetched directly
    return _session


def _drop_session() -> None:
    """After an interrupted exchange the pooled connection is in an unknown state."""
    global _session
    if _session is not None:
        _session.close()
        _session = None


def root_cause(e: BaseException) -> str:
    """The innermost reason of a connection error, without urllib3's pool wrapping."""
    seen = e
    while True:
        nxt = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if nxt is None or nxt is seen or not isinstance(nxt, BaseException):
            break
        seen = nxt
    text = str(seen)
    if "Name or service not known" in text or "Failed to resolve" in text or "NameResolution" in type(seen).__name__:
        return "cannot resolve host name"
    if isinstance(seen, ConnectionRefusedError) or "Connection refused" in text:
        return "connection refused"
    return " ".join(text.split())[:200]


def get(url: str, *, etag: str | None = None, last_modified: str | None = None,
        timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES, accept: str = "*/*",
        allowed: Callable[[str], bool] | None = None, params: dict | None = None,
        headers: dict | None = None) -> Response:
    """The body at `url`, the whole exchange within `timeout` seconds. With `allowed`, redirects
    are followed by hand and every URL on the way must pass it. `headers` add to the request's
    (credentials); `params` become the query string."""
    headers = {**(headers or {}), "Accept": accept}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    conditional = bool(etag or last_modified)
    try:
        with deadline(timeout, f"fetching {url}"):
            for _hop in range(MAX_REDIRECTS + 1):
                if not url.lower().startswith(("http://", "https://")):
                    raise FetchError(f"unsupported URL {url!r}: only http(s) is fetched")
                if allowed is not None and not allowed(url):
                    raise FetchError("not fetched: the URL is not allowed for this source")
                with session().get(url, headers=headers, params=params, timeout=(min(timeout, 10.0), timeout),
                                   stream=True, allow_redirects=allowed is None) as r:
                    if allowed is not None and r.is_redirect and r.headers.get("Location"):
                        url = urljoin(url, r.headers["Location"])
                        continue
                    return _read(r, url, conditional, etag, last_modified, max_bytes)
            raise FetchError("too many redirects")
    except FetchError:
        _drop_session()
        raise
    except requests.Timeout:
        _drop_session()
        raise FetchError(f"timed out after {timeout:g} s") from None
    except requests.TooManyRedirects:
        raise FetchError("too many redirects") from None
    except requests.ConnectionError as e:
        _drop_session()
        raise FetchError(f"connection failed: {root_cause(e)}") from None
    except requests.RequestException as e:
        _drop_session()
        raise FetchError(f"request failed: {type(e).__name__}: {str(e)[:200]}") from None


def _read(r: requests.Response, url: str, conditional: bool, etag, last_modified, max_bytes: int) -> Response:
    if r.status_code == 304:
        if not conditional:
            raise FetchError("HTTP 304 Not Modified to an unconditional request")
        return Response(304, etag=etag, last_modified=last_modified, url=url, headers=dict(r.headers))
    if r.status_code >= 400:
        asked = upstream_wait(r.headers) if r.status_code in (429, 503) else None  # busy, or down for a while
        raise FetchError(f"HTTP {r.status_code}" + (f" (retry after {asked:.0f} s)" if asked else ""), wait=asked)
    if r.status_code >= 300:
        raise FetchError(f"HTTP {r.status_code} redirect not followed")
    length = r.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise FetchError(f"body of {int(length)} bytes exceeds the {max_bytes}-byte cap")
    body = bytearray()  # one buffer, never a list of chunks joined at the end (that doubles the peak)
    for chunk in r.iter_content(65536):  # decompressed as it streams: a gzip bomb stops at the cap
        body += chunk
        if len(body) > max_bytes:
            raise FetchError(f"body exceeds the {max_bytes}-byte cap")
    return Response(r.status_code, body, r.headers.get("ETag"), r.headers.get("Last-Modified"),
                    charset_of(r.headers.get("Content-Type")), r.url, dict(r.headers))
