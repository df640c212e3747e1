"""All configuration of the dashboard, read from the environment in one place.

| variable | default | meaning |
|---|---|---|
| AINERD_DATA_DIR | ./data | folder of dataset files (*.h5) served by the explorer |
| AINERD_DATABASE_URL | sqlite:///<AINERD_INSTANCE_DIR>/ainerd.db | evaluation database (SQLAlchemy URL; postgresql+psycopg://... works) |
| AINERD_INSTANCE_DIR | ./instance | private folder for the SQLite file and the cache |
| AINERD_CACHE_DIR | <AINERD_INSTANCE_DIR>/cache | diskcache folder of background callbacks (created mode 0700) |
| AINERD_SECRET_KEY | random per process, local mode only | signs sessions and image ids; must be shared by all workers |
| AINERD_ADMIN_PASSWORD | none: admin pages off, local mode only | password of the admin role (studies, uploads) |
| AINERD_VIEWER_PASSWORD | none: explorer open | password collaborators use to view the explorer |
| AINERD_HOSTED | 0 | 1 on a server reachable by others: refuses to start without secret key and admin password |
| AINERD_BACKGROUND | diskcache | background-callback manager: diskcache or celery |
| AINERD_REDIS_URL | redis://127.0.0.1:6379/0 | broker and result backend when AINERD_BACKGROUND=celery |
| AINERD_MAX_UPLOAD_MB | 16 | largest accepted request body (uploads), MiB |
| AINERD_TRUSTED_PROXIES | 0 | number of reverse proxies in front that set X-Forwarded-For/-Proto/-Host (client address for rate limits) |
| AINERD_LOGIN_MAX_FAILURES | 10 | failed logins per client address within AINERD_LOGIN_WINDOW_S before 429 |
| AINERD_LOGIN_WINDOW_S | 900 | rate-limit window of failed logins, seconds |
| AINERD_SESSION_HOURS | 12 | a login lasts this long (signed session cookie) |
"""
from __future__ import annotations

import dataclasses
import os
import secrets
from pathlib import Path


class ConfigError(RuntimeError):
    """The configuration is unsafe or inconsistent; the message says which variable to set."""


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _number(env, name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def _int(env, name: str, default: int) -> int:
    value = _number(env, name, default)
    if value != int(value):
        raise ConfigError(f"{name} must be a whole number")
    return int(value)


@dataclasses.dataclass(frozen=True)
class Config:
    data_dir: Path = Path("data")
    instance_dir: Path = Path("instance")
    database_url: str = ""
    cache_dir: Path | None = None
    secret_key: str = ""
    admin_password: str | None = None
    viewer_password: str | None = None
    hosted: bool = False
    background: str = "diskcache"
    redis_url: str = "redis://127.0.0.1:6379/0"
    max_upload_bytes: int = 16 * 1024 * 1024
    testing: bool = False
    trusted_proxies: int = 0
    login_max_failures: int = 10
    login_window_s: int = 900
    session_hours: float = 12.0

    @classmethod
    def from_env(cls, env: dict | None = None, **overrides) -> "Config":
        """Build the configuration from environment variables (``env`` defaults to os.environ)."""
        env = os.environ if env is None else env
        instance = Path(env.get("AINERD_INSTANCE_DIR", "instance"))
        values = dict(
            data_dir=Path(env.get("AINERD_DATA_DIR", "data")),
            instance_dir=instance,
            database_url=env.get("AINERD_DATABASE_URL", ""),
            cache_dir=Path(env["AINERD_CACHE_DIR"]) if env.get("AINERD_CACHE_DIR") else None,
            secret_key=env.get("AINERD_SECRET_KEY", ""),
            admin_password=env.get("AINERD_ADMIN_PASSWORD") or None,
            viewer_password=env.get("AINERD_VIEWER_PASSWORD") or None,
            hosted=_flag(env.get("AINERD_HOSTED")),
            background=env.get("AINERD_BACKGROUND", "diskcache").strip().lower(),
            redis_url=env.get("AINERD_REDIS_URL", "redis://127.0.0.1:6379/0"),
            max_upload_bytes=int(float(env.get("AINERD_MAX_UPLOAD_MB", "16")) * 1024 * 1024),
            trusted_proxies=_int(env, "AINERD_TRUSTED_PROXIES", 0),
            login_max_failures=_int(env, "AINERD_LOGIN_MAX_FAILURES", 10),
            login_window_s=_int(env, "AINERD_LOGIN_WINDOW_S", 900),
            session_hours=_number(env, "AINERD_SESSION_HOURS", 12.0),
        )
        values.update(overrides)
        return cls(**values).validated()

    def validated(self) -> "Config":
        """Fill derived defaults and refuse unsafe hosted settings."""
        cfg = self
        if cfg.hosted:
            missing = [name for name, value in (("AINERD_SECRET_KEY", cfg.secret_key),
                                                ("AINERD_ADMIN_PASSWORD", cfg.admin_password)) if not value]
            if missing:
                raise ConfigError(f"hosted mode needs {' and '.join(missing)} (refusing to invent them)")
            if len(cfg.secret_key) < 32:
                raise ConfigError("AINERD_SECRET_KEY must be at least 32 characters in hosted mode")
        if cfg.max_upload_bytes <= 0:
            raise ConfigError("AINERD_MAX_UPLOAD_MB must be positive")
        if cfg.background not in ("diskcache", "celery"):
            raise ConfigError(f"AINERD_BACKGROUND must be diskcache or celery, not {cfg.background!r}")
        changes = {}
        if not cfg.secret_key:
            # local mode only: one process, so a random key is consistent
            changes["secret_key"] = secrets.token_hex(32)
        if not cfg.database_url:
            changes["database_url"] = f"sqlite:///{(cfg.instance_dir / 'ainerd.db').resolve()}"
        if cfg.cache_dir is None:
            changes["cache_dir"] = cfg.instance_dir / "cache"
        return dataclasses.replace(cfg, **changes) if changes else cfg
