"""The HTTP floor for TAXII pages: a bare Flask app under the same gunicorn, returning bodies of
the same size as the hub's pages (captured from the hub in the same run), with the TAXII media type.

    CEPTOAR_FLOOR_BODIES=bodies.json gunicorn -w 2 bench.floor_app:app
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from flask import Flask, Response

app = Flask("floor")
BODIES = {k: v.encode() for k, v in json.loads(Path(os.environ["CEPTOAR_FLOOR_BODIES"]).read_text("utf-8")).items()}


@app.get("/<name>/")
def body(name: str) -> Response:
    return Response(BODIES[name], mimetype="application/taxii+json;version=2.1")
