"""Work that must run once at a time: a lease held in the database for its duration.

A second run finds the lease and waits (`wait` seconds) or stops with a clear message. The holder
renews the lease as it works; one killed mid-run leaves a lease that expires (CEPTOAR_LEASE_SECONDS,
default 120), or is taken over at once when its holder was a process on this host that no longer
exists.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from contextlib import contextmanager

from ceptoar.errors import CeptoarError
from ceptoar.store import Store

HOST = socket.gethostname()


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
