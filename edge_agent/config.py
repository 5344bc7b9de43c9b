"""The edge agent's settings: read once from EDGEPM_* environment variables.

Every variable, its default and its meaning (docs/edge_agent.md has the same table):

============================  =========================  ===============================
variable                      default                    meaning
============================  =========================  ===============================
EDGEPM_SITE                   (required)                 site name in the topics
EDGEPM_AGENT_ID               ``<site>-agent``           MQTT client id and uplink id
EDGEPM_MQTT_HOST              127.0.0.1                  broker host
EDGEPM_MQTT_PORT              1883                       broker TCP port
EDGEPM_MQTT_PROTOCOL          5                          ``5`` or ``3.1.1``
EDGEPM_MQTT_USERNAME          (none)                     broker user name
EDGEPM_MQTT_PASSWORD          (none)                     broker password
EDGEPM_MQTT_RECEIVE_MAXIMUM   1000 (MQTT 5), 20 (3.1.1)  unacked messages in flight
EDGEPM_MQTT_SESSION_EXPIRY_S  604800 (7 days)            broker keeps session, seconds
EDGEPM_DATA_DIR               ./var/agent                directory of agent.sqlite3
EDGEPM_MODEL_DIR              ``<data_dir>/models``      model version directories
EDGEPM_CONTROL_PLANE_URL      http://127.0.0.1:8080      control plane base URL
EDGEPM_API_TOKEN              (none)                     bearer token for /api/
EDGEPM_HTTP_HOST              127.0.0.1                  health and metrics host
EDGEPM_HTTP_PORT              9100                       health and metrics port
EDGEPM_SYNC_INTERVAL_S        2                          seconds between uploads
EDGEPM_SYNC_BATCH             1000                       records per table per upload
EDGEPM_HEARTBEAT_INTERVAL_S   5                          seconds between heartbeats
EDGEPM_BATCH_MAX              256                        messages per micro-batch
EDGEPM_BATCH_WAIT_MS          10                         max wait to fill a batch, ms
EDGEPM_ALERT_CLEAR_RATIO      0.5                        clear level / threshold
EDGEPM_ALERT_CLEAR_COUNT      3                          readings below it to clear
EDGEPM_LOG_LEVEL              INFO                       DEBUG, INFO, WARNING or ERROR
============================  =========================  ===============================
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from edge_agent.errors import SettingsError
from edge_agent.reading import IDENTIFIER_PATTERN

logger = logging.getLogger(__name__)

MQTT_PROTOCOLS = ("5", "3.1.1")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DATABASE_FILE = "agent.sqlite3"

# MQTT 5 lets the client set how many unacknowledged QoS 1 messages the broker may
# send it, and 1000 keeps micro-batches of 256 full while earlier batches commit. An
# MQTT 3.1.1 client cannot set it, so the default is Mosquitto's own
# max_inflight_messages (20).
_RECEIVE_MAXIMUM_DEFAULT = {"5": 1000, "3.1.1": 20}
_SESSION_EXPIRY_DEFAULT_S = 7 * 24 * 3600

_Number = TypeVar("_Number", int, float)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Everything the edge agent is configured with; validated on construction.

    Build it with ``AgentSettings.from_env(os.environ)`` at the entry point, or with
    keyword arguments in tests. A field left at its empty default (``agent_id``,
    ``model_dir``, ``mqtt_receive_maximum``) is derived from the others.
    """

    site: str
    agent_id: str = ""
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_protocol: str = "5"
    mqtt_username: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)
    mqtt_receive_maximum: int = 0
    mqtt_session_expiry_s: int = _SESSION_EXPIRY_DEFAULT_S
    data_dir: Path = Path("./var/agent")
    model_dir: Path | None = None
    control_plane_url: str = "http://127.0.0.1:8080"
    api_token: str | None = field(default=None, repr=False)
    http_host: str = "127.0.0.1"
    http_port: int = 9100
    sync_interval_s: float = 2.0
    sync_batch: int = 1000
    heartbeat_interval_s: float = 5.0
    batch_max: int = 256
    batch_wait_ms: float = 10.0
    alert_clear_ratio: float = 0.5
    alert_clear_count: int = 3
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        _check_identifier("EDGEPM_SITE", self.site)
        if not self.agent_id:
            object.__setattr__(self, "agent_id", f"{self.site}-agent")
        _check_identifier("EDGEPM_AGENT_ID", self.agent_id)
        if self.mqtt_protocol not in MQTT_PROTOCOLS:
            raise SettingsError(
                f"EDGEPM_MQTT_PROTOCOL={self.mqtt_protocol!r} is not supported; "
                f"set it to one of {', '.join(MQTT_PROTOCOLS)}"
            )
        if not self.mqtt_receive_maximum:
            default = _RECEIVE_MAXIMUM_DEFAULT[self.mqtt_protocol]
            object.__setattr__(self, "mqtt_receive_maximum", default)
        if self.model_dir is None:
            object.__setattr__(self, "model_dir", self.data_dir / "models")
        if not _is_http_url(self.control_plane_url):
            raise SettingsError(
                f"EDGEPM_CONTROL_PLANE_URL={self.control_plane_url!r} is not an HTTP "
                "URL; set it like http://127.0.0.1:8080"
            )
        object.__setattr__(
            self, "control_plane_url", self.control_plane_url.rstrip("/")
        )
        if self.log_level.upper() not in LOG_LEVELS:
            raise SettingsError(
                f"EDGEPM_LOG_LEVEL={self.log_level!r} is not a log level; "
                f"set it to one of {', '.join(LOG_LEVELS)}"
            )
        object.__setattr__(self, "log_level", self.log_level.upper())
        self._check_ranges()

    @property
    def database_path(self) -> Path:
        """The SQLite file of the local store."""
        return self.data_dir / DATABASE_FILE

    @property
    def model_path(self) -> Path:
        """The local model directory (``model_dir`` with its default applied)."""
        assert self.model_dir is not None  # set in __post_init__
        return self.model_dir

    @property
    def batch_wait_s(self) -> float:
        """The maximum wait to fill a micro-batch, in seconds."""
        return self.batch_wait_ms / 1000.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AgentSettings:
        """Read the settings from EDGEPM_* variables.

        Raises:
            SettingsError: a variable is missing or invalid; the message names it and
                tells how to set it.
        """
        site = environ.get("EDGEPM_SITE", "").strip()
        if not site:
            raise SettingsError(
                "EDGEPM_SITE is not set; set it to this site's name as it appears in "
                "the telemetry topics, e.g. EDGEPM_SITE=plant-a"
            )
        values: dict[str, object] = {"site": site}
        for setting in dataclasses.fields(cls):
            name = f"EDGEPM_{setting.name.upper()}"
            raw = environ.get(name, "").strip()
            if setting.name == "site" or not raw:
                continue
            values[setting.name] = _convert(name, raw, _FIELD_TYPES[setting.name])
        return cls(**values)  # type: ignore[arg-type]

    def _check_ranges(self) -> None:
        _check_range("EDGEPM_MQTT_PORT", self.mqtt_port, 1, 65535)
        _check_range("EDGEPM_MQTT_RECEIVE_MAXIMUM", self.mqtt_receive_maximum, 1, 65535)
        _check_range(
            "EDGEPM_MQTT_SESSION_EXPIRY_S", self.mqtt_session_expiry_s, 0, 2**32 - 1
        )
        _check_range("EDGEPM_HTTP_PORT", self.http_port, 0, 65535)
        _check_range("EDGEPM_SYNC_INTERVAL_S", self.sync_interval_s, 0.01, 86400.0)
        _check_range("EDGEPM_SYNC_BATCH", self.sync_batch, 1, 100_000)
        _check_range(
            "EDGEPM_HEARTBEAT_INTERVAL_S", self.heartbeat_interval_s, 0.01, 86400.0
        )
        _check_range("EDGEPM_BATCH_MAX", self.batch_max, 1, 10_000)
        _check_range("EDGEPM_BATCH_WAIT_MS", self.batch_wait_ms, 0.0, 10_000.0)
        # A clear level at or above the threshold would clear an alert on the reading
        # that raised it, which is no hysteresis at all.
        _check_range("EDGEPM_ALERT_CLEAR_RATIO", self.alert_clear_ratio, 0.0, 0.999)
        _check_range("EDGEPM_ALERT_CLEAR_COUNT", self.alert_clear_count, 1, 10_000)


# Field types for parsing, written out because `from __future__ import annotations`
# leaves dataclass field types as strings.
_FIELD_TYPES: dict[str, Callable[[str], object]] = {
    "agent_id": str,
    "mqtt_host": str,
    "mqtt_port": int,
    "mqtt_protocol": str,
    "mqtt_username": str,
    "mqtt_password": str,
    "mqtt_receive_maximum": int,
    "mqtt_session_expiry_s": int,
    "data_dir": Path,
    "model_dir": Path,
    "control_plane_url": str,
    "api_token": str,
    "http_host": str,
    "http_port": int,
    "sync_interval_s": float,
    "sync_batch": int,
    "heartbeat_interval_s": float,
    "batch_max": int,
    "batch_wait_ms": float,
    "alert_clear_ratio": float,
    "alert_clear_count": int,
    "log_level": str,
}


def _convert(name: str, raw: str, kind: Callable[[str], object]) -> object:
    try:
        return kind(raw)
    except ValueError as exc:
        noun = "an integer" if kind is int else "a number"
        raise SettingsError(f"{name}={raw!r} is not {noun}; set it to {noun}") from exc


def _check_identifier(name: str, value: str) -> None:
    if not IDENTIFIER_PATTERN.match(value):
        raise SettingsError(
            f"{name}={value!r} is invalid; expected 1 to 64 letters, digits, '_', '.' "
            "or '-', starting with a letter or digit, because it appears in MQTT "
            "topics and client ids"
        )


def _check_range(name: str, value: _Number, low: _Number, high: _Number) -> None:
    if not low <= value <= high:
        raise SettingsError(
            f"{name}={value} is out of range; set it from {low} to {high}"
        )


def _is_http_url(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port outside 0 to 65535
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
