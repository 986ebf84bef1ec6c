"""HTTP(S) GET with a timeout, a body size cap, a real User-Agent and conditional GET."""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests

from ceptoar import USER_AGENT

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class FetchError(Exception):
    """The fetch failed; the message is one line for the user and for `last_error`."""


@dataclass
class Response:
    status: int  # 200 or 304
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    charset: str | None = None
    url: str = ""


def charset_of(content_type: str | None) -> str | None:
    for part in (content_type or "").split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k.strip().lower() == "charset" and v.strip():
            return v.strip().strip("\"'")
    return None


_session: requests.Session | None = None


def session() -> requests.Session:
    global _session
    if _session is None:
        _session = requests.Session()
        _session.headers["User-Agent"] = USER_AGENT
        _session.trust_env = False  # no proxies from the environment: feeds are fetched directly
    return _session


def _root_cause(e: BaseException) -> str:
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
        timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES,
        accept: str = "*/*") -> Response:
    if not url.lower().startswith(("http://", "https://")):
        raise FetchError(f"unsupported URL {url!r}: only http(s) is fetched")
    headers = {"Accept": accept}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    deadline = time.monotonic() + timeout
    try:
        with session().get(url, headers=headers, timeout=(min(timeout, 10.0), timeout), stream=True) as r:
            if r.status_code == 304:
                return Response(304, etag=etag, last_modified=last_modified, url=url)
            if r.status_code >= 400:
                raise FetchError(f"HTTP {r.status_code} {r.reason or ''}".strip())
            length = r.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise FetchError(f"body of {int(length)} bytes exceeds the {max_bytes}-byte cap")
            chunks, size = [], 0
            for chunk in r.iter_content(65536):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"body exceeds the {max_bytes}-byte cap")
                if time.monotonic() > deadline:
                    raise FetchError(f"timed out after {timeout:g} s (body still arriving)")
                chunks.append(chunk)
            return Response(r.status_code, b"".join(chunks), r.headers.get("ETag"),
                            r.headers.get("Last-Modified"), charset_of(r.headers.get("Content-Type")), r.url)
    except FetchError:
        raise
    except requests.Timeout:
        raise FetchError(f"timed out after {timeout:g} s") from None
    except requests.TooManyRedirects:
        raise FetchError("too many redirects") from None
    except requests.ConnectionError as e:
        raise FetchError(f"connection failed: {_root_cause(e)}") from None
    except requests.RequestException as e:
        raise FetchError(f"request failed: {type(e).__name__}: {str(e)[:200]}") from None
