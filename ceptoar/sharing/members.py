"""Members (association secretariats) and their credentials.

A secret is `ctx_<key id>_<random>`: the key id (not secret) finds the member for Bearer
authentication; only a salted scrypt hash of the whole secret is stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from urllib.parse import unquote

from ceptoar.core.errors import CeptoarError
from ceptoar.core.model import SLUG_RE, SYSTEM, tlp_name
from ceptoar.store import Store

SECRET_RE = re.compile(r"^ctx_([0-9a-f]{12})_[A-Za-z0-9_-]{32,}$")
# scrypt cost: ~50 ms per check here; verified credentials are cached per worker (auth.py).
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class MemberError(CeptoarError, ValueError):
    pass


def check_id(mid: str) -> str:
    if not SLUG_RE.match(mid or ""):
        raise MemberError(f"member id {mid!r} must be lowercase letters, digits, '.', '_' or '-'")
    return mid


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **SCRYPT)
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str | None) -> bool:
    try:
        scheme, n, r, p, salt, digest = (stored or "").split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def key_id_of(secret: str) -> str | None:
    m = SECRET_RE.match(secret or "")
    return m.group(1) if m else None


def new_secret(store: Store, mid: str, actor: str = SYSTEM) -> str:
    """A fresh secret for the member (the old one stops working); returned once, never stored."""
    if store.members.get(mid) is None:
        raise MemberError(f"no member {mid!r}")
    key_id = secrets.token_hex(6)
    secret = f"ctx_{key_id}_{secrets.token_urlsafe(32)}"
    with store.transaction():
        store.members.set_secret(mid, key_id, hash_secret(secret))
        store.audit.add(actor, "member-secret", mid)  # never the secret itself
    return secret


def add(store: Store, mid: str, name: str, clearance: str, actor: str = SYSTEM,
        collection_titles: str | None = None) -> bool:
    """Add a member or change its name and clearance (and how its clients see collection titles);
    True when it is new."""
    clearance = tlp_name(clearance)
    with store.transaction():
        new = store.members.upsert(check_id(mid), name, clearance)
        if collection_titles:
            set_collection_titles(store, mid, collection_titles)
        store.audit.add(actor, "member-add" if new else "member-update", mid,
                        {"clearance": clearance} | ({"collection_titles": collection_titles} if collection_titles
                                                    else {}))
    return new


def set_enabled(store: Store, mid: str, enabled: bool, actor: str = SYSTEM) -> None:
    with store.transaction():
        if not store.members.set_enabled(mid, enabled):
            raise MemberError(f"no member {mid!r} (see `ceptoar members list`)")
        store.audit.add(actor, f"member-{'enable' if enabled else 'disable'}", mid)


def ungrant(store: Store, mid: str, cid: str, actor: str = SYSTEM) -> None:
    with store.transaction():
        if not store.members.remove_grant(mid, cid):
            raise MemberError(f"{mid} has no grant on {cid}")
        store.audit.add(actor, "member-ungrant", mid, {"collection": cid})


def grant(store: Store, mid: str, cid: str, can_read: bool, can_write: bool, actor: str = SYSTEM) -> None:
    if store.members.get(mid) is None:
        raise MemberError(f"no member {mid!r}")
    coll = store.collections.get(cid)
    if coll is None:
        raise MemberError(f"no collection {cid!r}")
    if not (can_read or can_write):
        raise MemberError("grant --read, --write or both")
    with store.transaction():
        store.members.set_grant(mid, coll["id"], can_read, can_write)
        store.audit.add(actor, "member-grant", mid, {"collection": coll["id"], "read": can_read, "write": can_write})


FINGERPRINT_RE = re.compile(r"^[0-9a-f]{64}$")
PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


def certificate_fingerprint(pem: str) -> str:
    """The SHA-256 fingerprint (lowercase hex) of the first certificate in a PEM text, as the hub
    computes it from what the TLS proxy forwards (nginx's $ssl_client_escaped_cert, URL-encoded)."""
    m = PEM_RE.search(unquote(pem) if "%" in pem else pem)
    if not m:
        raise MemberError("no PEM certificate (-----BEGIN CERTIFICATE-----) found")
    try:
        der = base64.b64decode("".join(m.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        raise MemberError("the PEM certificate is not valid base64") from None
    return hashlib.sha256(der).hexdigest()


def fingerprint_of(text: str) -> str:
    """A SHA-256 fingerprint as people write it (AB:CD:…, any case) in the hub's form."""
    fp = text.replace(":", "").replace(" ", "").lower()
    if not FINGERPRINT_RE.match(fp):
        raise MemberError("a SHA-256 fingerprint is 64 hex digits (colons allowed), e.g. from "
                          "`openssl x509 -noout -fingerprint -sha256 -in member.pem`")
    return fp


def set_certificate(store: Store, mid: str, *, fingerprint: str | None = None, subject: str | None = None,
                    required: bool = False, actor: str = SYSTEM) -> None:
    member = store.members.get(mid)
    if member is None:
        raise MemberError(f"no member {mid!r}")
    if required and not (fingerprint or subject):
        raise MemberError("a member can only be required to use a certificate it has (--fingerprint or --subject)")
    for other in (store.members.by_certificate(fingerprint, None), store.members.by_certificate(None, subject)):
        if other and other["id"] != mid:
            raise MemberError(f"that certificate already belongs to member {other['id']!r}")
    with store.transaction():
        store.members.set_certificate(mid, fingerprint, subject, required)
        store.audit.add(actor, "member-cert", mid, {"fingerprint": fingerprint, "subject": subject,
                                                    "required": required})


def set_collection_titles(store: Store, mid: str, titles: str) -> None:
    if store.members.get(mid) is None:
        raise MemberError(f"no member {mid!r}")
    if titles not in ("title", "name"):
        raise MemberError("collection titles are 'title' or 'name'")
    store.members.set_collection_titles(mid, titles)
