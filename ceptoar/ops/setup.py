"""Setting a hub up: the schema created or upgraded, the feed catalogue and the default collections
loaded (both files read and checked before anything changes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ceptoar.core import settings
from ceptoar.core.model import SYSTEM
from ceptoar.core.paths import project_file
from ceptoar.facilities import registers
from ceptoar.ops import catalogue
from ceptoar.publishing import collections as colls
from ceptoar.store import Store


@dataclass
class InitResult:
    version: int
    upgraded_from: int | None
    backup: str | None
    sources_path: Path
    sources: int
    sources_new: int
    sources_kept: list[str]  # redefined by the operator (`sources add`): the catalogue does not override them
    collections_path: Path
    collections: int
    collections_new: int
    config_dir: Path | None = None
    config_made: list[Path] | None = None


def init(store: Store, sources_path: Path | None = None, collections_path: Path | None = None,
         actor: str = SYSTEM) -> InitResult:
    """Create or upgrade the database and load the catalogue and collections (idempotent)."""
    sources_path = sources_path or project_file("feeds/sources.toml")
    collections_path = collections_path or project_file("taxii_server/collections.toml")
    defs = catalogue.load(sources_path)
    coll_defs = colls.load_defaults(collections_path)
    cfg = settings.current()
    made = settings.create_config_dir(cfg)
    version = store.migrate(actor, backfills={12: registers.refresh_all, 17: registers.refresh_all})
    new, kept = 0, []
    with store.transaction():
        for d in defs:
            current = store.sources.get(d["id"])
            if current is not None and current.get("defined_by") == "cli":
                kept.append(d["id"])
                continue
            new += store.sources.upsert(d | {"defined_by": "catalogue"})
        new_colls = [c["id"] for c in coll_defs if store.collections.upsert(c | {"origin": "catalogue"})]
        for cid in new_colls:
            colls.backfill(store, cid)
    return InitResult(version, store.upgraded_from, store.last_backup, sources_path, len(defs), new, kept,
                      collections_path, len(coll_defs), len(new_colls), cfg.config_dir, made)
