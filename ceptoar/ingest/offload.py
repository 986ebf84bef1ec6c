"""Normalizing a large document in other processes while this one stores what they have read.

Normalizing is pure (bytes in, entries out) and storing is mostly SQLite, so on a machine with
several cores the two halves of a large ingest can run at once. Child Python processes read the
document with the same normalizer; the items are cut into groups of `GROUP` consecutive items and
child k builds (and prepares: `ceptoar.ingest.entries.prepare`) the entries of groups k, k + n, k + 2n, …
of n children, skipping the others unbuilt. Each child sends its groups back pickled, one
length-prefixed message per group on its stdout, and the parent reads group 0 from child 0, group 1
from child 1 and so on: the parent stores exactly what the in-process stream would have yielded, in
the same order, with the same warnings, in its one transaction (all or nothing). A stream that
cannot skip items (a document read whole) is read by child 0 alone.

A full pipe stops a child, so each runs ahead by about one group: memory stays bounded on both
sides. The children ignore SIGINT and SIGTERM (a terminal's Ctrl-C and systemd's stop reach the
whole group): the parent decides. When the parent stops reading — it failed, was interrupted or is
done — it kills them; a child whose parent is gone dies on its next write.

`python -m ceptoar.ingest.offload` is the child; only `OffloadedStream` starts it.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import struct
import subprocess
import sys
import traceback

from ceptoar.core import settings
from ceptoar.core.errors import CeptoarError
from ceptoar.ingest.entries import prepare
from ceptoar.normalize import FeedError
from ceptoar.normalize.kinds import STREAMS

_LEN = struct.Struct("<Q")
GROUP = 250  # consecutive items a child builds before the next child's turn


class NormalizingStopped(CeptoarError):
    """A normalizing process ended before its document was read (killed, out of memory)."""


def children() -> int:
    """How many normalizing processes a large ingest uses (the `ingest_processes` setting; none on
    a single core, where they would only take turns with the storing process)."""

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if cores < 2 else max(0, settings.current().ingest_processes)


class OffloadedStream:
    """The entries of `STREAMS[kind](body, source, charset)`, normalized by `n` child processes.
    Iterable once; `warnings` and `skipped` are the stream's, complete once iteration has ended.
    Use as a context manager, or call `close()`."""

    def __init__(self, kind: str, body: bytes, source, charset: str | None, n: int = 2):
        self.warnings: list[str] = []
        self.skipped = 0
        self._procs = []
        try:
            for k in range(n):
                proc = subprocess.Popen([sys.executable, "-m", "ceptoar.ingest.offload"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE)
                self._procs.append(proc)
                try:
                    pickle.dump({"kind": kind, "body": body, "source": source, "charset": charset, "index": k,
                                 "of": n}, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    proc.stdin.close()
                except BrokenPipeError:
                    pass  # the child is gone already: reading from it says why
        except BaseException:
            self.close()
            raise

    def __iter__(self):
        try:
            split = self._read(0) == ("split", True)
            readers = self._procs if split else self._procs[:1]
            for k in range(1, len(readers)):
                self._read(k)  # its ("split", True)
            g = 0
            while True:
                message = self._read(g % len(readers))
                if message[0] == "end":
                    self.warnings.extend(message[1])
                    return
                _, entries, warnings, skipped = message
                self.warnings.extend(warnings)
                self.skipped += skipped
                yield from entries
                g += 1
        finally:
            self.close()

    def _read(self, k: int):
        proc = self._procs[k]
        head = proc.stdout.read(_LEN.size)
        size = _LEN.unpack(head)[0] if len(head) == _LEN.size else None
        data = proc.stdout.read(size) if size else b""
        if size is None or len(data) < size:
            raise NormalizingStopped(f"the normalizing process ended without finishing (exit status {proc.wait()})")
        message = pickle.loads(data)
        if message[0] == "feed-error":
            raise FeedError(message[1])
        if message[0] == "error":
            raise RuntimeError(f"in the normalizing process: {message[1]}")
        return message

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _send(out, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LEN.pack(len(data)))
    out.write(data)
    out.flush()


def _child() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    gc.disable()  # as in the parent: bulk normalizing makes millions of acyclic objects
    os.nice(5)  # the storing parent is the narrow end of the pipeline (and TAXII readers come first)
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # the pipe carries messages only: a stray print goes to the log
    job = pickle.load(sys.stdin.buffer)

    index, of, source = job["index"], job["of"], job["source"]
    try:
        entries = STREAMS[job["kind"]](job["body"], source, job["charset"])
        del job["body"]
        split = entries.selectable and of > 1
        _send(out, ("split", split))
        if not split and index:
            return 0  # child 0 reads the whole document
        group = {"at": 0, "entries": [], "warnings": 0, "skipped": 0}

        def flush() -> None:
            """Send this child's current group: its entries, and the warnings and skips since the last."""
            _send(out, ("group", group["entries"], entries.warnings[group["warnings"]:],
                        entries.skipped - group["skipped"]))
            group.update(entries=[], warnings=len(entries.warnings), skipped=entries.skipped)

        def select(n: int) -> bool:
            g = (n - 1) // GROUP
            while group["at"] < g:  # the items of the groups before g are all read
                if group["at"] % of == index:
                    flush()
                group["at"] += 1
            return g % of == index

        if split:
            entries.select = select
        for e in entries:
            group["entries"].append(prepare(e, source))
            if not split and len(group["entries"]) >= GROUP:
                flush()
        if not split or group["at"] % of == index:
            flush()  # the last group
        # The parent stops at the first "end" it meets, from the child after the last group's: what
        # the document said after its items (the same in every child) comes with it.
        _send(out, ("end", entries.warnings[group["warnings"]:]))
    except FeedError as e:
        _send(out, ("feed-error", str(e)))
    except BrokenPipeError:
        return 1  # the parent stopped reading: nothing left to do
    except Exception as e:  # noqa: BLE001 — reported to the parent, which fails the source in one line
        traceback.print_exc()
        _send(out, ("error", f"{type(e).__name__}: {e}"))
    return 0


if __name__ == "__main__":
    sys.exit(_child())
