"""The command line, one module per noun: parse arguments, call one library function, print.

No SQL and no business logic here; shared options live in `options`, the group and the error
handling in `base`.
"""

from ceptoar.cli import (  # noqa: F401  (each module adds its commands to `main`)
    advisories,
    audit,
    collections,
    digest,
    export,
    hub,
    incidents,
    members,
    registers,
    serve,
    sources,
    subscribers,
)
from ceptoar.cli.base import main

__all__ = ["main"]
