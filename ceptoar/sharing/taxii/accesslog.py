"""Access logs without secrets: unsubscribe tokens, digest-list links and answer-link signatures
(facilities' and vendors') are replaced in every logged request line.

`MaskingLogger` is gunicorn's logger class for production (taxii_server/gunicorn.conf.py);
`mask_werkzeug()` filters the development server's log the same way.
"""

from __future__ import annotations

import logging
import re

from gunicorn.glogging import Logger

_TOKEN_RE = re.compile(r"(/unsubscribe/|/digest/)[^\s?\"'#]+")  # a digest link: token, window, signature
# A facility's or a vendor's answer link: its expiry and signature.
_ANSWER_RE = re.compile(r"(/(?:respond|vendor)/[^/\s?\"'#]+/[^/\s?\"'#]+/)[^\s?\"'#]+")


def mask(text: str) -> str:
    return _ANSWER_RE.sub(r"\1…", _TOKEN_RE.sub(r"\1…", text))


class MaskingLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("r", "U", "{raw_uri}e"):
            if isinstance(atoms.get(key), str):
                atoms[key] = mask(atoms[key])
        return atoms


class _MaskFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def mask_werkzeug() -> None:
    logger = logging.getLogger("werkzeug")
    if not any(isinstance(f, _MaskFilter) for f in logger.filters):
        logger.addFilter(_MaskFilter())
