"""The link in a digest to its whole list: a page on the hub's web app listing every item of that
digest in full, signed for one subscriber (HMAC-SHA256 with the hub's key, as the answer links are),
bound to the digest's window and valid `response_link_days`. The page shows only what that
subscriber may see when it is opened."""

from __future__ import annotations

import hmac
import math
import time
from datetime import UTC, datetime

from ceptoar.clinics.responses import expiry, link_key, sign
from ceptoar.store import Store


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def linker(store: Store, base_url: str, *, days: int | None = None, now: float | None = None):
    """A function (subscriber token, since, until) → that subscriber's link to the digest of the
    window (since, until], valid `response_link_days` (key and expiry read once per run)."""
    expires, key, base = expiry(days, now), link_key(store), base_url.rstrip("/")

    def link(token: str, since: str, until: str) -> str:
        lo, hi = math.floor(epoch(since)), math.ceil(epoch(until))
        return f"{base}/digest/{token}/{lo}.{hi}.{expires}/{sign(key, 'digest', token, lo, hi, expires)}"

    return link


def check(store: Store, token: str, window: str, sig: str, now: float | None = None
          ) -> tuple[str, str | None, str | None]:
    """('ok' | 'expired' | 'invalid', since, until) of a link's window (ISO timestamps)."""
    parts = window.split(".")
    if len(parts) != 3 or not all(p.isdigit() and len(p) <= 12 for p in parts) or len(sig) > 64 or len(token) > 200:
        return "invalid", None, None
    lo, hi, expires = (int(p) for p in parts)
    if not hmac.compare_digest(sign(link_key(store), "digest", token, lo, hi, expires), sig):
        return "invalid", None, None
    if expires < (now or time.time()):
        return "expired", None, None
    stamp = "%Y-%m-%dT%H:%M:%S.%fZ"
    return "ok", datetime.fromtimestamp(lo, UTC).strftime(stamp), datetime.fromtimestamp(hi, UTC).strftime(stamp)
