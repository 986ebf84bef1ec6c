"""Upstream TAXII 2.1 pulls with taxii2-client: an API root (every readable collection) or one
collection, following `next`, with an `added_after` cursor per collection.

The cursor is the last X-TAXII-Date-Added-Last seen; the next pull asks for one second before
it, so objects that share a timestamp with the cursor are never lost (the overlap re-reads a few
objects, which the store recognizes as unchanged). Credentials come from environment variables
named in the catalogue, never from the file itself.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import requests
from taxii2client.common import _HTTPConnection
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import ApiRoot, Collection

from ceptoar import USER_AGENT
from ceptoar.sources import http
from ceptoar.sources.http import FetchError, root_cause

OVERLAP = timedelta(seconds=1)
DEFAULT_MAX_PAGES = 1000
DEFAULT_MAX_OBJECTS = 200_000
DEFAULT_RUN_SECONDS = 900.0
MAX_EMPTY_PAGES = 3
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str):
        self.token = token

    def __call__(self, r):
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


class _Session(requests.Session):
    """Every request within the hub's deadline; bodies read as they stream (and decompress) and
    refused past the cap, so neither a gzip bomb nor an endless body is ever held whole."""

    def __init__(self, timeout: float, max_bytes: int):
        super().__init__()
        self.timeout, self.max_bytes = timeout, max_bytes
        self.trust_env = False
        self.headers["User-Agent"] = USER_AGENT
        self.last_added: list[str] = []

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", (min(self.timeout, 10.0), self.timeout))
        kwargs["stream"] = True
        with http.deadline(self.timeout, f"TAXII request to {url}"):
            resp = super().request(method, url, *args, **kwargs)
            body = bytearray()
            try:
                for chunk in resp.iter_content(65536):
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise FetchError(f"TAXII response exceeds the {self.max_bytes}-byte cap")
            finally:
                resp.close()
        resp._content = body  # what requests keeps after reading a body itself (no copy)
        if resp.headers.get("X-TAXII-Date-Added-Last"):
            self.last_added.append(resp.headers["X-TAXII-Date-Added-Last"])
        return resp


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


def pull(url: str, options: dict, cursors: dict[str, str], timeout: float, max_bytes: int,
         progress=None) -> tuple[list[dict], list[tuple[str, str]], str | None]:
    """Objects added since each collection's cursor, within the run's bounds (pages, objects, time);
    returns (objects, new cursors, note). A run cut short resumes from its cursor the next time."""
    user, password, token = credentials(options)
    conn = _HTTPConnection(user=user, password=password, auth=_Bearer(token) if token else None, version="2.1")
    session = _Session(timeout, max_bytes)
    session.auth = conn.session.auth
    conn.session = session
    page = int(options.get("page_size", 100))
    max_pages = int(options.get("max_pages", DEFAULT_MAX_PAGES))
    max_objects = int(options.get("max_objects", DEFAULT_MAX_OBJECTS))
    types = [t.strip() for t in str(options.get("match_type", "")).split(",") if t.strip()]
    notes: list[str] = []
    try:
        with http.deadline(float(options.get("run_seconds", DEFAULT_RUN_SECONDS)), f"pulling {url}"):
            if "/collections/" in url:
                collections = [Collection(url, conn=conn)]
            else:
                collections = [c for c in ApiRoot(url, conn=conn).collections if c.can_read]
            objects, new_cursors = [], []
            for coll in collections:
                cursor = cursors.get(coll.url)
                since = (_parse(cursor) - OVERLAP).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if cursor else None
                session.last_added.clear()
                stop = _pull_collection(coll, page, since, types, objects, max_pages, max_objects, progress)
                if stop:
                    notes.append(f"{coll.url}: {stop}; the rest next run")
                latest = max([cursor or "", *session.last_added], key=lambda t: _parse(t) if t else _EPOCH)
                if latest:
                    new_cursors.append((coll.url, latest))
        return objects, new_cursors, "; ".join(notes) or None
    except FetchError:
        raise
    except requests.HTTPError as e:
        code = e.response.status_code if e.response is not None else "?"
        raise FetchError(f"TAXII server answered HTTP {code}") from None
    except requests.Timeout:
        raise FetchError(f"timed out after {timeout:g} s") from None
    except requests.ConnectionError as e:
        raise FetchError(f"connection failed: {root_cause(e)}") from None
    except (TAXIIServiceException, requests.RequestException, ValueError, KeyError, TypeError) as e:
        raise FetchError(f"TAXII error: {' '.join(str(e).split())[:200]}") from None


def _pull_collection(coll, page: int, since: str | None, types: list[str], objects: list[dict], max_pages: int,
                     max_objects: int, progress) -> str | None:
    """Follow `next` through one collection; a reason when it stopped before the end."""
    kwargs = {"added_after": since, "type": types or None}
    envelope = coll.get_objects(limit=page, **kwargs)
    pages, stalled, got, tokens, seen = 0, 0, 0, set(), set()
    while True:
        pages += 1
        batch = envelope.get("objects", []) if isinstance(envelope, dict) else []
        if not isinstance(batch, list):
            raise FetchError("TAXII envelope whose 'objects' is not a list")
        fresh = {(o.get("id"), o.get("modified")) for o in batch if isinstance(o, dict)} - seen
        seen |= fresh
        objects.extend(batch)
        got += len(batch)
        stalled = 0 if fresh else stalled + 1
        if progress:
            progress(f"{coll.url}: {got} objects")
        if not envelope.get("more"):
            return None
        token = envelope.get("next")
        if not isinstance(token, str) or not token:
            return "the server said more but gave no `next`"
        if token in tokens and not fresh:
            return "the server repeats a `next` that brings nothing new"
        if stalled >= MAX_EMPTY_PAGES:
            return f"{stalled} pages in a row brought nothing new"
        if pages >= max_pages or got >= max_objects:
            return f"stopped after {pages} pages and {got} objects (options max_pages, max_objects)"
        tokens.add(token)
        envelope = coll.get_objects(limit=page, next=token, **kwargs)
