"""Upstream TAXII 2.1 pulls: an API root (every readable collection) or one collection, following
`next`, with an `added_after` cursor per collection, over the hub's own HTTP client (its deadlines,
caps and streamed decompression hold for every page).

The cursor is the last X-TAXII-Date-Added-Last seen; the next pull asks for one second before
it, so objects that share a timestamp with the cursor are never lost (the overlap re-reads a few
objects, which the store recognizes as unchanged). Credentials come from environment variables
named in the catalogue, never from the file itself.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from urllib.parse import urljoin

from ceptoar.fetch import http
from ceptoar.fetch.http import FetchError

TAXII_21 = "application/taxii+json;version=2.1"
OVERLAP = timedelta(seconds=1)
DEFAULT_MAX_PAGES = 1000
DEFAULT_MAX_OBJECTS = 200_000
DEFAULT_RUN_SECONDS = 900.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def credentials(options: dict) -> tuple[str | None, str | None, str | None]:
    """(user, password, token) from the environment variables the catalogue names."""
    values = []
    for key in ("user_env", "password_env", "token_env"):
        name = options.get(key)
        if name and not os.environ.get(name):
            raise FetchError(f"environment variable {name} (options.{key}) is not set")
        values.append(os.environ.get(name) if name else None)
    return values[0], values[1], values[2]


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


class Endpoint:
    """GETs of TAXII 2.1 JSON with the source's credentials, within its limits."""

    def __init__(self, options: dict, timeout: float, max_bytes: int):
        user, password, token = credentials(options)
        self.headers = {}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif user is not None or password is not None:
            pair = f"{user or ''}:{password or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        self.timeout, self.max_bytes = timeout, max_bytes
        self.last_added: list[str] = []

    def get(self, url: str, params: dict | None = None) -> dict:
        resp = http.get(url, params=params, headers=self.headers, accept=TAXII_21, timeout=self.timeout,
                        max_bytes=self.max_bytes)
        if resp.headers.get("X-TAXII-Date-Added-Last"):
            self.last_added.append(resp.headers["X-TAXII-Date-Added-Last"])
        try:
            doc = json.loads(bytes(resp.body)) if resp.body else {}
        except (ValueError, RecursionError):
            raise FetchError(f"{url}: the TAXII server sent something that is not JSON") from None
        if not isinstance(doc, dict):
            raise FetchError(f"{url}: the TAXII server sent JSON that is not an object")
        return doc


class UpstreamCollection:
    def __init__(self, endpoint: Endpoint, url: str):
        self.endpoint = endpoint
        self.url = url if url.endswith("/") else url + "/"

    def get_objects(self, limit: int, added_after: str | None = None, type: list[str] | None = None,
                    next: str | None = None) -> dict:
        params = {"limit": limit}
        if added_after:
            params["added_after"] = added_after
        if type:
            params["match[type]"] = ",".join(type)
        if next:
            params["next"] = next
        return self.endpoint.get(self.url + "objects/", params)


def collections_of(endpoint: Endpoint, url: str) -> list[UpstreamCollection]:
    """The collection at `url`, or every collection of the API root at `url` this hub may read."""
    if "/collections/" in url:
        return [UpstreamCollection(endpoint, url)]
    root = url if url.endswith("/") else url + "/"
    listed = endpoint.get(root + "collections/").get("collections") or []
    if not isinstance(listed, list):
        raise FetchError(f"{root}collections/: 'collections' is not a list")
    return [UpstreamCollection(endpoint, urljoin(root + "collections/", str(c["id"]) + "/"))
            for c in listed if isinstance(c, dict) and c.get("id") and c.get("can_read")]


class Pulled(NamedTuple):
    objects: list[dict]
    cursors: list[tuple[str, str]]
    note: str | None  # a run cut short by its bounds: the rest next run
    failure: str | None  # an upstream that paged without progress: what it did (what came is kept)


def pull(url: str, options: dict, cursors: dict[str, str], timeout: float, max_bytes: int,
         progress=None) -> Pulled:
    """Objects added since each collection's cursor, within the run's bounds (pages, objects, time).
    A run cut short resumes from its cursor the next time; an upstream that pages without progress
    (the same `next` again, a page with nothing new while it says more) fails the source, with what
    it did, keeping what it sent before."""
    endpoint = Endpoint(options, timeout, max_bytes)
    page = int(options.get("page_size", 100))
    max_pages = int(options.get("max_pages", DEFAULT_MAX_PAGES))
    max_objects = int(options.get("max_objects", DEFAULT_MAX_OBJECTS))
    types = [t.strip() for t in str(options.get("match_type", "")).split(",") if t.strip()]
    notes: list[str] = []
    failures: list[str] = []
    try:
        with http.deadline(float(options.get("run_seconds", DEFAULT_RUN_SECONDS)), f"pulling {url}"):
            objects, new_cursors = [], []
            for coll in collections_of(endpoint, url):
                cursor = cursors.get(coll.url)
                since = (_parse(cursor) - OVERLAP).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if cursor else None
                endpoint.last_added.clear()
                stop, failed = _pull_collection(coll, page, since, types, objects, max_pages, max_objects, progress)
                if failed:
                    failures.append(f"{coll.url}: {stop}")
                elif stop:
                    notes.append(f"{coll.url}: {stop}; the rest next run")
                latest = max([cursor or "", *endpoint.last_added], key=lambda t: _parse(t) if t else _EPOCH)
                if latest:
                    new_cursors.append((coll.url, latest))
        return Pulled(objects, new_cursors, "; ".join(notes) or None, "; ".join(failures) or None)
    except FetchError as e:
        if str(e).startswith("HTTP "):
            raise FetchError(f"TAXII server answered {e}") from None
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise FetchError(f"TAXII error: {' '.join(str(e).split())[:200]}") from None


def _pull_collection(coll, page: int, since: str | None, types: list[str], objects: list[dict], max_pages: int,
                     max_objects: int, progress) -> tuple[str | None, bool]:
    """Follow `next` through one collection: (why it stopped before the end, whether that is the
    upstream's fault). A page that brings nothing new while the server says there is more ends it."""
    kwargs = {"added_after": since, "type": types or None}
    envelope = coll.get_objects(limit=page, **kwargs)
    pages, got, tokens, seen = 0, 0, set(), set()
    while True:
        pages += 1
        batch = envelope.get("objects", []) if isinstance(envelope, dict) else []
        if not isinstance(batch, list):
            raise FetchError("TAXII envelope whose 'objects' is not a list")
        fresh = {(o.get("id"), o.get("modified")) for o in batch if isinstance(o, dict)} - seen
        seen |= fresh
        objects.extend(batch)
        got += len(batch)
        if progress:
            progress(f"{coll.url}: {got} objects")
        if not envelope.get("more"):
            return None, False
        token = envelope.get("next")
        if not isinstance(token, str) or not token:
            return "upstream TAXII said more but gave no `next` token", True
        if not fresh and token in tokens:
            return f"upstream TAXII repeats its next token (after {pages} pages, {got} objects)", True
        if not fresh:
            return f"upstream TAXII sent a page with nothing new while saying more (page {pages})", True
        if pages >= max_pages or got >= max_objects:
            return f"stopped after {pages} pages and {got} objects (options max_pages, max_objects)", False
        tokens.add(token)
        envelope = coll.get_objects(limit=page, next=token, **kwargs)
