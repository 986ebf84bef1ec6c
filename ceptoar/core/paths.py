"""Where the project's data folders are: the current directory, the checkout, then the copies
installed with the hub (a regular `pip install` ships `feeds/` and `taxii_server/` as the data-only
packages `ceptoar_feeds` and `ceptoar_taxii_server`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
INSTALLED = {"feeds": "ceptoar_feeds", "taxii_server": "ceptoar_taxii_server"}


def project_file(relative: str) -> Path:
    for base in (Path.cwd(), CHECKOUT):
        if (base / relative).exists():
            return base / relative
    top, _, rest = relative.partition("/")
    if top in INSTALLED:
        try:
            found = resources.files(INSTALLED[top])
            for part in rest.split("/"):
                found = found.joinpath(part)
            return Path(str(found))
        except ModuleNotFoundError:
            pass
    return CHECKOUT / relative
