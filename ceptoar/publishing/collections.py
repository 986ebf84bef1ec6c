"""Collections: saved filters over published advisories.

A publication enters every collection whose filter matches the advisory as published; what a
collection then serves is derived by the store (ceptoar.store.membership).
"""

from __future__ import annotations

import tomllib
import uuid
from functools import lru_cache
from pathlib import Path

from ceptoar.core.errors import CeptoarError
from ceptoar.core.model import NAMESPACE, SLUG_RE, SYSTEM
from ceptoar.publishing.filters import compile_filter
from ceptoar.store import Store

SUGGESTED = "medical-suggested"


class CollectionError(CeptoarError, ValueError):
    pass


def collection_uuid(cid: str) -> str:
    """Stable across databases and restarts: derived from the collection's name."""
    return str(uuid.uuid5(NAMESPACE, f"collection|{cid}"))


def check(cid: str, title: str, filter_text: str, description: str | None = None) -> dict:
    if not SLUG_RE.match(cid or ""):
        raise CollectionError(f"collection id {cid!r} must be lowercase letters, digits, '.', '_' or '-'")
    if not (title or "").strip():
        raise CollectionError(f"collection {cid}: a title is required")
    compile_filter(filter_text)  # FilterError names the position
    return {"id": cid, "uuid": collection_uuid(cid), "title": title.strip(), "description": description,
            "filter": filter_text.strip()}


def load_defaults(path: Path) -> list[dict]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CollectionError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise CollectionError(f"{path}: {e}") from None
    out = []
    for i, c in enumerate(data.get("collection", []), 1):
        try:
            out.append(check(str(c.get("id", "")), str(c.get("title", "")), str(c.get("filter", "")),
                             c.get("description")))
        except ValueError as e:
            raise CollectionError(f"{path} [[collection]] #{i}: {e}") from None
    return out


def filter_view(rows: list[dict], kev_cves: set[str]) -> list[dict]:
    """Rows as the filter language sees them: `medical` is the analyst's decision or, while
    there is none, the suggestion; `kev` is true when any CVE is KEV-listed."""
    out = []
    for r in rows:
        medical = r["medical"] if r.get("medical") is not None else SUGGESTED in r.get("tags", [])
        kev = "kev" in r.get("tags", []) or any(c in kev_cves for c in r.get("cves", []))
        out.append(r | {"medical": medical, "kev": kev})
    return out


def matching(store: Store, row: dict, kev_cves: set[str] | None = None) -> list[str]:
    view = filter_view([row], store.advisories.kev_cves() if kev_cves is None else kev_cves)[0]
    return [cid for cid, text in store.collections.filters() if compiled(text)(view)]


@lru_cache(maxsize=256)
def compiled(text: str):
    """A collection's filter, compiled once per process."""
    return compile_filter(text)


def backfill(store: Store, cid: str) -> int:
    """Fill a new collection with the latest publication of every matching, live advisory."""
    coll = store.collections.get(cid)
    pred = compile_filter(coll["filter"])
    kev = store.advisories.kev_cves()
    placed = 0
    for pub in store.publications.list_latest(revoked=False):
        if pred(filter_view([pub.view], kev)[0]):
            placed += bool(store.membership.place(cid, pub.advisory, pub.version))
    return placed


def add(store: Store, cid: str, title: str, filter_text: str, description: str | None = None,
        actor: str = SYSTEM) -> tuple[dict, int]:
    """A new collection (an existing one must be removed first); the published advisories that
    match enter it now. Returns (collection, advisories placed)."""
    c = check(cid, title, filter_text, description)
    with store.transaction():
        if store.collections.get(cid):
            raise CollectionError(f"collection {cid!r} exists (remove it first to redefine it)")
        store.collections.upsert(c | {"origin": "cli"})
        placed = backfill(store, cid)
        store.audit.add(actor, "collection-add", cid, {"filter": c["filter"], "advisories": placed})
    return c, placed


def remove(store: Store, cid: str, actor: str = SYSTEM) -> None:
    """Remove a collection and its membership (the advisories stay)."""
    with store.transaction():
        if not store.collections.remove(cid):
            raise CollectionError(f"no collection {cid!r}")
        store.audit.add(actor, "collection-remove", cid)
