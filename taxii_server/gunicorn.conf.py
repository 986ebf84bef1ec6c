# gunicorn settings for the hub's TAXII server. Terminate TLS (1.2+) in front of gunicorn
# (nginx or similar) and keep gunicorn on loopback; set CEPTOAR_TAXII_TRUST_PROXY=1 then.
import os

# taxii_server/ is a configuration folder, not a package: gunicorn imports wsgi.py from here.
pythonpath = os.path.dirname(os.path.abspath(__file__))
wsgi_app = "wsgi:application"

bind = os.environ.get("CEPTOAR_TAXII_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("CEPTOAR_TAXII_WORKERS", "3"))
worker_class = "sync"  # each worker holds its own SQLite connection; WAL lets them read side by side
timeout = 60
accesslog = "-"  # the hub's own audit log in the database is the record; this is for operators
logger_class = "ceptoar.sharing.taxii.accesslog.MaskingLogger"  # unsubscribe tokens never reach the log
loglevel = "info"


# /metrics counts requests in every worker: prometheus_client's multiprocess mode, in a folder of
# this server's own (set before the workers import the app), removed when the server stops.
_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    _metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ceptoar-metrics-")


def on_exit(server):
    if _metrics_dir:
        import shutil

        shutil.rmtree(_metrics_dir, ignore_errors=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
