"""A loopback static file server with ETag / Last-Modified, for the offline demo and the tests."""

from __future__ import annotations

import hashlib
import io
import threading
from email.utils import formatdate
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FeedHandler(SimpleHTTPRequestHandler):
    """Serves files with a content ETag and honours If-None-Match (304), like the real feeds."""

    def log_message(self, *args) -> None:  # the demo prints its own progress
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.is_file():
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return None
            self.send_response(200)
            ctype = "application/json" if path.suffix == ".json" else "application/rdf+xml; charset=utf-8"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", formatdate(path.stat().st_mtime, usegmt=True))
            self.end_headers()
            return io.BytesIO(body)
        return super().send_head()


def serve_directory(root: Path, port: int = 0, handler=FeedHandler) -> tuple[ThreadingHTTPServer, str]:
    """Start serving `root` on 127.0.0.1 in a daemon thread; returns (server, base URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(handler, directory=str(root)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
