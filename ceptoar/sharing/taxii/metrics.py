"""`/healthz` and `/metrics` on the hub's web app.

`/healthz` needs no credentials and shows no data: 200 when the database answers and its schema is
current, 503 otherwise (for load balancers and systemd). `/metrics` is Prometheus's exposition format
(prometheus_client): requests by status and their latency (from every gunicorn worker when
PROMETHEUS_MULTIPROC_DIR is set, as taxii_server/gunicorn.conf.py does), and, read from the database
at each scrape, each source's consecutive failures, last success and health, digest deliveries by
status and the flash queue. It answers loopback, or a scraper that sends CEPTOAR_METRICS_TOKEN as a
bearer token.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from datetime import datetime

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ceptoar.store import schema

REQUESTS = Counter("ceptoar_http_requests", "HTTP requests answered, by status", ["status"])
LATENCY = Histogram("ceptoar_http_request_seconds", "Time to answer an HTTP request",
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def _seconds(ts: str | None) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() if ts else 0.0


class StoreCollector:
    """Figures read from the database at each scrape (the same for every worker)."""

    def __init__(self, store_of):
        self.store_of = store_of

    def collect(self):
        store = self.store_of()
        failures = GaugeMetricFamily("ceptoar_source_consecutive_failures", "Failed fetches in a row",
                                     labels=["source"])
        success = GaugeMetricFamily("ceptoar_source_last_success_timestamp_seconds", "Last successful fetch",
                                    labels=["source"])
        healthy = GaugeMetricFamily("ceptoar_source_healthy", "1 when the source is neither failing nor quiet",
                                    labels=["source", "health"])
        for r in store.sources.list():
            if not r["enabled"]:
                continue
            failures.add_metric([r["id"]], r["failures"])
            success.add_metric([r["id"]], _seconds(r.get("last_success")))
            healthy.add_metric([r["id"], r.get("health") or "ok"], 1 if (r.get("health") or "ok") == "ok" else 0)
        deliveries = CounterMetricFamily("ceptoar_digest_deliveries", "Digest and flash deliveries by status",
                                         labels=["status"])
        for status, n in store.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status").fetchall():
            deliveries.add_metric([status], n)
        queue = GaugeMetricFamily("ceptoar_flash_queue", "Flash alerts waiting to be sent")
        queue.add_metric([], len(store.deliveries.pending_flashes()))
        yield from (failures, success, healthy, deliveries, queue)


def _allowed(token: str | None) -> bool:
    if token:
        given = request.headers.get("Authorization", "")
        return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())
    try:
        return ipaddress.ip_address(request.remote_addr or "0.0.0.0").is_loopback
    except ValueError:
        return False


def register(app: Flask, store_of, metrics_token: str | None) -> None:
    @app.before_request
    def started():
        g.started = time.perf_counter()

    @app.after_request
    def counted(response):
        REQUESTS.labels(str(response.status_code)).inc()
        if getattr(g, "started", None) is not None:
            LATENCY.observe(time.perf_counter() - g.started)
        return response

    @app.route("/healthz")
    def healthz():
        try:
            version = schema.version_of(store_of())
        except Exception:  # any failure to reach the database is "not healthy", never a traceback
            version = None
        ok = version == schema.SCHEMA_VERSION
        return Response('{"status": "ok"}' if ok else '{"status": "unavailable"}', status=200 if ok else 503,
                        mimetype="application/json", headers={"Cache-Control": "no-store"})

    @app.route("/metrics")
    def metrics():
        if not _allowed(metrics_token):
            return Response("metrics are for loopback or a bearer token (CEPTOAR_METRICS_TOKEN)\n", status=403,
                            mimetype="text/plain")
        registry = CollectorRegistry()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.MultiProcessCollector(registry)
        else:
            registry.register(_ProcessLocal())
        registry.register(StoreCollector(store_of))
        return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")


class _ProcessLocal:
    """This process's request counters (one process: `ceptoar serve`, tests)."""

    def collect(self):
        yield from REQUESTS.collect()
        yield from LATENCY.collect()
