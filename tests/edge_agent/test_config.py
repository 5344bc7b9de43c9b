"""Agent settings: defaults, derived values and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import AgentSettings
from edge_agent.errors import SettingsError


def test_config_defaults_from_site_alone() -> None:
    settings = AgentSettings.from_env({"EDGEPM_SITE": "plant-a"})

    assert settings.agent_id == "plant-a-agent"
    assert settings.mqtt_port == 1883
    assert settings.mqtt_protocol == "5"
    assert settings.mqtt_receive_maximum == 1000
    assert settings.database_path == Path("var/agent/agent.sqlite3")
    assert settings.model_path == Path("var/agent/models")
    assert settings.http_host == "127.0.0.1"
    assert settings.http_port == 9100
    assert settings.batch_wait_s == pytest.approx(0.01)


def test_config_reads_every_variable() -> None:
    settings = AgentSettings.from_env(
        {
            "EDGEPM_SITE": "plant-b",
            "EDGEPM_AGENT_ID": "edge-7",
            "EDGEPM_MQTT_PROTOCOL": "3.1.1",
            "EDGEPM_MQTT_PASSWORD": "secret",
            "EDGEPM_DATA_DIR": "/srv/agent",
            "EDGEPM_CONTROL_PLANE_URL": "https://cp.example:8443/",
            "EDGEPM_API_TOKEN": "token-1",
            "EDGEPM_SYNC_INTERVAL_S": "0.5",
            "EDGEPM_BATCH_MAX": "64",
            "EDGEPM_ALERT_CLEAR_COUNT": "5",
            "EDGEPM_LOG_LEVEL": "debug",
        }
    )

    assert settings.agent_id == "edge-7"
    assert settings.mqtt_receive_maximum == 20  # the MQTT 3.1.1 default
    assert settings.model_path == Path("/srv/agent/models")
    assert settings.control_plane_url == "https://cp.example:8443"
    assert settings.sync_interval_s == 0.5
    assert settings.batch_max == 64
    assert settings.alert_clear_count == 5
    assert settings.log_level == "DEBUG"
    assert "secret" not in repr(settings)
    assert "token-1" not in repr(settings)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, r"EDGEPM_SITE is not set; set it to this site's name"),
        ({"EDGEPM_SITE": "plant a"}, r"EDGEPM_SITE='plant a' is invalid"),
        ({"EDGEPM_MQTT_PORT": "mqtt"}, r"EDGEPM_MQTT_PORT='mqtt' is not an integer"),
        ({"EDGEPM_MQTT_PORT": "70000"}, r"EDGEPM_MQTT_PORT=70000 is out of range"),
        ({"EDGEPM_MQTT_PROTOCOL": "4"}, r"EDGEPM_MQTT_PROTOCOL='4' is not supported"),
        ({"EDGEPM_CONTROL_PLANE_URL": "cp:8080"}, r"is not an HTTP URL"),
        ({"EDGEPM_CONTROL_PLANE_URL": "http://"}, r"is not an HTTP URL"),
        ({"EDGEPM_CONTROL_PLANE_URL": "http://cp:99999"}, r"is not an HTTP URL"),
        ({"EDGEPM_ALERT_CLEAR_RATIO": "1.5"}, r"EDGEPM_ALERT_CLEAR_RATIO=1.5 is out"),
        (
            {"EDGEPM_BATCH_WAIT_MS": "soon"},
            r"EDGEPM_BATCH_WAIT_MS='soon' is not a number",
        ),
        ({"EDGEPM_LOG_LEVEL": "LOUD"}, r"EDGEPM_LOG_LEVEL='LOUD' is not a log level"),
    ],
)
def test_config_rejects_invalid_values(environ: dict[str, str], message: str) -> None:
    if environ and "EDGEPM_SITE" not in environ:
        environ = {"EDGEPM_SITE": "plant-a", **environ}

    with pytest.raises(SettingsError, match=message):
        AgentSettings.from_env(environ)
