"""E-mail, for digests, flash alerts and incident notices alike: one message builder (`message`,
an `EmailMessage`), addresses checked strictly, names made safe, headers built with the `email`
package's header API (never by string concatenation, so a line break in a name can never become a
header of its own), and the SMTP client (pipelined when the server allows) with its settings."""

from __future__ import annotations

import base64
import hashlib
import re
import smtplib
import ssl
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

from ceptoar.core import settings
from ceptoar.core.errors import CeptoarError
from ceptoar.core.model import JST
from ceptoar.core.settings import SmtpConfig

_URL = re.compile(r"[\x21-\x7e]{1,900}")  # printable ASCII, no spaces
LIST_UNSUBSCRIBE_POST = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"  # RFC 8058

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


def to_header(display_name: str | None, address: str) -> bytes:
    """One recipient's To header, built for the digest's fan-out (the header API takes milliseconds
    a name): the address checked, the name cleaned, then quoted when it is plain ASCII, else RFC 2047
    encoded words of at most 76 characters a line (also for ASCII that looks like an encoded word).
    A parser reads back exactly the cleaned name and the address."""
    addr = check_address(address)
    name = clean_name(display_name)
    if not name:
        return f"To: {addr}\r\n".encode("ascii")
    if name.isascii() and "=?" not in name:
        phrase = formataddr((name, addr)).rsplit(" <", 1)[0]
    else:
        phrase = "\r\n ".join(encoded_words(name))
    return f"To: {phrase}\r\n <{addr}>\r\n".encode("ascii")


def encoded_words(text: str, chunk: int = 42) -> list[str]:
    """RFC 2047 base64 encoded words of UTF-8, each of whole characters and at most `chunk` bytes
    (68 characters a word), for one a line."""
    words, buf = [], b""
    for ch in text:
        b = ch.encode("utf-8", "surrogatepass")
        if buf and len(buf) + len(b) > chunk:
            words.append(buf)
            buf = b""
        buf += b
    words.append(buf)
    return [f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words]


def url_list_header(name: str, urls: list[str]) -> bytes:
    """An RFC 2369 list header (List-Unsubscribe): each URL in angle brackets, folded between them,
    never as encoded words (a client could not read the URL back; the header API encodes a line it
    cannot fold)."""
    for u in urls:
        if not _URL.fullmatch(u) or any(c in u for c in "<>,"):
            raise AddressError(f"{name}: {u[:80]!r} is not a URL a mail header can carry (printable ASCII, "
                               "no spaces, '<', '>' or ','; an internationalized host in punycode)")
    return (f"{name}: " + ",\r\n ".join(f"<{u}>" for u in urls) + "\r\n").encode("ascii")


def stuff_lines(data: bytes) -> bytes:
    """SMTP transparency inside a piece of a message: a '.' after a line break (a bare LF too, in
    case a server takes one for a line end) gets another."""
    return data.replace(b"\n.", b"\n..")


def dot_stuffed(data: bytes) -> bytes:
    """SMTP transparency (RFC 5321 4.5.2) of a whole message: a line starting with '.' gets another."""
    data = stuff_lines(data)
    return b"." + data if data.startswith(b".") else data


def mailbox(display_name: str | None, address: str) -> Address:
    return Address(display_name=clean_name(display_name), addr_spec=check_address(address))


def eml_name(address: str) -> str:
    """A file name for one recipient's message: the address when it is plain, else its hash."""
    if _FILE_SAFE.fullmatch(address) and ".." not in address and not address.startswith("."):
        return f"{address}.eml"
    return f"{hashlib.sha256(address.encode()).hexdigest()[:24]}.eml"


def sender() -> Address:
    """The hub's From mailbox (display name and address) from the contacts file."""
    value = settings.current().contacts()["ceptoar"]["from"]
    if "<" in value:
        name, _, addr = value.partition("<")
        return mailbox(name.strip(), addr.rstrip(">").strip())
    return mailbox(None, value)


def message_id(seed: str) -> str:
    """A Message-ID derived from `seed` (a resend carries the same one), on the sender's domain."""
    return f"<{hashlib.sha256(seed.encode()).hexdigest()[:40]}@{sender().domain}>"


def message(subject: str, text: str, html: str | None = None, *, to: Address | str | None = None,
            headers: dict[str, str] | None = None, eight_bit: bool = True) -> EmailMessage:
    """The one builder of the hub's mail: a text part (and an HTML alternative), From the hub,
    dated now. `eight_bit`: UTF-8 sent as it is (lines already under 998 octets), else base64."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender()
    if to is not None:
        msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(JST))  # Japan time: what clinics' mail clients show
    for name, value in (headers or {}).items():
        msg[name] = value
    cte = "8bit" if eight_bit else "base64"
    msg.set_content(text, subtype="plain", charset="utf-8", cte=cte)
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8", cte=cte)
    return msg


def segment(msg: EmailMessage) -> tuple[bytes, bytes]:
    """A message serialized once as (headers, body): recipients' own headers go between the two."""
    data = msg.as_bytes(policy=SMTP)
    head, _, body = data.partition(b"\r\n\r\n")
    return head + b"\r\n", body


# --- sending --------------------------------------------------------------------------------------

class DeliveryError(CeptoarError):
    """The run cannot go on (SMTP server unreachable or gone); one line for the operator."""


class Mailer:
    def __init__(self, cfg: SmtpConfig):
        self.cfg = cfg
        self.smtp: smtplib.SMTP | None = None
        self.pipelining = False

    def connect(self) -> None:
        try:
            self.smtp = smtplib.SMTP(self.cfg.host, self.cfg.port, timeout=self.cfg.timeout)
            self.smtp.ehlo()
            if self.cfg.starttls:
                self.smtp.starttls(context=ssl.create_default_context())
                self.smtp.ehlo()
            if self.cfg.user:
                self.smtp.login(self.cfg.user, self.cfg.password or "")
            self.pipelining = self.smtp.has_extn("pipelining") and self.smtp.has_extn("8bitmime")
        except (OSError, smtplib.SMTPException) as e:
            raise DeliveryError(f"cannot use SMTP server {self.cfg.host}:{self.cfg.port}: "
                                f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None

    def send(self, sender: str, to: str, data: bytes, stuffed: bool = False) -> str | None:
        """None when accepted; the refusal text for this recipient; DeliveryError when the
        server is gone. `stuffed`: the message is dot-stuffed already (compose; only with a server
        that pipelines: smtplib's own path stuffs what it is given)."""
        try:
            if self.pipelining:
                return self._send_pipelined(sender, to, data, stuffed)
            if stuffed:
                raise ValueError("a stuffed message is only sent pipelined")
            self.smtp.sendmail(sender, [to], data, mail_options=["BODY=8BITMIME"])
            return None
        except smtplib.SMTPRecipientsRefused as e:
            code, msg = next(iter(e.recipients.values()))
            return f"{code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
            return f"{e.smtp_code} {e.smtp_error.decode(errors='replace') if isinstance(e.smtp_error, bytes) else e}"
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as e:
            raise DeliveryError(f"SMTP server {self.cfg.host}:{self.cfg.port} went away: {type(e).__name__}: "
                                f"{' '.join(str(e).split())[:200]}") from None

    def _send_pipelined(self, sender: str, to: str, data: bytes, stuffed: bool = False) -> str | None:
        """RFC 2920: MAIL, RCPT and DATA in one write, then the message: two round trips, not four."""
        smtp = self.smtp
        smtp.send(f"MAIL FROM:<{sender}> BODY=8BITMIME\r\nRCPT TO:<{to}>\r\nDATA\r\n".encode())
        replies = [smtp.getreply() for _ in range(3)]
        (mail_code, mail_msg), (rcpt_code, rcpt_msg), (data_code, _) = replies
        if data_code == 354 and (mail_code != 250 or rcpt_code not in (250, 251)):
            smtp.send(b".\r\n")  # the server entered DATA anyway: end an empty message
            smtp.getreply()
        if mail_code != 250 or rcpt_code not in (250, 251) or data_code != 354:
            smtp.rset()
            code, msg = (mail_code, mail_msg) if mail_code != 250 else (rcpt_code, rcpt_msg)
            return f"{code} {msg.decode(errors='replace')}"
        body = data if stuffed else dot_stuffed(data)
        smtp.send(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        code, msg = smtp.getreply()
        return None if code == 250 else f"{code} {msg.decode(errors='replace')}"

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass
