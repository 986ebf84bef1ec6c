"""Upstream TAXII 2.1 pulls with taxii2-client: an API root (every readable collection) or one
collection, following `next`, with an `added_after` cursor per collection.

The cursor is the last X-TAXII-Date-Added-Last seen; the next pull asks for one second before
it, so objects that share a timestamp with the cursor are never lost (the overlap re-reads a few
objects, which the store recognizes as unchanged). Credentials come from environment variables
named in the catalogue, never from the file itself.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import requests
from taxii2client.common import _HTTPConnection
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import ApiRoot, Collection, as_pages

from ceptoar import USER_AGENT
from ceptoar.sources.http import FetchError, _root_cause

OVERLAP = timedelta(seconds=1)


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str):
        self.token = token

    def __call__(self, r):
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


class _Session(requests.Session):
    """Every request gets the hub's timeout; bodies over the cap are refused."""

    def __init__(self, timeout: float, max_bytes: int):
        super().__init__()
        self.timeout, self.max_bytes = timeout, max_bytes
        self.trust_env = False
        self.headers["User-Agent"] = USER_AGENT
        self.last_added: list[str] = []
        self.hooks["response"].append(self._check)

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)

    def _check(self, resp, *args, **kwargs):
        if len(resp.content) > self.max_bytes:
            raise FetchError(f"TAXII response exceeds the {self.max_bytes}-byte cap")
        if resp.headers.get("X-TAXII-Date-Added-Last"):
            self.last_added.append(resp.headers["X-TAXII-Date-Added-Last"])


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
         progress=None) -> tuple[list[dict], list[tuple[str, str]]]:
    """All objects added since each collection's cursor; returns (objects, new cursors)."""
    user, password, token = credentials(options)
    conn = _HTTPConnection(user=user, password=password, auth=_Bearer(token) if token else None, version="2.1")
    session = _Session(timeout, max_bytes)
    session.auth = conn.session.auth
    conn.session = session
    page = int(options.get("page_size", 100))
    types = [t.strip() for t in str(options.get("match_type", "")).split(",") if t.strip()]
    try:
        if "/collections/" in url:
            collections = [Collection(url, conn=conn)]
        else:
            collections = [c for c in ApiRoot(url, conn=conn).collections if c.can_read]
        objects, new_cursors = [], []
        for coll in collections:
            cursor = cursors.get(coll.url)
            since = (_parse(cursor) - OVERLAP).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if cursor else None
            session.last_added.clear()
            got = 0
            for envelope in as_pages(coll.get_objects, per_request=page, added_after=since, type=types or None):
                batch = envelope.get("objects", [])
                objects.extend(batch)
                got += len(batch)
                if progress:
                    progress(f"{coll.url}: {got} objects")
            latest = max([cursor or "", *session.last_added], key=lambda t: _parse(t) if t else datetime.min
                         .replace(tzinfo=_parse("1970-01-01T00:00:00Z").tzinfo))
            if latest:
                new_cursors.append((coll.url, latest))
        return objects, new_cursors
    except FetchError:
        raise
    except requests.HTTPError as e:
        code = e.response.status_code if e.response is not None else "?"
        raise FetchError(f"TAXII server answered HTTP {code}") from None
    except requests.Timeout:
        raise FetchError(f"timed out after {timeout:g} s") from None
    except requests.ConnectionError as e:
        raise FetchError(f"connection failed: {_root_cause(e)}") from None
    except (TAXIIServiceException, requests.RequestException, ValueError, KeyError) as e:
        raise FetchError(f"TAXII error: {' '.join(str(e).split())[:200]}") from None
