"""One source's run through the pipeline: fetch → normalize → store, all or nothing.

A failure of any kind fails that source alone, with a one-line reason kept in `last_error`;
the store keeps nothing partial from it.
"""

from __future__ import annotations

import gc
import re
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ceptoar import triage
from ceptoar.ingest import Counts, store_entries
from ceptoar.model import Source
from ceptoar.normalize import Entry, FeedError, csaf, jvn, kev, rss, stix
from ceptoar.normalize.kev import load_json
from ceptoar.sources import http, taxii
from ceptoar.sources.http import FetchError
from ceptoar.store import Store

KINDS: dict[str, Callable[..., list[Entry]]] = {
    "jvn": jvn.parse,
    "rss": rss.parse,
    "kev": kev.parse,
    "csaf": csaf.parse,
    "stix": stix.parse,
}
DEFAULT_MAX_DOCUMENTS = 100

Progress = Callable[[str], None]


@dataclass
class Limits:
    timeout: float = http.DEFAULT_TIMEOUT
    max_bytes: int = http.DEFAULT_MAX_BYTES


@dataclass
class FetchResult:
    source: str
    status: str  # ok | not-modified | error
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    error: str | None = None
    note: str | None = None

    def as_dict(self) -> dict:
        return {"source": self.source, "status": self.status, "new": self.new, "updated": self.updated,
                "unchanged": self.unchanged, "error": self.error}


MEMBER_SUBMISSIONS = "taxii"  # `defined_by` of the sources that hold members' TAXII submissions


def source_of(row: dict) -> Source:
    tlp = row.get("tlp") or "CLEAR"
    return Source(id=row["id"], kind=row["kind"], url=row.get("url") or "", name=row.get("name") or row["id"],
                  tlp=tlp, lang=row.get("lang") or "ja", options=row.get("options") or {},
                  public=tlp == "CLEAR" and row.get("defined_by") != MEMBER_SUBMISSIONS)


def _map_url(url: str, source: Source) -> str:
    """Rewrite document URLs of an index by prefix (`url_map` option): mirrors, local copies."""
    for prefix, replacement in (source.options.get("url_map") or {}).items():
        if url.startswith(prefix):
            return replacement + url[len(prefix):]
    return url


def normalize(source: Source, body: bytes, charset: str | None, store: Store, limits: Limits,
              progress: Progress | None = None) -> tuple[list[Entry], list[tuple[str, str]], str | None]:
    """Entries of a body; a ROLIE index is followed to its CSAF documents (newest first,
    unchanged ones skipped, at most `max_documents` a run). Returns (entries, followed, note)."""
    if source.kind not in KINDS:
        raise FeedError(f"unknown source kind {source.kind!r}")
    if source.kind != "csaf":
        return KINDS[source.kind](body, source, charset), [], None
    doc = load_json(body, "the CSAF document or ROLIE index")
    if not csaf.is_rolie(doc):
        return [csaf.document(doc, source)], [], None
    include = source.options.get("include")
    pattern = re.compile(include, re.IGNORECASE) if include else None
    seen = store.sources.followed(source.id)
    todo = [e for e in csaf.rolie_entries(doc)
            if (pattern is None or pattern.search(e["id"])) and seen.get(e["id"]) != e["updated"]]
    cap = int(source.options.get("max_documents", DEFAULT_MAX_DOCUMENTS))
    entries, followed = [], []
    for i, e in enumerate(todo[:cap], 1):
        if progress:
            progress(f"{source.id}: document {i}/{min(cap, len(todo))} {e['id']}")
        try:
            resp = http.get(_map_url(e["url"], source), timeout=limits.timeout, max_bytes=limits.max_bytes)
            entries.append(csaf.document(load_json(resp.body, f"CSAF document {e['id']}"), source))
        except (FetchError, FeedError) as err:
            raise FetchError(f"{e['id']}: {err}") from None
        followed.append((e["id"], e["updated"]))
    note = f"{len(todo) - cap} more documents left for the next run" if len(todo) > cap else None
    return entries, followed, note


@contextmanager
def paused_gc():
    """Bulk normalization allocates millions of acyclic objects; the cyclic collector would walk
    the whole parsed tree again and again (a third of the parse time on a yearly JVN feed)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def ingest_bytes(store: Store, source: Source, body: bytes, charset: str | None = None,
                 limits: Limits | None = None, progress: Progress | None = None,
                 before_commit: Callable[[str | None], None] | None = None) -> tuple[Counts, str | None]:
    """Normalize a body and store it in one transaction; `before_commit(note)` runs inside it."""
    with paused_gc():
        entries, followed, note = normalize(source, body, charset, store, limits or Limits(), progress)
        return store_all(store, source, entries, followed, note, before_commit)


def store_all(store: Store, source: Source, entries: list[Entry], followed: list[tuple[str, str]],
              note: str | None = None, before_commit: Callable[[str | None], None] | None = None
              ) -> tuple[Counts, str | None]:
    """Store one source's entries in one transaction, then its auto-publish rule."""
    with paused_gc():
        with store.transaction():
            counts = store_entries(store, source, entries)
            store.sources.mark_followed(source.id, followed)
            if source.options.get("auto_publish"):
                # A triage decision the operator delegated to the catalogue, taken in the same
                # transaction as the ingest it follows.
                triage.auto_publish(store, {"id": source.id, "options": source.options},
                                    counts.new_ids + counts.updated_ids)
            if before_commit:
                before_commit(note)
    return counts, note


def ingest_objects(store: Store, source: Source, objects: list[dict], followed: list[tuple[str, str]] = (),
                   before_commit: Callable[[str | None], None] | None = None) -> Counts:
    """STIX objects received over TAXII (pulled upstream, or added by a member) through the
    tolerant STIX import, stored like any source's entries."""
    entries = stix.entries_from_objects(objects, source) if objects else []
    counts, _ = store_all(store, source, entries, list(followed), before_commit=before_commit)
    return counts


def fetch_source(store: Store, row: dict, limits: Limits | None = None,
                 progress: Progress | None = None) -> FetchResult:
    limits = limits or Limits()
    source = source_of(row)
    opts = source.options
    try:
        if source.kind == "taxii":
            objects, cursors = taxii.pull(source.url, opts, store.sources.followed(source.id),
                                          float(opts.get("timeout", limits.timeout)),
                                          int(opts.get("max_bytes", limits.max_bytes)), progress)
            counts = ingest_objects(store, source, objects, cursors,
                                    before_commit=lambda _note: store.sources.record_fetch(source.id, "ok"))
            return FetchResult(source.id, "ok", **counts.as_dict())
        resp = http.get(source.url, etag=row.get("etag"), last_modified=row.get("last_modified"),
                        timeout=float(opts.get("timeout", limits.timeout)),
                        max_bytes=int(opts.get("max_bytes", limits.max_bytes)))
        if resp.status == 304:
            store.sources.record_fetch(source.id, "not-modified")
            return FetchResult(source.id, "not-modified")

        def record(note: str | None) -> None:
            # A ROLIE run that left documents for later must not be skipped next time by a 304.
            etag, lm = (None, None) if note else (resp.etag, resp.last_modified)
            store.sources.record_fetch(source.id, "ok", etag=etag, last_modified=lm)

        counts, note = ingest_bytes(store, source, resp.body, resp.charset, limits, progress, record)
        return FetchResult(source.id, "ok", **counts.as_dict(), note=note)
    except (FetchError, FeedError) as e:
        reason = str(e)
    except Exception as e:  # a bug must still fail this source alone, in one line
        reason = f"internal error: {type(e).__name__}: {e}"
        if opts.get("debug"):
            traceback.print_exc()
    reason = " ".join(reason.split())[:500]
    store.sources.record_fetch(source.id, "error", reason)
    return FetchResult(source.id, "error", error=reason)


def ingest_file(store: Store, path: Path, row: dict, limits: Limits | None = None,
                progress: Progress | None = None) -> FetchResult:
    """The same normalization as a fetch, from a local file; fetch state is left alone."""
    limits = limits or Limits()
    source = source_of(row)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise FetchError(f"{path} is {size} bytes, over the {limits.max_bytes}-byte cap")
        counts, note = ingest_bytes(store, source, path.read_bytes(), None, limits, progress)
        return FetchResult(source.id, "ok", **counts.as_dict(), note=note)
    except OSError as e:
        return FetchResult(source.id, "error", error=f"cannot read {path}: {e.strerror}")
    except (FetchError, FeedError) as e:
        return FetchResult(source.id, "error", error=" ".join(str(e).split())[:500])
