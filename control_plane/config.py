"""The control plane's settings, read once from EDGEPM_* environment variables.

The command line builds one Settings at start and passes it to the API, the
dashboard and the training commands. No other module reads the environment.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///./var/control/control.sqlite3"
DEFAULT_MODEL_STORE = "./var/control/models"
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """An EDGEPM_* variable with an invalid value; the message names it and the fix."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The control plane's configuration.

    Attributes:
        database_url: ``sqlite:///relative/path``, ``sqlite:////absolute/path`` or a
            ``postgresql://`` URL.
        model_store: the directory that contains one subdirectory per model version.
        http_host: the address the API listens on.
        http_port: the TCP port the API listens on.
        api_token: the bearer token every ``/api/`` request must carry; None leaves
            the API open.
        dashboard_host: the address the dashboard listens on.
        dashboard_port: the TCP port the dashboard listens on.
        agent_stale_s: seconds since its last heartbeat after which an agent is down.
        max_upload_mb: the largest batch-scoring upload accepted, in MiB.
        log_level: the root log level name.
    """

    database_url: str = DEFAULT_DATABASE_URL
    model_store: Path = Path(DEFAULT_MODEL_STORE)
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    api_token: str | None = None
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8050
    agent_stale_s: float = 30.0
    max_upload_mb: int = 200
    log_level: str = "INFO"

    @property
    def max_upload_bytes(self) -> int:
        """The batch-scoring upload limit in bytes."""
        return self.max_upload_mb * 1024 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the settings from the environment.

        Args:
            environ: the variables to read; None reads ``os.environ``.

        Raises:
            ConfigError: a variable has an invalid value.
        """
        env = os.environ if environ is None else environ
        token = env.get("EDGEPM_API_TOKEN", "").strip() or None
        return cls(
            database_url=_database_url(env),
            model_store=Path(env.get("EDGEPM_MODEL_STORE", DEFAULT_MODEL_STORE)),
            http_host=_host(env, "EDGEPM_HTTP_HOST", "127.0.0.1"),
            http_port=_port(env, "EDGEPM_HTTP_PORT", 8080),
            api_token=_token(token),
            dashboard_host=_host(env, "EDGEPM_DASHBOARD_HOST", "127.0.0.1"),
            dashboard_port=_port(env, "EDGEPM_DASHBOARD_PORT", 8050),
            agent_stale_s=_positive_float(env, "EDGEPM_AGENT_STALE_S", 30.0),
            max_upload_mb=_positive_int(env, "EDGEPM_MAX_UPLOAD_MB", 200),
            log_level=_log_level(env),
        )


def _database_url(env: Mapping[str, str]) -> str:
    url = env.get("EDGEPM_DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in DATABASE_SCHEMES:
        raise ConfigError(
            f"EDGEPM_DATABASE_URL={url!r} is not a database URL; expected "
            "sqlite:///path/to/file.sqlite3 or postgresql://user@host:5432/dbname"
        )
    if scheme == "sqlite" and not rest.startswith("/"):
        raise ConfigError(
            f"EDGEPM_DATABASE_URL={url!r} has no file path; write "
            "sqlite:///relative.db or sqlite:////absolute/path.db (three or four "
            "slashes)"
        )
    return url


def _host(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    if any(character.isspace() for character in value) or "/" in value:
        raise ConfigError(
            f"{name}={value!r} is not a host name or address; "
            "set e.g. 127.0.0.1 or 0.0.0.0"
        )
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    port = _integer(env, name, default)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name}={port} is outside the TCP port range 1 to 65535")
    return port


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _integer(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name}={value} must be a positive whole number")
    return value


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number; set e.g. {name}={default}"
        ) from exc


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(
            f"{name}={raw!r} is not a number; set e.g. {name}={default:g}"
        ) from exc
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"{name}={raw!r} must be a positive, finite number of seconds"
        )
    return value


def _token(token: str | None) -> str | None:
    if token is not None and any(character.isspace() for character in token):
        raise ConfigError(
            "EDGEPM_API_TOKEN contains whitespace, which an Authorization header "
            "cannot carry; generate a token without spaces, e.g. openssl rand -hex 32"
        )
    return token


def _log_level(env: Mapping[str, str]) -> str:
    value = env.get("EDGEPM_LOG_LEVEL", "").strip().upper() or "INFO"
    if value not in LOG_LEVELS:
        raise ConfigError(
            f"EDGEPM_LOG_LEVEL={value!r} is not a log level; "
            f"expected one of {', '.join(LOG_LEVELS)}"
        )
    return value
