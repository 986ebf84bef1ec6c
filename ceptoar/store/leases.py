"""Leases: one holder at a time for work that must not run twice (a digest run, the flash queue,
a source's fetch, the worker). In the database, so they hold across processes and machines.

`held` is how work takes one: a second run finds the lease and waits (`wait` seconds) or stops with
a clear message. The holder renews the lease as it works; one killed mid-run leaves a lease that
expires (CEPTOAR_LEASE_SECONDS, default 120), or is taken over at once when its holder was a process
on this host that no longer exists.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ceptoar.core.errors import CeptoarError
from ceptoar.store.base import Repository, utcnow

if TYPE_CHECKING:
    from ceptoar.store import Store

HOST = socket.gethostname()


def _at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Leases(Repository):
    def get(self, name: str) -> dict | None:
        return self.store.row("SELECT * FROM leases WHERE name = ?", (name,))

    def acquire(self, name: str, holder: str, what: str, seconds: float, take_over: bool = False) -> dict | None:
        """Hold `name` for `seconds`: None when done, else the other holder's live lease. `take_over`
        replaces a live lease (its holder is known to be gone)."""
        s = self.store
        with s.transaction():
            current = self.get(name)
            if current and current["holder"] != holder and current["expires"] > utcnow() and not take_over:
                return current
            s.execute("INSERT INTO leases (name, holder, what, acquired, expires) VALUES (?, ?, ?, ?, ?) "
                      "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, what = excluded.what, "
                      "acquired = excluded.acquired, expires = excluded.expires",
                      (name, holder, what, utcnow(), _at(seconds)))
        return None

    def renew(self, name: str, holder: str, seconds: float) -> bool:
        """Extend the lease; False when it is no longer this holder's."""
        with self.store.transaction():
            return self.store.execute("UPDATE leases SET expires = ? WHERE name = ? AND holder = ?",
                                      (_at(seconds), name, holder)).rowcount == 1

    def release(self, name: str, holder: str) -> None:
        with self.store.transaction():
            self.store.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))



class LeaseHeld(CeptoarError):
    pass


def seconds() -> float:
    return float(os.environ.get("CEPTOAR_LEASE_SECONDS", "120"))


def _gone(holder: str) -> bool:
    """Whether a holder was a process on this host that has ended."""
    host, _, rest = holder.rpartition("|")[0].partition(":")
    pid = rest.split(":")[0]
    if host != HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Lease:
    def __init__(self, store: Store, name: str, what: str, ttl: float):
        self.store, self.name, self.what, self.ttl = store, name, what, ttl
        self.holder = f"{HOST}:{os.getpid()}|{secrets.token_hex(4)}"
        self.renewed = time.monotonic()

    def keep(self) -> None:
        """Renew when a third of the lease has passed (cheap to call on every step of the work)."""
        if time.monotonic() - self.renewed > self.ttl / 3:
            if not self.store.leases.renew(self.name, self.holder, self.ttl):
                raise LeaseHeld(f"lost the lease on {self.name}: another process took it over; stopping")
            self.renewed = time.monotonic()


@contextmanager
def held(store: Store, name: str, what: str, wait: float = 0.0):
    """Hold the lease `name` while the block runs, or LeaseHeld saying who holds it."""
    lease = Lease(store, name, what, seconds())
    deadline = time.monotonic() + wait
    while True:
        other = store.leases.acquire(name, lease.holder, what, lease.ttl)
        if other is not None and _gone(other["holder"]):
            other = store.leases.acquire(name, lease.holder, what, lease.ttl, take_over=True)
        if other is None:
            break
        if time.monotonic() >= deadline:
            raise LeaseHeld(f"{other['what'] or name} is already running ({other['holder'].split('|')[0]}, since "
                            f"{other['acquired'][:19]} UTC; its lease runs to {other['expires'][:19]} UTC): "
                            "try again when it has finished, or give --wait SECONDS")
        time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
    lease.renewed = time.monotonic()
    try:
        yield lease
    finally:
        store.leases.release(name, lease.holder)
