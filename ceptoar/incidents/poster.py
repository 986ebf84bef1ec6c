"""The in-hospital notice (院内掲示): whom to call after a cyberattack (the system vendor, MHLW, and,
at night or when nobody answers, the secretariat's after-hours line, the association's desk and the
police's cyber-crime desk, each with its hours), one page to print and post beside the systems."""

from __future__ import annotations

from pathlib import Path

from ceptoar.core import settings
from ceptoar.core.files import write_private
from ceptoar.core.templates import environment
from ceptoar.incidents import contacts

TEMPLATES = Path(__file__).parent / "templates"


def poster_html(facility: str, vendor: str | None, vendor_phone: str | None, vendor_contact: str | None,
                member: str | None = None, prefecture: str | None = None) -> str:
    mhlw = settings.current().relay()["mhlw"]
    night = [c for c in contacts.emergency(member, prefecture)
             if c.role != "厚生労働省" and c.configured and c.phone and not c.placeholder]
    return environment(TEMPLATES).get_template("poster.html.j2").render(
        facility=facility, vendor=vendor, vendor_phone=vendor_phone, vendor_contact=vendor_contact, mhlw=mhlw,
        night=night)


def write_poster(path: Path, **kw) -> None:
    write_private(path, poster_html(**kw))
