"""WSGI entry of the hub's TAXII 2.1 server, for gunicorn (see README "Production").

    CEPTOAR_DB=/srv/ceptoar/ceptoar.db gunicorn -c taxii_server/gunicorn.conf.py

Settings come from the environment: CEPTOAR_DB (required), CEPTOAR_TAXII_API_ROOT (default
"ceptoar"), CEPTOAR_TAXII_MAX_CONTENT_LENGTH (bytes, default 10 MiB), CEPTOAR_TAXII_PAGE_SIZE
(default 100), CEPTOAR_TAXII_PROXIES=N when N reverse proxies (nginx: 1) set X-Forwarded-For,
-Proto and -Host (CEPTOAR_TAXII_TRUST_PROXY=1 means 1), CEPTOAR_PUBLIC_URL the hub's external URL
(https://taxii.example.jp), advertised by discovery.
"""

import os

from ceptoar.store import Store
from ceptoar.taxii.app import create_app_from_env

_db = os.environ.get("CEPTOAR_DB")
if not _db:
    raise SystemExit("CEPTOAR_DB is not set: point it at the hub's database")
Store(_db).require_initialized()

application = create_app_from_env(_db)
