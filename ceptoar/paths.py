"""Where the project's data folders are: the current directory first, then the checkout."""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def project_file(relative: str) -> Path:
    here = Path.cwd() / relative
    return here if here.exists() else CHECKOUT / relative
