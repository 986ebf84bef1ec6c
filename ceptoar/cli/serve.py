"""Serve: the TAXII server for development (gunicorn in production)."""

from __future__ import annotations

import click

from ceptoar.cli.base import Hub, main, pass_hub
from ceptoar.core.output import echo

# --- TAXII server -----------------------------------------------------------------------------

@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@pass_hub
def serve(hub: Hub, host: str, port: int) -> None:
    """Serve TAXII 2.1 for development (production: gunicorn, see docs/operator.md)."""
    from werkzeug.serving import run_simple

    from ceptoar.sharing.taxii.accesslog import mask_werkzeug
    from ceptoar.sharing.taxii.app import create_app_from_env
    hub.ready_store()
    mask_werkzeug()
    app = create_app_from_env(hub.db_path)
    echo(f"TAXII 2.1 discovery at http://{host}:{port}/taxii2/ (Ctrl-C to stop)", err=True)
    run_simple(host, port, app, threaded=True)


