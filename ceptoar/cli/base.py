"""The `ceptoar` group, the hub a command works on, and how failures are shown."""

from __future__ import annotations

import getpass
import os
import traceback

import click

from ceptoar.core.errors import CeptoarError
from ceptoar.core.output import clean, echo
from ceptoar.store import Store

REPORT = "this is a bug in the hub: please report it to the CEPTOAR secretariat with the lines above"


class HubGroup(click.Group):
    """A problem the user can act on (CeptoarError, or the file system's OSError) is one line on
    stderr and exit status 1. Anything else is a bug: its traceback, and a request to report it."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (CeptoarError, OSError) as e:
            raise click.ClickException(clean(str(e))) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except Exception:
            traceback.print_exc()
            echo(f"error: {REPORT}", err=True)
            ctx.exit(2)


class Hub:
    def __init__(self, db_path: str, actor: str):
        self.db_path = db_path
        self.actor = actor
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.db_path)
            self._store.on_busy = lambda message: echo(message, err=True)
            if self._store.degraded:
                echo(f"warning: {self._store.degraded}", err=True)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def ready_store(self) -> Store:
        self.store.require_initialized()
        return self.store


pass_hub = click.make_pass_decorator(Hub)


@click.group(cls=HubGroup)
@click.option("--db", "db_path", envvar="CEPTOAR_DB", default="ceptoar.db", show_default=True,
              help="The hub's database: a SQLite file path (the default) or a postgresql://… URL (env CEPTOAR_DB).")
@click.option("--actor", envvar="CEPTOAR_ACTOR", default=None,
              help="Who acts, for the audit log (env CEPTOAR_ACTOR; default: the OS user).")
@click.version_option(package_name="ceptoar")
@click.pass_context
def main(ctx: click.Context, db_path: str, actor: str | None) -> None:
    """CEPTOAR hub (医療セプター): ingest, triage and share security advisories."""
    os.umask(0o077)  # the database, notices, digests and exports hold TLP:RED and secrets: owner only
    from ceptoar.core import settings

    settings.use(settings.load(db_path))
    ctx.obj = Hub(db_path, actor or _os_user())
    ctx.call_on_close(ctx.obj.close)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


