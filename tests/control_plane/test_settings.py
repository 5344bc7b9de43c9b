"""Reading the control plane settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.config import ConfigError, Settings


def test_settings_defaults_without_environment() -> None:
    settings = Settings.from_env({})

    assert settings == Settings()
    assert settings.database_url == "sqlite:///./var/control/control.sqlite3"
    assert settings.model_store == Path("./var/control/models")
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)
    assert (settings.dashboard_host, settings.dashboard_port) == ("127.0.0.1", 8050)
    assert settings.api_token is None
    assert settings.agent_stale_s == 30.0
    assert settings.max_upload_bytes == 200 * 1024 * 1024
    assert settings.log_level == "INFO"


def test_settings_read_every_variable() -> None:
    settings = Settings.from_env(
        {
            "EDGEPM_DATABASE_URL": "postgresql://edgepm@db:5432/edgepm",
            "EDGEPM_MODEL_STORE": "/srv/models",
            "EDGEPM_HTTP_HOST": "0.0.0.0",
            "EDGEPM_HTTP_PORT": "9000",
            "EDGEPM_API_TOKEN": " s3cret-token ",
            "EDGEPM_DASHBOARD_HOST": "0.0.0.0",
            "EDGEPM_DASHBOARD_PORT": "9050",
            "EDGEPM_AGENT_STALE_S": "12.5",
            "EDGEPM_MAX_UPLOAD_MB": "5",
            "EDGEPM_LOG_LEVEL": "debug",
        }
    )

    assert settings.database_url == "postgresql://edgepm@db:5432/edgepm"
    assert settings.model_store == Path("/srv/models")
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", 9000)
    assert settings.api_token == "s3cret-token"
    assert settings.dashboard_port == 9050
    assert settings.agent_stale_s == 12.5
    assert settings.max_upload_bytes == 5 * 1024 * 1024
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EDGEPM_DATABASE_URL", "mysql://db/x", r"EDGEPM_DATABASE_URL='mysql://db/x'"),
        ("EDGEPM_DATABASE_URL", "sqlite://x.db", r"three or four slashes"),
        ("EDGEPM_HTTP_PORT", "http", r"EDGEPM_HTTP_PORT='http' is not a whole"),
        ("EDGEPM_HTTP_PORT", "70000", r"outside the TCP port range"),
        ("EDGEPM_DASHBOARD_PORT", "0", r"EDGEPM_DASHBOARD_PORT=0 is outside"),
        ("EDGEPM_AGENT_STALE_S", "-1", r"positive, finite number of seconds"),
        ("EDGEPM_AGENT_STALE_S", "nan", r"positive, finite"),
        ("EDGEPM_MAX_UPLOAD_MB", "0", r"EDGEPM_MAX_UPLOAD_MB=0 must be a positive"),
        ("EDGEPM_LOG_LEVEL", "LOUD", r"expected one of DEBUG, INFO"),
        ("EDGEPM_API_TOKEN", "two words", r"contains whitespace"),
        ("EDGEPM_HTTP_HOST", "http://x", r"not a host name"),
    ],
)
def test_settings_invalid_value_names_variable(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({name: value})
