"""Who is asking: a client certificate verified by the TLS proxy in front, HTTP Basic (member id +
secret), or Bearer/Token (the secret), checked against the salted hashes in the store.

Certificate headers are believed only with the proxy's shared key (`CEPTOAR_TAXII_PROXY_KEY`, which
nginx sends in X-Ceptoar-Proxy-Key and clients never see): without it they are ignored, whoever
sends them. A member may be required to present its certificate; its secret alone is then refused.

Repeated failures are refused at once (429 with Retry-After), never slept on: a worker is never
held by an attacker. Failures are counted per client address and per member id, from the audit log,
so every worker sees them. An unknown member id costs the same as a wrong secret (verified against
a dummy hash), so ids cannot be enumerated by timing; a username that is not a member id is never
stored (it may be a secret typed in the wrong field).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from datetime import UTC, datetime, timedelta

from flask import g, request

from ceptoar.core.errors import CeptoarError
from ceptoar.sharing import members
from ceptoar.store import Store

_PROCESS_KEY = secrets.token_bytes(32)
_verified: dict[str, float] = {}  # HMAC(member, secret, stored hash) → expiry; no plaintext kept
_DUMMY_HASH = members.hash_secret(secrets.token_urlsafe(32))
CACHE_SECONDS = 300
FAILURE_WINDOW = timedelta(minutes=15)
FREE_FAILURES = {"member": 5, "address": 20}  # an address may be a hospital's NAT: more room
MAX_LOCK_SECONDS = 300
UNKNOWN = "(not a member)"  # what the audit log records for a username that is no member id


class TooManyFailures(CeptoarError):
    def __init__(self, retry_after: int):
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


def _cache_key(mid: str, secret: str, stored: str) -> str:
    return hmac.new(_PROCESS_KEY, f"{mid}\0{secret}\0{stored}".encode(), hashlib.sha256).hexdigest()


def window_start() -> str:
    """Since when failed logins count."""
    return (datetime.now(UTC) - FAILURE_WINDOW).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lock_remaining(failures: dict[str, tuple[int, str | None]]) -> int:
    """Seconds until the address (or the member id) of these recent failures may try again; 0 when
    it may now. Past its free failures within the window, each further failure doubles the wait
    (up to MAX_LOCK_SECONDS)."""
    worst = 0.0
    for kind, (count, last) in failures.items():
        if count < FREE_FAILURES[kind] or not last:
            continue
        wait = min(MAX_LOCK_SECONDS, 2 ** (count - FREE_FAILURES[kind]))
        last_at = datetime.fromisoformat(last.replace("Z", "+00:00"))
        worst = max(worst, wait - (datetime.now(UTC) - last_at).total_seconds())
    return math.ceil(worst) if worst > 0 else 0


CERT_HEADERS = ("X-SSL-Client-Verify", "X-SSL-Client-Cert", "X-SSL-Client-S-DN")


def certificate_member(store: Store, proxy_key: str | None) -> dict | None:
    """The member of a client certificate the trusted proxy verified, or None."""
    h = request.headers
    if not proxy_key or not hmac.compare_digest(h.get("X-Ceptoar-Proxy-Key", "").encode(), proxy_key.encode()):
        return None
    if h.get("X-SSL-Client-Verify") != "SUCCESS":
        return None
    try:
        fingerprint = members.certificate_fingerprint(h["X-SSL-Client-Cert"]) if h.get("X-SSL-Client-Cert") else None
    except members.MemberError:
        fingerprint = None
    member = store.members.by_certificate(fingerprint, h.get("X-SSL-Client-S-DN") or None)
    g.certificate = fingerprint or h.get("X-SSL-Client-S-DN")
    return member if member and member["enabled"] else None


def authenticate(store: Store, username: str | None, password: str | None, address: str,
                 proxy_key: str | None = None) -> dict | None:
    """The member behind the request's credentials, or None; TooManyFailures while locked out."""
    by_cert = certificate_member(store, proxy_key)
    if by_cert is not None:
        g.auth_username = by_cert["id"]
        g.auth_method = "certificate"
        return by_cert
    member = _by_secret(store, username, password, address)
    if member is not None and member.get("cert_required"):
        g.auth_username = member["id"]
        return None  # this member's secret alone is not enough
    return member


def _by_secret(store: Store, username: str | None, password: str | None, address: str) -> dict | None:
    authz = request.authorization
    if authz is not None and authz.type in ("bearer", "token") and authz.token:
        secret = authz.token
        key = members.key_id_of(secret)
        member = store.members.by_key(key) if key else None
        failures = store.members.recent_failures(since=window_start(), address=address,
                                                 member=member["id"] if member else None)
    else:
        secret = password or ""
        if username:  # the member, its grants and the failures, in one statement
            member, failures = store.members.signing_in(username, address=address, since=window_start())
        else:
            member, failures = None, store.members.recent_failures(since=window_start(), address=address)
    g.auth_username = member["id"] if member else (UNKNOWN if (username or authz is not None) else None)
    wait = lock_remaining(failures)
    if wait:
        raise TooManyFailures(wait)
    usable = member is not None and member["enabled"] and member["secret_hash"] and secret
    stored = member["secret_hash"] if usable else _DUMMY_HASH
    ck = _cache_key(member["id"] if usable else "", secret, stored)
    now = time.monotonic()
    if usable and _verified.get(ck, 0) > now:
        return member
    good = members.verify_secret(secret, stored)  # the same cost whether or not the member exists
    if not (usable and good):
        return None
    if len(_verified) > 10000:
        _verified.clear()
    _verified[ck] = now + CACHE_SECONDS
    return member
