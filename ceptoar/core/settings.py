"""The hub's settings, read once, with the same names everywhere (the commands, `ceptoar run`,
`ceptoar serve`, gunicorn's `wsgi.py`).

Each setting is an environment variable `CEPTOAR_<NAME>`, or `<name>` in `settings.toml` in the
configuration folder; the environment wins. The configuration folder (`CEPTOAR_CONFIG`; default
`ceptoar-config/` beside a SQLite database, `~/.config/ceptoar` for PostgreSQL) also holds the
operator's own `relay.toml` (incident notice addresses) and `contacts.toml` (the secretariat's
contacts and sender), created by `init` from the examples shipped with the hub; a Settings reads
each of them once (`relay()`, `contacts()`).
"""

from __future__ import annotations

import os
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ceptoar.core.dburl import is_url, sqlite_path
from ceptoar.core.errors import CeptoarError

PACKAGE = Path(__file__).resolve().parent
# The examples shipped with the hub, copied into the configuration folder by `init`.
EXAMPLES = {"relay.toml": PACKAGE / "relay.toml", "contacts.toml": PACKAGE / "contacts.toml"}


class SettingsError(CeptoarError):
    """A setting with a value the hub cannot use."""


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass
class SmtpConfig:
    host: str
    port: int = 25
    user: str | None = None
    password: str | None = field(default=None, repr=False)  # from the environment only (CEPTOAR_SMTP_PASSWORD)
    starttls: bool = False
    timeout: float = 30.0

    @classmethod
    def from_env(cls) -> SmtpConfig | None:
        """From the settings (CEPTOAR_SMTP_HOST, _PORT, _USER, _PASSWORD, _STARTTLS or settings.toml)."""
        return current().smtp()


@dataclass(frozen=True)
class Settings:
    db: str = "ceptoar.db"
    config_dir: Path = Path("ceptoar-config")
    public_url: str | None = None  # the hub's external URL: discovery, unsubscribe links
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_starttls: bool = False
    operator_email: str | None = None  # where feed-health mail goes
    digest_daily_at: str = "07:00"  # JST
    digest_weekly_at: str = "mon 07:30"  # JST
    failure_threshold: int = 3  # consecutive failures before the operator is told
    audit_retention_days: int = 0  # 0: keep everything; else `run` prunes older entries (archived first)
    busy_seconds: float = 60.0  # how long a command waits for a busy database
    taxii_api_root: str = "ceptoar"
    taxii_max_content_length: int = 10 * 1024 * 1024
    taxii_page_size: int = 100
    taxii_proxies: int = 0
    taxii_max_objects: int = 1000
    taxii_max_objects_per_day: int = 10000
    taxii_proxy_key: str | None = field(default=None, repr=False)
    # A PostgreSQL hot standby the TAXII front end reads pages from (objects, manifests, versions,
    # collections); members, grants, audit entries and every write stay on the primary (`db`).
    taxii_read_db: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)
    response_link_days: int = 30  # how long a facility's answer link stays valid
    response_reminder_days: int = 3  # unanswered urgent matches are reminded after this many days
    exposure_minimum: int = 5  # a prefecture with fewer matched facilities is not named in an exposure note
    urgent_min_minutes: int = 10  # a facility gets at most one urgent message this often; later matches join the next
    digest_max_items: int = 10  # items a digest shows in full, then up to 30 in a line each, the rest counted; 0: all
    # Processes that normalize a large document while the hub stores it (ceptoar.ingest.offload); 0: all in the
    # hub's own process (less memory, more time). Used only on a machine with two cores or more.
    ingest_processes: int = 2
    _read: dict = field(default_factory=dict, repr=False, compare=False)  # configuration files, read once

    def config_file(self, name: str) -> Path:
        """The operator's copy of a configuration file, else the example shipped with the hub."""
        own = self.config_dir / name
        return own if own.exists() else EXAMPLES[name]

    def relay(self) -> dict:
        """Where incident notices go and the deadlines: the operator's relay.toml over the example
        shipped with the hub, section by section (a section the operator's file lacks, such as one
        added by a newer hub, keeps the example's values)."""
        if "relay" not in self._read:
            example = tomllib.loads(EXAMPLES["relay.toml"].read_text(encoding="utf-8"))
            self._read["relay"] = example | self._toml("relay.toml")
        return self._read["relay"]

    def contacts(self) -> dict:
        """The secretariat's contacts and sender: the operator's contacts.toml, else the example."""
        if "contacts" not in self._read:
            self._read["contacts"] = self._toml("contacts.toml")
        return self._read["contacts"]

    def _toml(self, name: str) -> dict:
        return tomllib.loads(self.config_file(name).read_text(encoding="utf-8"))

    def smtp(self) -> SmtpConfig | None:
        if not self.smtp_host:
            return None
        return SmtpConfig(host=self.smtp_host, port=self.smtp_port, user=self.smtp_user,
                          password=self.smtp_password, starttls=self.smtp_starttls)


_INT = {"smtp_port", "failure_threshold", "audit_retention_days", "taxii_max_content_length", "taxii_page_size",
        "taxii_proxies", "taxii_max_objects", "taxii_max_objects_per_day", "response_link_days",
        "response_reminder_days", "exposure_minimum", "ingest_processes", "urgent_min_minutes",
        "digest_max_items"}
_FLOAT = {"busy_seconds"}
_BOOL = {"smtp_starttls"}


def default_config_dir(db: str) -> Path:
    if is_url(db) and not db.startswith("sqlite:"):
        return Path.home() / ".config" / "ceptoar"
    path = sqlite_path(db)
    return (path.parent if path else Path.cwd()) / "ceptoar-config"


def load(db: str | None = None, env=None) -> Settings:
    """Settings from the environment and the configuration folder's settings.toml."""
    env = os.environ if env is None else env
    db = db or env.get("CEPTOAR_DB") or "ceptoar.db"
    config_dir = Path(env.get("CEPTOAR_CONFIG") or default_config_dir(db))
    values: dict = {}
    file = config_dir / "settings.toml"
    if file.exists():
        try:
            values.update(tomllib.loads(file.read_text(encoding="utf-8")))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise SettingsError(f"{file}: {e}") from None
    names = set(Settings.__dataclass_fields__) - {"db", "config_dir", "_read"}
    unknown = set(values) - names
    if unknown:
        raise SettingsError(f"{file}: unknown settings {', '.join(sorted(unknown))}")
    for name in names:
        if f"CEPTOAR_{name.upper()}" in env:
            values[name] = env[f"CEPTOAR_{name.upper()}"]
    # Older names, still read.
    if "taxii_proxies" not in values and env.get("CEPTOAR_TAXII_TRUST_PROXY"):
        values["taxii_proxies"] = env["CEPTOAR_TAXII_TRUST_PROXY"]
    for name, value in list(values.items()):
        try:
            if name in _INT:
                values[name] = int(value)
            elif name in _FLOAT:
                values[name] = float(value)
            elif name in _BOOL:
                values[name] = value if isinstance(value, bool) else _truthy(value)
            elif value == "":
                values[name] = None
        except (TypeError, ValueError):
            raise SettingsError(f"setting {name} (CEPTOAR_{name.upper()}): {value!r} is not a number") from None
    if values.get("public_url"):
        values["public_url"] = str(values["public_url"]).rstrip("/")
    return Settings(db=db, config_dir=config_dir, **values)


_current: Settings | None = None


def current() -> Settings:
    """The settings of this process (`use()` sets them; else from the environment)."""
    global _current
    if _current is None:
        _current = load()
    return _current


def use(settings: Settings) -> Settings:
    global _current
    _current = settings
    return settings


def create_config_dir(settings: Settings) -> list[Path]:
    """The configuration folder with the operator's copies of the examples (never overwritten);
    the files it created."""
    made = []
    settings.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, example in EXAMPLES.items():
        target = settings.config_dir / name
        if not target.exists():
            shutil.copyfile(example, target)
            target.chmod(0o600)
            made.append(target)
    return made
