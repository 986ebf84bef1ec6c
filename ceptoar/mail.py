"""E-mail shared by digests, flash alerts and incident notices: addresses checked strictly, names
made safe, headers built with the `email` package's header API (never by string concatenation, so a
line break in a name can never become a header of its own)."""

from __future__ import annotations

import hashlib
import re
from email.headerregistry import Address
from email.policy import SMTP

from ceptoar.errors import CeptoarError

# RFC 5322 dot-atom addr-spec, without '/' (a path character): what clinics' addresses look like.
_ATOM = r"[A-Za-z0-9!#$%&'*+=?^_`{|}~-]+"
EMAIL_RE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+[A-Za-z]{{2,63}}")
_FILE_SAFE = re.compile(r"[A-Za-z0-9@._+-]+")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


class AddressError(CeptoarError, ValueError):
    pass


def check_address(value: str) -> str:
    """The address, lower-cased, or AddressError saying why not."""
    addr = (value or "").strip().lower()
    local, _, _domain = addr.rpartition("@")
    if len(addr) > 254 or len(local) > 64 or not EMAIL_RE.fullmatch(addr):
        raise AddressError(f"invalid e-mail address {value!r}")
    return addr


def clean_name(name: str | None, limit: int = 100) -> str:
    """A display name without control characters or line breaks, whitespace collapsed."""
    return " ".join(_CONTROL.sub(" ", name or "").split())[:limit]


def header(name: str, value) -> bytes:
    """One header line (folded, encoded) from a str or an Address."""
    return SMTP.header_factory(name, value).fold(policy=SMTP).encode("ascii")


def mailbox(display_name: str | None, address: str) -> Address:
    return Address(display_name=clean_name(display_name), addr_spec=check_address(address))


def eml_name(address: str) -> str:
    """A file name for one recipient's message: the address when it is plain, else its hash."""
    if _FILE_SAFE.fullmatch(address) and ".." not in address and not address.startswith("."):
        return f"{address}.eml"
    return f"{hashlib.sha256(address.encode()).hexdigest()[:24]}.eml"
