"""The time one source's run may take (its `run_seconds`), normalizing and storing included.

The network side has its own deadline (`ceptoar.fetch.http.deadline`, a signal); normalizing and
storing run inside a database transaction, where no signal may cut in, so they check the budget
where they loop (`check`, about every few hundred items or objects) and stop there with
`OutOfTime`, saying how far they got. The run's transaction is then rolled back: nothing of the run
is kept, and the next run starts over.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ceptoar.core.errors import CeptoarError

_current: contextvars.ContextVar[tuple[float, float, str] | None] = contextvars.ContextVar("budget", default=None)


class OutOfTime(CeptoarError):
    """A source's run went past its run_seconds while normalizing or storing."""


@contextmanager
def running(seconds: float, what: str) -> Iterator[None]:
    """Within this block, `check` fails once `seconds` have passed (an enclosing, earlier end stands)."""
    end = time.monotonic() + seconds
    outer = _current.get()
    token = _current.set(outer if outer and outer[0] <= end else (end, seconds, what))
    try:
        yield
    finally:
        _current.reset(token)


def check(where: Callable[[], str]) -> None:
    """OutOfTime when the run's time is up; `where()` says how far it got ('at object 41,000 of …')."""
    now = _current.get()
    if now is not None and time.monotonic() > now[0]:
        raise OutOfTime(f"{now[2]} took longer than its run_seconds ({now[1]:g} s): stopped {where()}; "
                        "nothing of this run is kept, the next starts over (a larger run_seconds lets it finish)")


def left() -> float | None:
    """Seconds left in the run, None outside one."""
    now = _current.get()
    return None if now is None else now[0] - time.monotonic()
