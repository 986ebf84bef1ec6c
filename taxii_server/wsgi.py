"""WSGI entry of the hub's TAXII 2.1 server, for gunicorn (see docs/operator.md, "TAXII in production").

    CEPTOAR_DB=/srv/ceptoar/ceptoar.db gunicorn -c taxii_server/gunicorn.conf.py

Settings as everywhere (ceptoar.core.settings: CEPTOAR_* variables, or settings.toml in the configuration
folder): CEPTOAR_DB (required), CEPTOAR_TAXII_API_ROOT, CEPTOAR_TAXII_MAX_CONTENT_LENGTH,
CEPTOAR_TAXII_PAGE_SIZE, CEPTOAR_TAXII_PROXIES (how many reverse proxies set X-Forwarded-*),
CEPTOAR_PUBLIC_URL (the hub's external URL, advertised by discovery), CEPTOAR_TAXII_PROXY_KEY.
"""

import os

from ceptoar.store import Store
from ceptoar.sharing.taxii.app import create_app_from_env

_db = os.environ.get("CEPTOAR_DB")
if not _db:
    raise SystemExit("CEPTOAR_DB is not set: point it at the hub's database")
_store = Store(_db)
_store.require_initialized()
_store.close()

application = create_app_from_env(_db)
