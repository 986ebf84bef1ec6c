"""The in-hospital notice (院内掲示): whom to call after a cyberattack (the system vendor, MHLW),
one page to print and post beside the systems."""

from __future__ import annotations

from pathlib import Path

from ceptoar.core import settings
from ceptoar.core.files import write_private
from ceptoar.core.templates import environment

TEMPLATES = Path(__file__).parent / "templates"


def poster_html(facility: str, vendor: str | None, vendor_phone: str | None, vendor_contact: str | None) -> str:
    mhlw = settings.current().relay()["mhlw"]
    return environment(TEMPLATES).get_template("poster.html.j2").render(
        facility=facility, vendor=vendor, vendor_phone=vendor_phone, vendor_contact=vendor_contact, mhlw=mhlw)


def write_poster(path: Path, **kw) -> None:
    write_private(path, poster_html(**kw))
