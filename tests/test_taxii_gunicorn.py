"""Production serving: gunicorn with several workers from taxii_server/, `next` across workers."""

from __future__ import annotations

import requests
from taxii2client.v21 import Collection, as_pages

from tests.taxii_fixtures import TAXII, ServerProcess, build_world


def test_gunicorn_workers_share_stateless_next(tmp_path):
    world = build_world(tmp_path)
    single = ServerProcess(world.db).start()
    try:
        coll = Collection(f"{single.base}/ceptoar/collections/{world.uuids['kev']}/", user="assoc-green",
                          password=world.secrets["assoc-green"])
        reference = [o for e in as_pages(coll.get_objects, per_request=100) for o in e.get("objects", [])]
    finally:
        single.stop()
    server = ServerProcess(world.db, gunicorn=True, workers=3).start()
    try:
        url = f"{server.base}/ceptoar/collections/{world.uuids['kev']}/objects/"
        got, token, pages = [], None, 0
        while True:
            # A new connection per page: the pages land on different workers.
            params = {"limit": 37, **({"next": token} if token else {})}
            r = requests.get(url, params=params, auth=world.auth("assoc-green"),
                             headers={"Accept": TAXII, "Connection": "close"})
            assert r.status_code == 200, r.text
            body = r.json()
            got.extend(body["objects"])
            pages += 1
            if not body["more"]:
                break
            token = body["next"]
        assert pages > 5
        assert [(o["id"], o.get("modified")) for o in got] == [(o["id"], o.get("modified")) for o in reference]
    finally:
        server.stop()
