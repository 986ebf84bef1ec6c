"""One source's run through the pipeline: fetch → normalize → store, all or nothing.

A failure of any kind fails that source alone, with a one-line reason kept in `last_error`;
the store keeps nothing partial from it.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import traceback
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ceptoar.core.errors import StoreError
from ceptoar.core.model import MEMBER_SUBMISSIONS, Source, source_origin
from ceptoar.facilities import registers
from ceptoar.fetch import http, rolie, taxii
from ceptoar.fetch.http import FetchError
from ceptoar.ingest.entries import Counts, newest_per_key, raw_hash, store_entries
from ceptoar.ingest.offload import NormalizingStopped, OffloadedStream, children
from ceptoar.normalize import Entries, Entry, FeedError, Known, budget, epss, stix
from ceptoar.normalize.kinds import PARSERS, STREAMS
from ceptoar.publishing import triage
from ceptoar.store import Store
from ceptoar.store.leases import LeaseHeld, held
from ceptoar.store.objects import version_key
from ceptoar.store.sources import WARNINGS_KEPT

Progress = Callable[[str], None]
log = logging.getLogger(__name__)


@dataclass
class Limits:
    timeout: float = http.DEFAULT_TIMEOUT
    max_bytes: int = http.DEFAULT_MAX_BYTES
    # A streamed document at least this large is normalized in a second process while this one
    # stores (ceptoar.ingest.offload); below it, starting that process costs more than it saves.
    offload_bytes: int = 4 << 20
    # The whole run of a source, download, normalizing and storing (a source's own `run_seconds`
    # option stands over this; None: the default of its kind, RUN_SECONDS).
    run_seconds: float | None = None


RUN_SECONDS = {"taxii": taxii.DEFAULT_RUN_SECONDS, "csaf": rolie.DEFAULT_RUN_SECONDS}
DEFAULT_RUN_SECONDS = 600.0


def run_seconds(source: Source, limits: Limits) -> float:
    """How long one run of `source` may take: its option, else the command's, else its kind's."""
    given = source.options.get("run_seconds", limits.run_seconds)
    return float(given) if given is not None else RUN_SECONDS.get(source.kind, DEFAULT_RUN_SECONDS)


@dataclass
class FetchResult:
    source: str
    status: str  # ok | not-modified | error
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    error: str | None = None
    note: str | None = None
    warnings: list[str] = field(default_factory=list)
    wait: float | None = None  # seconds the upstream asked before the next poll (Retry-After, max-age)
    new_fields: list[str] = field(default_factory=list)  # item fields first seen that their schema does not name

    def as_dict(self) -> dict:
        return {"source": self.source, "status": self.status, "new": self.new, "updated": self.updated,
                "unchanged": self.unchanged, "skipped": self.skipped, "error": self.error, "note": self.note,
                "warning_count": len(self.warnings), "warnings": self.warnings[:WARNINGS_KEPT],
                "new_fields": self.new_fields}

    def summary_note(self) -> str | None:
        """One line for the source's status: a run cut short, items skipped."""
        parts = [self.note] if self.note else []
        if self.skipped:
            parts.append(f"{self.skipped} item(s) skipped")
        if self.warnings:
            parts.append(f"{len(self.warnings)} warning(s), first: {self.warnings[0]}")
        return "; ".join(parts)[:500] or None




def urgent_path(source: Source) -> bool:
    """Whether the source's urgent advisories alert facilities on arrival: public CLEAR sources,
    unless the catalogue or `sources add --no-urgent` turned it off; never one above CLEAR."""
    return source.public and source.tlp == "CLEAR" and source.options.get("urgent", True) is not False


def source_of(row: dict) -> Source:
    tlp = row.get("tlp") or "CLEAR"
    return Source(id=row["id"], kind=row["kind"], url=row.get("url") or "", name=row.get("name") or row["id"],
                  tlp=tlp, lang=row.get("lang") or "ja", options=row.get("options") or {},
                  public=tlp == "CLEAR" and row.get("defined_by") != MEMBER_SUBMISSIONS)


def normalize(source: Source, body: bytes, charset: str | None = None) -> list[Entry]:
    """The entries of one body, by the source's kind. Pure: no I/O, no store."""
    parser = PARSERS.get(source.kind)
    if parser is None:
        raise FeedError(f"unknown source kind {source.kind!r}")
    return parser(body, source, charset)


def bodies_of(source: Source, body: bytes, store: Store, limits: Limits, progress: Progress | None = None,
              warnings: list[str] | None = None
              ) -> tuple[list[tuple[str | None, bytes]], list[tuple[str, str]], str | None]:
    """What there is to normalize: the body itself, or for a ROLIE index the documents it leads to
    (fetched by ceptoar.fetch.rolie; its entries of the wrong shape in `warnings`). Returns
    ((name, body) pairs, followed, note)."""
    index = rolie.index_of(body) if source.kind == "csaf" else None
    if index is None:
        return [(None, body)], [], None
    return rolie.follow(index, source, store.sources.followed(source.id), limits.timeout, limits.max_bytes,
                        progress, warnings)


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
                 before_commit: Callable[[FetchResult], None] | None = None) -> FetchResult:
    """Normalize a body and store it in one transaction; `before_commit(result)` runs inside it."""
    with paused_gc():
        limits = limits or Limits()
        index_warnings: list[str] = []
        bodies, followed, note = bodies_of(source, body, store, limits, progress, index_warnings)
        if len(bodies) == 1 and bodies[0][0] is None:
            stream = STREAMS.get(source.kind)
            if stream:
                held = store.sources.raw_held(source.id)
                offloaded = None
                # Child processes for a large document the store holds nothing of yet. A re-fetch
                # recognizes most items before building them (`known`): its work is the parsing,
                # which children would each repeat, after starting up (0.4 s for 10,000 items).
                n = children() if len(body) >= limits.offload_bytes and not held else 0
                if n:
                    try:
                        offloaded = OffloadedStream(source.kind, body, source, charset, n)
                    except OSError as e:  # no interpreter to start: this process normalizes
                        log.warning("normalizing %s in this process: cannot start another (%s)", source.id, e)
                if offloaded:
                    with offloaded as entries:
                        del body, bodies
                        return store_all(store, source, entries, followed, note, before_commit, progress)
                entries = stream(body, source, charset)
                if held:
                    entries.known = lambda raw: held.get(raw_hash(raw))
            else:
                entries = normalize(source, body, charset)
        else:
            entries = Entries(warnings=index_warnings)
            for name, document in bodies:
                try:
                    read = normalize(source, document)
                except FeedError as e:
                    raise FeedError(f"{name}: {e}") from None
                entries.extend(read)
                entries.warnings += [f"{name}: {w}" for w in getattr(read, "warnings", [])]
                entries.skipped += getattr(read, "skipped", 0)
        del body, bodies  # what the entries still need, they hold; the rest can go as they are stored
        return store_all(store, source, entries, followed, note, before_commit, progress)


CHUNK = 500  # entries stored at a time: what one source's run holds in serialized form is bounded
LARGE = 1000  # new or changed advisories after which an ingest checkpoints the store


def _chunks(entries, n: int):
    batch = []
    for e in entries:
        batch.append(e)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def store_all(store: Store, source: Source, entries, followed: list[tuple[str, str]],
              note: str | None = None, before_commit: Callable[[FetchResult], None] | None = None,
              progress: Progress | None = None) -> FetchResult:
    """Store one source's entries (a list, or a normalizer's stream) in one transaction (all or
    nothing), a chunk at a time: each chunk read, serialized, written and let go before the next,
    so a large feed is never held whole. Then its auto-publish rule."""
    counts = Counts()
    seen: dict[str, tuple] = {}  # key → version stored in this run: the newest copy of an entry stands
    held: dict[str, str] = {}  # key → version of the entries the stream knew to be held unchanged
    done = 0
    fields: Counter[str] = Counter()  # field paths the items' schema does not name (ceptoar.normalize.drift)
    with paused_gc():
        with store.transaction():
            for chunk in _chunks(entries, CHUNK):
                budget.check(lambda done=done: f"after {done:,} entries" if done
                             else "with the document read, before storing")
                # Items the stream knew to be held unchanged stand as they are, against any other
                # copy of the same entry in this fetch at an older version.
                for k in (e for e in chunk if isinstance(e, Known)):
                    counts.unchanged += 1
                    held[k.key] = seen[k.key] = max(seen.get(k.key, ""), k.version or "")
                chunk = [e for e in newest_per_key([e for e in chunk if not isinstance(e, Known)], counts)
                         if e.key not in seen or version_key(e.report) >= seen[e.key]]
                for e in chunk:
                    if held.get(e.key) == version_key(e.report):
                        counts.warnings.append(f"{e.key}: given twice at {held[e.key]}, as stored and changed; "
                                               "the changed copy stands")
                    seen[e.key] = version_key(e.report)
                for e in chunk:
                    fields.update(e.unknown)
                c = store_entries(store, source, chunk)
                store.epss.refresh(c.new_ids + c.updated_ids)  # the scores their CVEs have already
                done += len(chunk)
                del chunk
                for name in ("new", "updated", "unchanged"):
                    setattr(counts, name, getattr(counts, name) + getattr(c, name))
                for name in ("new_ids", "updated_ids", "revoked_ids", "kept_apart", "warnings"):
                    getattr(counts, name).extend(getattr(c, name))
                if progress and done > CHUNK:
                    progress(f"{source.id}: {done:,} entries stored")
            store.sources.mark_followed(source.id, followed)
            triage.revoked_by_source(store, source.id, counts.revoked_ids)
            if source.options.get("auto_publish"):
                # A triage decision the operator delegated to the catalogue, taken in the same
                # transaction as the ingest it follows.
                triage.auto_publish(store, {"id": source.id, "options": source.options},
                                    counts.new_ids + counts.updated_ids)
            if urgent_path(source):
                # Facilities running an exposed product hear of its exploitation before review.
                registers.alert_on_arrival(store, counts.new_ids + counts.updated_ids)
            result = FetchResult(source.id, "ok", counts.new, counts.updated, counts.unchanged,
                                 skipped=getattr(entries, "skipped", 0), note=note,
                                 warnings=[*getattr(entries, "warnings", []), *counts.warnings])
            result.counts = counts
            result.new_fields = store.sources.note_fields(source.id, dict(fields))
            if result.skipped and not (counts.new or counts.updated or counts.unchanged):
                # Never `ok` with nothing: a document whose every item was unreadable fails its source.
                first = next((w for w in result.warnings if w.startswith("skipped")), result.warnings[:1] or [""])
                result.status = "error"
                result.error = f"nothing usable: every item ({result.skipped}) skipped; first: {first}"[:500]
            if before_commit:
                before_commit(result)
    if counts.new + counts.updated >= LARGE:
        store.checkpoint()  # SQLite's WAL folded in; PostgreSQL vacuumed and analyzed
    return result


def ingest_epss(store: Store, source: Source, body: bytes, progress: Progress | None = None,
                before_commit: Callable[[FetchResult], None] | None = None) -> FetchResult:
    """FIRST's EPSS file into the CVEs' scores, streamed, in one transaction; then every advisory's
    highest over its CVEs. `new` counts the scores written."""
    with store.transaction():
        read = epss.read(body)
        del body
        written = store.epss.put(_checked_rows(read, source, progress), read.score_date, read.model_version,
                                 source_origin(source.id))
        store.epss.refresh()
        result = FetchResult(source.id, "ok", new=written, warnings=read.warnings,
                             note=f"EPSS of {read.score_date or '?'} (model {read.model_version or '?'})")
        if before_commit:
            before_commit(result)
    return result


def _checked_rows(read, source: Source, progress: Progress | None):
    for n, row in enumerate(read.rows, 1):
        if n % 10000 == 0:
            budget.check(lambda n=n: f"after {n:,} EPSS rows")
            if progress:
                progress(f"{source.id}: {n:,} EPSS scores read")
        yield row


def ingest_objects(store: Store, source: Source, objects: list[dict], followed: list[tuple[str, str]] = (),
                   note: str | None = None, before_commit: Callable[[FetchResult], None] | None = None
                   ) -> FetchResult:
    """STIX objects received over TAXII (pulled upstream, or added by a member) through the
    tolerant STIX import, stored like any source's entries."""
    entries = stix.entries_from_objects(stix.objects_of(objects), source) if objects else []
    return store_all(store, source, entries, list(followed), note, before_commit=before_commit)


def fetch_source(store: Store, row: dict, limits: Limits | None = None,
                 progress: Progress | None = None) -> FetchResult:
    """One source's run, while holding its lease (the same source is never fetched twice at once)."""
    limits = limits or Limits()
    try:
        with held(store, f"fetch:{row['id']}", f"the fetch of {row['id']}"):
            with budget.running(run_seconds(source_of(row), limits), f"the run of {row['id']}"):
                return _fetch_held(store, row, limits, progress)
    except LeaseHeld as e:
        return FetchResult(row["id"], "error", error=str(e))


def _fetch_held(store: Store, row: dict, limits: Limits, progress: Progress | None) -> FetchResult:
    source = source_of(row)
    opts = source.options
    try:
        if source.kind == "taxii":
            got = taxii.pull(source.url, opts, store.sources.followed(source.id),
                             float(opts.get("timeout", limits.timeout)), int(opts.get("max_bytes", limits.max_bytes)),
                             progress)

            def pulled(r: FetchResult) -> None:
                if got.failure or r.status == "error":  # what came is kept; the source failed, saying why
                    store.sources.record_fetch(source.id, "error", (got.failure or r.error)[:500],
                                               changed=bool(r.new or r.updated), warnings=r.warnings)
                else:
                    store.sources.record_fetch(source.id, "ok", note=r.summary_note(),
                                               changed=bool(r.new or r.updated), warnings=r.warnings)

            result = ingest_objects(store, source, got.objects, got.cursors, got.note, before_commit=pulled)
            if got.failure:
                result.status, result.error = "error", got.failure[:500]
            return result
        resp = http.get(source.url, etag=row.get("etag"), last_modified=row.get("last_modified"),
                        timeout=float(opts.get("timeout", limits.timeout)),
                        max_bytes=int(opts.get("max_bytes", limits.max_bytes)))
        if resp.status == 304:
            store.sources.record_fetch(source.id, "not-modified")
            return FetchResult(source.id, "not-modified", wait=resp.wait)

        def record(result: FetchResult) -> None:
            if result.status == "error":  # nothing usable: failed, and fetched again in full next time
                store.sources.record_fetch(source.id, "error", result.error, warnings=result.warnings)
                return
            # A ROLIE run that left documents for later must not be skipped next time by a 304.
            etag, lm = (None, None) if result.note else (resp.etag, resp.last_modified)
            store.sources.record_fetch(source.id, "ok", etag=etag, last_modified=lm, note=result.summary_note(),
                                       changed=bool(result.new or result.updated), warnings=result.warnings)

        if source.kind == "epss":
            result = ingest_epss(store, source, resp.take_body(), progress, record)
        else:
            result = ingest_bytes(store, source, resp.take_body(), resp.charset, limits, progress, record)
        result.wait = resp.wait
        return result
    except (FetchError, FeedError, StoreError, NormalizingStopped, budget.OutOfTime) as e:
        reason = str(e)
        wait = getattr(e, "wait", None)
    except Exception as e:  # a bug must still fail this source alone, in one line
        reason, wait = f"internal error: {type(e).__name__}: {e}", None
        if opts.get("debug"):
            traceback.print_exc()
    reason = " ".join(reason.split())[:500]
    store.sources.record_fetch(source.id, "error", reason)
    return FetchResult(source.id, "error", error=reason, wait=wait)


def ingest_file(store: Store, path: Path, row: dict, limits: Limits | None = None,
                progress: Progress | None = None) -> FetchResult:
    """The same normalization as a fetch, from a local file; fetch state is left alone."""
    limits = limits or Limits()
    source = source_of(row)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise FetchError(f"{path} is {size} bytes, over the {limits.max_bytes}-byte cap")
        if source.kind == "epss":
            return ingest_epss(store, source, path.read_bytes(), progress)
        return ingest_bytes(store, source, path.read_bytes(), None, limits, progress)
    except OSError as e:
        return FetchResult(source.id, "error", error=f"cannot read {path}: {e.strerror}")
    except (FetchError, FeedError, NormalizingStopped) as e:
        return FetchResult(source.id, "error", error=" ".join(str(e).split())[:500])


def renormalize(store: Store, row: dict, actor: str, progress: Progress | None = None) -> FetchResult:
    """Rebuild a source's facts from its stored raw entries with today's normalizer (after a fix),
    in one transaction: new versions only where the result differs; analyst decisions untouched.
    An entry that no longer parses is reported and left as it is."""
    source = source_of(row)
    # What came over TAXII is kept as STIX bundles: the STIX normalizer reads it back.
    reader = dataclasses.replace(source, kind="stix") if source.kind == "taxii" else source
    entries, failed = [], []
    with paused_gc():
        for batch in store.sources.raw_entries(source.id):
            for key, raw in batch:
                try:
                    got = normalize(reader, raw.encode("utf-8", "surrogatepass"))
                except (FeedError, ValueError) as e:
                    failed.append(f"{key}: {' '.join(str(e).split())[:120]}")
                    continue
                entries.extend(got)
            if progress:
                progress(f"{source.id}: {len(entries)} entries re-read")
        with store.transaction():
            counts = store_entries(store, source, entries, recheck=True)
            triage.revoked_by_source(store, source.id, counts.revoked_ids)
            store.audit.add(actor, "renormalize", source.id, {"entries": len(entries), "updated": counts.updated,
                                                              "unparsable": len(failed)})
    result = FetchResult(source.id, "ok", counts.new, counts.updated, counts.unchanged,
                         skipped=len(failed), warnings=[*failed[:20], *counts.warnings])
    result.counts = counts
    return result
