"""ROLIE indexes (CISA CSAF): followed to their documents, newest first, only where the source allows.

An index is data from outside: it must not make the hub request arbitrary URLs. A document is fetched
only over http(s), only from the index's own host and port, the `url_map` targets or the `allow_hosts`
option, and never from a private, loopback or link-local address unless the source's own URL is on one
(a mirror on the operator's network, the tests' loopback server). Redirects are held to the same rule.
A refused URL gets a generic error, so nothing is learned about what answers there.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from ceptoar.core.model import Source
from ceptoar.fetch import http
from ceptoar.fetch.http import FetchError
from ceptoar.normalize import FeedError, csaf, load_json

DEFAULT_MAX_DOCUMENTS = 100
DEFAULT_RUN_SECONDS = 600.0


def _internal(host: str) -> bool:
    """Whether any address the host resolves to is private, loopback, link-local or otherwise not
    a public internet address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False  # unresolvable: the request itself will fail
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast \
                or ip.is_unspecified:
            return True
    return False


def _endpoint(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1  # not a port: never allowed
    return (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(parts.scheme.lower())


def url_policy(source: Source) -> Callable[[str], bool]:
    """Which document URLs this source's index may lead to: the index's own host and port, the
    `url_map` targets, and the `allow_hosts` option ("host" for any port, "host:port")."""
    own = _endpoint(source.url)
    allowed_at = {own, *(_endpoint(t) for t in (source.options.get("url_map") or {}).values())}
    for entry in source.options.get("allow_hosts") or []:
        host, _, port = str(entry).lower().partition(":")
        allowed_at.add((host, int(port) if port.isdigit() else None))
    internal_ok = _internal(own[0]) if own[0] else False

    def allowed(url: str) -> bool:
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            return False
        host, port = _endpoint(url)
        if not host or ((host, port) not in allowed_at and (host, None) not in allowed_at):
            return False
        return internal_ok or not _internal(host)
    return allowed


def map_url(url: str, source: Source) -> str:
    """Rewrite document URLs of an index by prefix (`url_map` option): mirrors, local copies."""
    for prefix, replacement in (source.options.get("url_map") or {}).items():
        if url.startswith(prefix):
            return replacement + url[len(prefix):]
    return url


def index_of(body: bytes) -> dict | None:
    """The ROLIE index in a csaf source's body, or None when the body is a CSAF document."""
    doc = load_json(body, "the CSAF document or ROLIE index")
    return doc if csaf.is_rolie(doc) else None


def follow(doc: dict, source: Source, seen: dict[str, str], timeout: float, max_bytes: int,
           progress: Callable[[str], None] | None = None, warnings: list[str] | None = None
           ) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]], str | None]:
    """The documents of an index not yet followed (or updated since), at most `max_documents` a run,
    within the source's run time, as fetched: (document id, body) pairs. Returns (documents,
    followed, note); the pipeline normalizes the bodies. An entry of the wrong shape is a warning
    naming its position (in `warnings`); an index none of whose entries names a document fails."""
    include = source.options.get("include")
    pattern = re.compile(include, re.IGNORECASE) if include else None
    listed = doc["feed"].get("entry")
    if not isinstance(listed, list):
        raise FeedError(f"ROLIE index whose feed.entry is {type(listed).__name__}, not a list of entries")
    found: list[str] = []
    usable = csaf.rolie_entries(doc, found)
    if listed and not usable:
        raise FeedError(f"ROLIE index: none of its {len(listed)} entries names a document (first: {found[0]})")
    if warnings is not None:
        warnings.extend(found)
    todo = [e for e in usable if (pattern is None or pattern.search(e["id"])) and seen.get(e["id"]) != e["updated"]]
    cap = int(source.options.get("max_documents", DEFAULT_MAX_DOCUMENTS))
    allowed = url_policy(source)
    documents, followed = [], []
    with http.deadline(float(source.options.get("run_seconds", DEFAULT_RUN_SECONDS)), f"source {source.id}"):
        for i, e in enumerate(todo[:cap], 1):
            if progress:
                progress(f"{source.id}: document {i}/{min(cap, len(todo))} {e['id']}")
            url = map_url(e["url"], source)
            try:
                resp = http.get(url, timeout=timeout, max_bytes=max_bytes, allowed=allowed)
            except FetchError as err:
                raise FetchError(f"{e['id']}: {err}") from None
            documents.append((e["id"], resp.body))
            followed.append((e["id"], e["updated"]))
    note = f"{len(todo) - cap} more documents left for the next run" if len(todo) > cap else None
    return documents, followed, note
