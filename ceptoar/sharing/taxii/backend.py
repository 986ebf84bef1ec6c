"""medallion's backend seam, implemented over the hub's store.

Reads come from the materialized collection membership, filtered by the member's grant and TLP
clearance in SQL, paged by keyset on (date_added, seq). `next` is a signed, stateless token that
carries its query and cursor, bound to the member, the collection and the endpoint, so it is valid
across workers and restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import uuid
import zlib
from datetime import UTC, datetime, timedelta

from flask import g, request
from flask.json.provider import DefaultJSONProvider
from medallion.backends.base import Backend
from medallion.common import datetime_to_string
from medallion.exceptions import ProcessingError

from ceptoar.core.model import MEMBER_SUBMISSIONS, TLP_ORDER
from ceptoar.normalize.stix import STIX_ID_RE
from ceptoar.pipeline import ingest_objects, source_of
from ceptoar.store import Store

MEDIA_STIX = "application/stix+json;version=2.1"
MEDIA_TAXII = "application/taxii+json;version=2.1"
TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
SUBMISSION_TLP = "AMBER"  # what members send is AMBER until an analyst decides otherwise

# Query parameters each endpoint takes (anything else is a 400, never silently ignored).
ALLOWED = {
    "objects": {"added_after", "limit", "next", "match[id]", "match[type]", "match[version]", "match[spec_version]"},
    "object": {"added_after", "limit", "next", "match[version]", "match[spec_version]"},
    "versions": {"added_after", "limit", "next", "match[spec_version]"},
    "delete": {"match[version]", "match[spec_version]"},
}


# STIX 2.1 common properties and the type each must have (a malformed envelope is a 400, never a 500).
_LIST_OF_STR = (list, str)
COMMON = {"spec_version": str, "created": str, "modified": str, "created_by_ref": str, "revoked": bool,
          "lang": str, "confidence": int, "extensions": dict, "object_refs": _LIST_OF_STR,
          "object_marking_refs": _LIST_OF_STR, "labels": _LIST_OF_STR, "external_references": (list, dict),
          "granular_markings": (list, dict)}


class Spliced(dict):
    """A TAXII envelope already serialized (`text`); non-empty, as medallion's views test it."""

    def __init__(self, text: str):
        super().__init__(spliced=True)
        self.text = text


class SplicingJSON(DefaultJSONProvider):
    """Flask's JSON, except that a Spliced envelope is its own text (medallion's views call
    `flask.json.dumps` on what the backend returns)."""

    def dumps(self, obj, **kwargs) -> str:
        if isinstance(obj, Spliced):
            return obj.text
        return super().dumps(obj, **kwargs)


def malformed(o: dict) -> str | None:
    """What is wrong with an object's common properties, or None."""
    for name, kind in COMMON.items():
        if name not in o:
            continue
        v = o[name]
        if isinstance(kind, tuple):
            container, item = kind
            if not isinstance(v, container) or not all(isinstance(x, item) for x in v):
                return f"{name} must be a list of {'strings' if item is str else 'objects'}"
        elif not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            return f"{name} must be {'a ' + kind.__name__ if kind is not dict else 'an object'}"
    return None


def bad(message: str) -> ProcessingError:
    return ProcessingError(f"The server did not understand the request or filter parameters: {message}", 400)


def parse_timestamp(text: str, name: str) -> str:
    """An RFC 3339 timestamp, normalized to the store's form (UTC, microseconds, Z)."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})", text):
            raise ValueError
        return datetime_to_string(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except (ValueError, OverflowError):  # year 9999 at -14:00 is past what a timestamp can hold
        raise bad(f"{name} must be an RFC 3339 timestamp within years 0001–9999 in UTC, not {text!r}") from None


class Query:
    """The filters of one request: from its parameters, or from the `next` token it carries."""

    def __init__(self, kind: str, object_id: str | None = None):
        args = request.args
        for key in args:
            if key not in ALLOWED[kind]:
                raise bad(f"unknown parameter {key!r} here (allowed: {', '.join(sorted(ALLOWED[kind]))})")
            values = args.getlist(key)
            if len(values) > 1:
                raise bad(f"parameter {key!r} given {len(values)} times; separate values with commas")
        if "next" in args and not args["next"].strip():
            raise bad("parameter 'next' is empty")
        self.kind = kind
        self.object_id = object_id
        self.next = args.get("next")
        self.added_after: str | None = None
        self.ids: list[str] = []
        self.types: list[str] = []
        self.spec_versions: list[str] = []
        self.versions: list[str] = []
        self.timestamps: list[str] = []

    def parse(self) -> Query:
        """The filters from the request's parameters (each checked)."""
        args = request.args
        for key in args:
            if key != "next" and not args[key].strip():
                raise bad(f"parameter {key!r} is empty")
        self.added_after = parse_timestamp(args["added_after"], "added_after") if "added_after" in args else None
        self.ids = self._list("match[id]", STIX_ID_RE, "a STIX id")
        self.types = self._list("match[type]", TYPE_RE, "a STIX type")
        self.spec_versions = self._list("match[spec_version]", re.compile(r"^2\.[01]$"), "2.0 or 2.1")
        raw_versions = self._list("match[version]", None, None) or (["all"] if self.kind == "versions" else ["last"])
        keywords = [v for v in raw_versions if v in ("first", "last", "all")]
        if "all" in keywords and len(raw_versions) > 1:
            raise bad("match[version]=all cannot be combined with other values")
        self.versions = keywords
        self.timestamps = [parse_timestamp(v, "match[version]") for v in raw_versions if v not in keywords]
        return self

    def _list(self, key: str, pattern, what) -> list[str]:
        if key not in request.args:
            return []
        values = [v.strip() for v in request.args[key].split(",")]
        for v in values:
            if not v or (pattern is not None and not pattern.match(v)):
                raise bad(f"{key} value {v!r} is not {what}" if what else f"{key} has an empty value")
        return values

    FILTERS = ("added_after", "ids", "types", "spec_versions", "versions", "timestamps")

    def filters(self) -> dict:
        return {k: getattr(self, k) for k in self.FILTERS}

    def load(self, filters: dict) -> Query:
        for k in self.FILTERS:
            setattr(self, k, filters[k])
        return self


class Token:
    """A signed, stateless `next`: who asked, where, the query's filters and the cursor reached.
    With a token bound to the same member, collection and endpoint, its query governs whatever
    filter parameters come with it (clients such as OpenCTI's connector drop or keep them as they
    please); a token of another member, collection or endpoint is ignored."""

    VERSION = 2

    def __init__(self, key: bytes):
        self.key = key

    def _sign(self, payload: str) -> str:
        return hmac.new(self.key, payload.encode(), hashlib.sha256).hexdigest()[:32]

    def make(self, bound: list, filters: dict, row: dict) -> str:
        raw = json.dumps([self.VERSION, bound, filters, row["date_added"], row["seq"]], separators=(",", ":"))
        payload = base64.urlsafe_b64encode(zlib.compress(raw.encode(), 9)).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}"

    def open(self, token: str, bound: list) -> tuple[dict, tuple[str, int]] | None:
        """(filters, cursor) for a token bound to `bound`; None for a genuine token bound elsewhere
        or made by an earlier version of the hub; a 400 for anything the hub did not sign."""
        try:
            payload, sig = token.split(".")
            if not hmac.compare_digest(sig, self._sign(payload)):
                raise ValueError
            data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        except (ValueError, TypeError):
            raise bad("'next' is not valid") from None
        try:
            version, was_bound, filters, date_added, seq = json.loads(zlib.decompress(data))
        except (ValueError, TypeError, zlib.error):
            return None  # signed by this hub in an older form: start afresh
        if version != self.VERSION or was_bound != bound:
            return None
        return filters, (date_added, int(seq))


def _check_envelope(objs) -> None:
    """A TAXII envelope of STIX-shaped objects, or one TAXII error naming the first few bad ones."""
    if not isinstance(objs, dict) or not isinstance(objs.get("objects"), list):
        raise ProcessingError("The body must be a TAXII envelope with an 'objects' list", 422)
    try:
        json.dumps(objs, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise bad("a string holds a lone surrogate (an invalid \\ud800–\\udfff escape)") from None
    problems = [f"objects[{i}] ({o['id'] if isinstance(o.get('id'), str) else 'no id'}): {why}"
                for i, o in enumerate(objs["objects"]) if isinstance(o, dict) and (why := malformed(o))]
    if problems:
        raise bad("; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))


def _split_valid(objects: list) -> tuple[list[dict], list[dict]]:
    """(objects with a type and a valid id of that type, a failure for each of the others)."""
    valid, failures = [], []
    for i, o in enumerate(objects):
        if isinstance(o, dict) and isinstance(o.get("type"), str) and isinstance(o.get("id"), str) \
                and STIX_ID_RE.fullmatch(o["id"]) and o["id"].startswith(o["type"] + "--"):
            valid.append(o)
        else:
            oid = o.get("id", f"objects[{i}]") if isinstance(o, dict) else f"objects[{i}]"
            failures.append({"id": str(oid), "version": "", "message": "not a STIX object with a type and a valid id"})
    return valid, failures


class HubBackend(Backend):
    """Every method sees the authenticated member in `g.member` (set by the app's auth)."""

    def __init__(self, **kwargs):
        self.db_path = kwargs["db"]
        self.api_root = kwargs.get("api_root", "ceptoar")
        self.max_content_length = int(kwargs.get("max_content_length", 10 * 1024 * 1024))
        self.title = kwargs.get("title", "CEPTOAR hub (医療セプター)")
        self.public_url = (kwargs.get("public_url") or "").rstrip("/") or None
        self.max_objects = int(kwargs.get("max_objects", 1000))
        self.max_objects_per_day = int(kwargs.get("max_objects_per_day", 10000))
        self.read_db = kwargs.get("read_db") or None
        self._local = threading.local()
        self._next_key: bytes | None = None

    # --- plumbing ---------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if getattr(self._local, "store", None) is None:
            self._local.store = Store(self.db_path)
        return self._local.store

    @property
    def reader(self) -> Store:
        """Where pages are read: a hot standby when one is configured (`taxii_read_db`), else the
        primary. Members, grants, lockouts, audit entries and every write use `store`, the primary."""
        if self.read_db is None:
            return self.store
        if getattr(self._local, "reader", None) is None:
            self._local.reader = Store(self.read_db)
        return self._local.reader

    def release(self) -> None:
        """At the end of a request: a PostgreSQL connection goes back to the pool (a thread may
        not come back); SQLite keeps its per-thread connection."""
        for name in ("store", "reader"):
            store = getattr(self._local, name, None)
            if store is not None and store.dialect == "postgresql":
                store.close()
                setattr(self._local, name, None)

    @property
    def member(self) -> dict:
        return g.member

    def _key(self) -> bytes:
        if self._next_key is None:
            self._next_key = bytes.fromhex(self.store.meta("next_key"))
        return self._next_key

    def _coll(self, collection_id: str) -> dict | None:
        """A collection, read once per request (medallion's views ask for it several times)."""
        cache = g.setdefault("ceptoar_collections", {})
        if collection_id not in cache:
            cache[collection_id] = self.reader.collections.get(collection_id, mixed=True)
        return cache[collection_id]

    def _grants(self) -> dict:
        if "ceptoar_grants" not in g:  # read with the member by authentication, when it could
            grants = self.member.get("grants")
            g.ceptoar_grants = grants if grants is not None else self.store.members.grants_of(self.member["id"])
        return g.ceptoar_grants

    def _collection(self, api_root: str, collection_id: str) -> tuple[dict, tuple[bool, bool]] | None:
        if api_root != self.api_root:
            return None
        c = self._coll(collection_id)
        if c is None or collection_id != c["uuid"]:
            return None  # TAXII names collections by UUID; the alias is informative
        grant = self._grants().get(c["id"])
        return (c, grant) if grant else None

    def _resource(self, c: dict, grant: tuple[bool, bool]) -> dict:
        """A collection as this member sees it. Members whose client selects collections by title
        and cannot type the titles (OpenCTI's connector splits its setting at '.') may be set to
        see each collection's name as its title, the title then leading the description."""
        title, description = c["title"], c.get("description")
        if self.member.get("collection_titles") == "name":
            title, description = c["id"], " — ".join(t for t in (c["title"], description) if t)
        out = {"id": c["uuid"], "title": title, "alias": c["id"], "can_read": grant[0], "can_write": grant[1],
               "media_types": [MEDIA_STIX]}
        if description:
            out["description"] = description
        return out

    # --- discovery, API root, collections ---------------------------------------------------
    def server_discovery(self) -> dict:
        # From the configured public URL; only without one (development) from the request.
        root = (self.public_url or request.host_url.rstrip("/")) + f"/{self.api_root}/"
        return {"title": self.title, "description": "Threat information of the medical CEPTOAR for member associations",
                "contact": "CEPTOAR secretariat", "default": root, "api_roots": [root]}

    def get_api_root_information(self, api_root: str) -> dict | None:
        if api_root != self.api_root:
            return None
        return {"title": self.title, "versions": [MEDIA_TAXII], "max_content_length": self.max_content_length}

    def get_collections(self, api_root: str) -> dict | None:
        if api_root != self.api_root:
            return None
        grants = self._grants()
        cols = [self._resource(c, grants[c["id"]]) for c in self.reader.collections.list(counts=False)
                if c["id"] in grants]
        return {"collections": cols} if cols else {}

    def get_collection(self, api_root: str, collection_id: str) -> dict | None:
        found = self._collection(api_root, collection_id)
        return self._resource(*found) if found else None

    # --- reads ------------------------------------------------------------------------------
    def _page(self, collection_id: str, q: Query, limit: int, with_json: bool) -> tuple[list[dict], bool, str | None]:
        c = self._coll(collection_id)
        member = self.member
        bound = [member["id"], c["id"], q.kind, q.object_id]
        tokens = Token(self._key())
        opened = tokens.open(q.next, bound) if q.next else None
        if opened:
            q.load(opened[0])
            cursor = opened[1]
        else:
            q.parse()
            cursor = None
        rows = self.reader.membership.page(
            c["id"], TLP_ORDER.index(member["clearance"]), object_id=q.object_id, added_after=q.added_after,
            cursor=cursor, ids=q.ids, types=q.types, spec_versions=q.spec_versions, versions=q.versions,
            timestamps=q.timestamps, limit=limit + 1, with_json=with_json, mixed=c["mixed"])
        more = len(rows) > limit
        rows = rows[:limit]
        token = tokens.make(bound, q.filters(), rows[-1]) if more else None
        g.objects_returned = len(rows)
        g.query = q
        return rows, more, token

    @staticmethod
    def _headers(rows: list[dict]) -> dict:
        if not rows:
            # TAXII asks for both headers on every 200; with nothing to return, the request's own
            # added_after (or the epoch) is a cursor that skips nothing.
            first = last = g.query.added_after or "1970-01-01T00:00:00.000000Z"
        else:
            first, last = rows[0]["date_added"], rows[-1]["date_added"]
        return {"X-TAXII-Date-Added-First": first, "X-TAXII-Date-Added-Last": last}

    @staticmethod
    def _spliced(rows: list[dict], more: bool, token: str | None) -> dict:
        """An objects envelope whose text is the stored JSON of each object put in place, not parsed
        and dumped again (most of a page's time): see `SplicingJSON`."""
        if not rows:
            return {}
        return HubBackend._envelope_text(",".join(r["json"] for r in rows), more, token)

    @staticmethod
    def _envelope_text(items: str, more: bool, token: str | None) -> Spliced:
        """The text of an envelope of `objects` (already JSON, comma-separated), `more` and `next`."""
        tail = f',"next":{json.encoder.encode_basestring_ascii(token)}' if token else ""
        return Spliced('{"more":' + ("true" if more else "false") + ',"objects":[' + items + "]" + tail + "}")

    @staticmethod
    def _envelope(key: str, items: list, more: bool, token: str | None) -> dict:
        if not items:
            return {}
        out = {"more": more, key: items}
        if token:
            out["next"] = token
        return out

    def get_objects(self, api_root, collection_id, filter_args, allowed_filters, limit):
        rows, more, token = self._page(collection_id, Query("objects"), limit, with_json=True)
        return self._spliced(rows, more, token), self._headers(rows)

    def get_object_manifest(self, api_root, collection_id, filter_args, allowed_filters, limit):
        rows, more, token = self._page(collection_id, Query("objects"), limit, with_json=False)
        return self._manifest(rows, more, token), self._headers(rows)

    @staticmethod
    def _manifest(rows: list[dict], more: bool, token: str | None) -> dict:
        """A manifest envelope written as text, each stored string JSON-escaped (through `json.dumps`,
        100 small dicts were a tenth of the page's time)."""
        if not rows:
            return {}
        q = json.encoder.encode_basestring_ascii
        items = ",".join(f'{{"id":{q(r["object_id"])},"date_added":{q(r["date_added"])},'
                         f'"version":{q(r["modified"] or r["date_added"])},'
                         f'"media_type":{q("application/stix+json;version=" + r["spec_version"])}}}' for r in rows)
        return HubBackend._envelope_text(items, more, token)

    def get_object(self, api_root, collection_id, object_id, filter_args, allowed_filters, limit):
        rows, more, token = self._page(collection_id, Query("object", object_id), limit, with_json=True)
        if not rows and not request.args:
            raise ProcessingError(f"Object '{object_id}' not found", 404)
        return self._spliced(rows, more, token), self._headers(rows)

    def get_object_versions(self, api_root, collection_id, object_id, filter_args, allowed_filters, limit):
        rows, more, token = self._page(collection_id, Query("versions", object_id), limit, with_json=False)
        if not rows and not request.args:
            raise ProcessingError(f"Object '{object_id}' not found", 404)
        return self._envelope("versions", [r["modified"] for r in rows], more, token), self._headers(rows)

    def delete_object(self, api_root, collection_id, object_id, filter_args, allowed_filters):
        Query("delete", object_id).parse()
        raise ProcessingError("Objects are withdrawn by revocation at the CEPTOAR secretariat, not deleted", 403)

    # --- writes -----------------------------------------------------------------------------
    def add_objects(self, api_root, collection_id, objs, request_time):
        """Submitted objects enter triage as new advisories of the member's own source; nothing
        goes straight into a published collection, and an id another origin holds is kept apart
        (stored under the member's origin, never served as that origin's object)."""
        _check_envelope(objs)
        member = self.member
        c = self.store.collections.get(collection_id)
        valid, failures = _split_valid(objs["objects"])
        valid = self._within_caps(valid, failures)
        kept_apart = self._ingest_submission(valid, c["id"])
        successes = []
        for o in valid:
            item = {"id": o["id"], "version": str(o.get("modified") or o.get("created") or "")}
            if o["id"] in kept_apart:
                item["message"] = ("kept apart: this id is held by another origin; the object is stored as "
                                   "this member's own and never served as that origin's object")
            successes.append(item)
        status = {"id": str(uuid.uuid4()), "status": "complete",
                  "request_timestamp": datetime_to_string(request_time),
                  "total_count": len(successes) + len(failures), "success_count": len(successes),
                  "failure_count": len(failures), "pending_count": 0}
        if successes:
            status["successes"] = successes
        if failures:
            status["failures"] = failures
        self.store.members.save_status(status, member["id"], c["id"])
        return status

    def _within_caps(self, valid: list[dict], failures: list[dict]) -> list[dict]:
        """Caps: per request and per member per day; the excess is refused, object by object."""
        since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        submitted = self.store.members.objects_submitted(self.member["id"], since)
        room = max(0, min(self.max_objects, self.max_objects_per_day - submitted))
        for o in valid[room:]:
            failures.append({"id": o["id"], "version": str(o.get("modified") or o.get("created") or ""),
                             "message": f"refused: over the cap of {self.max_objects} objects per request or "
                                        f"{self.max_objects_per_day} per member per day"})
        return valid[:room]

    def _ingest_submission(self, valid: list[dict], collection_id: str) -> set[str]:
        """The objects into the member's own source, with their audit entry in the same
        transaction; the ids kept apart."""
        store, member = self.store, self.member
        source_id = f"member-{member['id']}"
        with store.transaction():
            if store.sources.get(source_id) is None:
                store.sources.upsert({"id": source_id, "kind": "stix", "url": f"taxii://{member['id']}",
                                      "name": f"TAXII submissions of {member['name']}", "tlp": SUBMISSION_TLP,
                                      "enabled": False, "defined_by": MEMBER_SUBMISSIONS}, keep_enabled=False)
            if not valid:
                return set()
            source = source_of(store.sources.get(source_id))
            counts = ingest_objects(store, source, valid).counts  # keyed by the objects: a resend is a no-op
            kept_apart = set(counts.kept_apart)
            store.audit.add(member["id"], "taxii-add", collection_id,
                            {"objects": len(valid), "new": counts.new, "updated": counts.updated,
                             "kept_apart": sorted(kept_apart)}, member=member["id"])
        return kept_apart

    def get_status(self, api_root, status_id):
        if api_root != self.api_root:
            return None
        return self.store.members.get_status(status_id, self.member["id"])
