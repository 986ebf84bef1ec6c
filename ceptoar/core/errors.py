"""One base for every error a user can cause or meet: the CLI prints it as one line and exits 1.

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class CeptoarError(Exception):
    """A problem to report in one line (bad input, a refused action, an unreachable peer)."""


class StoreError(CeptoarError):
    """The database cannot do what was asked (not initialized, newer schema, busy, full disk…)."""


class NotFound(StoreError):
    """No such row (advisory, incident, source…)."""


class Conflict(StoreError):
    """The change contradicts what is stored (a duplicate key, a broken reference)."""


class Busy(StoreError):
    """Another process holds the database's write lock for longer than this one would wait."""
