"""Who is asking: HTTP Basic (member id + secret) or Bearer (the secret), checked against the
salted hashes in the store; repeated failures from one address are slowed down."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime, timedelta

from flask import g, request

from ceptoar import members
from ceptoar.store import Store

_PROCESS_KEY = secrets.token_bytes(32)
_verified: dict[str, float] = {}  # HMAC(member, secret, stored hash) → expiry; no plaintext kept
CACHE_SECONDS = 300
FAILURE_WINDOW = timedelta(minutes=5)
FREE_FAILURES = 5
MAX_DELAY = 5.0


def _cache_key(mid: str, secret: str, stored: str) -> str:
    return hmac.new(_PROCESS_KEY, f"{mid}\0{secret}\0{stored}".encode(), hashlib.sha256).hexdigest()


def authenticate(store: Store, username: str | None, password: str | None) -> dict | None:
    """The member behind the request's credentials, or None."""
    authz = request.authorization
    if authz is not None and authz.type == "bearer" and authz.token:
        secret = authz.token
        key = members.key_id_of(secret)
        member = store.members.by_key(key) if key else None
        g.auth_username = member["id"] if member else "(bearer)"
    else:
        secret = password or ""
        member = store.members.get(username) if username else None
        g.auth_username = username or None
    if member is None or not member["enabled"] or not member["secret_hash"] or not secret:
        return None
    ck = _cache_key(member["id"], secret, member["secret_hash"])
    now = time.monotonic()
    if _verified.get(ck, 0) > now:
        return member
    if not members.verify_secret(secret, member["secret_hash"]):
        return None
    if len(_verified) > 10000:
        _verified.clear()
    _verified[ck] = now + CACHE_SECONDS
    return member


def failure_delay(store: Store, address: str) -> float:
    """Seconds to wait before answering a failed attempt: nothing for the first few within five
    minutes, then doubling up to MAX_DELAY. Counted from the audit log, so shared by workers."""
    since = (datetime.now(UTC) - FAILURE_WINDOW).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    failures = store.members.recent_failures(address, since)
    if failures < FREE_FAILURES:
        return 0.0
    return min(MAX_DELAY, 0.25 * 2 ** (failures - FREE_FAILURES))
