"""The feed catalogue (feeds/sources.toml): read and check source definitions."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from ceptoar.core.errors import CeptoarError
from ceptoar.core.model import SLUG_RE, SYSTEM, tlp_name
from ceptoar.normalize.kinds import KINDS
from ceptoar.publishing.filters import FilterError, compile_filter

KIND_NAMES = tuple(KINDS)
SECRET_OPTION_RE = re.compile(r"(password|secret|token|key)$", re.IGNORECASE)


class CatalogueError(CeptoarError, ValueError):
    """A catalogue entry (file or `sources add`) that cannot be used."""


def check_source(src: dict, where: str = "") -> dict:
    """A normalized source definition, or a CatalogueError naming what is wrong."""
    at = f"{where}: " if where else ""
    sid = str(src.get("id", "")).strip()
    if not SLUG_RE.match(sid):
        raise CatalogueError(f"{at}source id {sid!r} must be lowercase letters, digits, '.', '_' or '-'")
    kind = src.get("kind")
    if kind not in KIND_NAMES:
        raise CatalogueError(f"{at}source {sid}: kind {kind!r} is not one of {', '.join(KIND_NAMES)}")
    url = str(src.get("url", "")).strip()
    if not re.match(r"^https?://\S+$", url):
        raise CatalogueError(f"{at}source {sid}: url {url!r} must be an http(s) URL")
    try:
        tlp = tlp_name(str(src.get("tlp", "CLEAR")))
    except ValueError as e:
        raise CatalogueError(f"{at}source {sid}: {e}") from None
    options = dict(src.get("options") or {})
    if not isinstance(src.get("options") or {}, dict):
        raise CatalogueError(f"{at}source {sid}: options must be a table")
    literal = [k for k in options if SECRET_OPTION_RE.search(k)]
    if literal:
        raise CatalogueError(f"{at}source {sid}: put credentials in environment variables and name them "
                             f"(user_env, password_env, token_env), not {', '.join(literal)}")
    rule = src.get("auto_publish")
    if rule:
        try:
            compile_filter(str(rule))
        except FilterError as e:
            raise CatalogueError(f"{at}source {sid}: auto_publish: {e}") from None
        options["auto_publish"] = str(rule)
    urgent = src.get("urgent", options.get("urgent", True))
    if not isinstance(urgent, bool):
        raise CatalogueError(f"{at}source {sid}: urgent must be true or false")
    # The urgent path (a facility alerted on arrival, before review) is for CLEAR sources only;
    # off is recorded, on is the default and left out.
    options.pop("urgent", None)
    if not urgent:
        options["urgent"] = False
    return {
        "id": sid,
        "name": str(src.get("name") or sid),
        "kind": kind,
        "url": url,
        "enabled": bool(src.get("enabled", True)),
        "tlp": tlp,
        "lang": str(src.get("lang") or "ja"),
        "interval": int(src.get("interval") or 3600),
        "options": options,
    }


def load(path: Path) -> list[dict]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CatalogueError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise CatalogueError(f"{path}: {e}") from None
    sources = [check_source(s, f"{path} [[source]] #{i}") for i, s in enumerate(data.get("source", []), 1)]
    ids = [s["id"] for s in sources]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise CatalogueError(f"{path}: duplicate source ids {', '.join(sorted(dup))}")
    return sources


def add_source(store, src: dict, actor: str = SYSTEM) -> bool:
    """Add (or redefine) one source as the operator defined it; its enabled flag is the operator's.
    True when it is new."""
    d = check_source(src)
    with store.transaction():
        new = store.sources.upsert(d | {"defined_by": "cli"}, keep_enabled=False)
        store.audit.add(actor, "source-add" if new else "source-update", d["id"], {"url": d["url"], "kind": d["kind"]})
    return new


def set_enabled(store, source_id: str, enabled: bool, actor: str = SYSTEM) -> None:
    with store.transaction():
        if not store.sources.set_enabled(source_id, enabled):
            raise CatalogueError(f"no source {source_id!r} (see `ceptoar sources list`)")
        store.audit.add(actor, f"source-{'enable' if enabled else 'disable'}", source_id)
