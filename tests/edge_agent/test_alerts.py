"""Alerts: hysteresis per machine, publishing after commit, publishing later."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.alerts import AlertPolicy, AlertState
from edge_agent.store import LocalStore
from tests.conftest import Broker
from tests.edge_agent.harness import (
    FAILING,
    TelemetryPublisher,
    install_model,
    make_settings,
    query,
    reading,
    running,
    wait_until,
)

POLICY = AlertPolicy(threshold=0.9, clear_ratio=0.5, clear_count=3)


def run_policy(probabilities: list[float]) -> list[str | None]:
    state: AlertState | None = None
    transitions = []
    for probability in probabilities:
        state, transition = POLICY.advance(state, probability, probability >= 0.9)
        transitions.append(transition)
    return transitions


def test_alerts_policy_raises_once_per_episode() -> None:
    transitions = run_policy([0.1, 0.95, 0.97, 0.99, 0.2, 0.2, 0.2, 0.1, 0.93])

    assert transitions == [
        None,
        "raised",
        None,
        None,
        None,
        None,
        "cleared",
        None,
        "raised",
    ]


def test_alerts_policy_clears_after_consecutive_lows() -> None:
    # 0.6 is below the threshold but above the clear level 0.45: it resets the count.
    transitions = run_policy([0.95, 0.2, 0.2, 0.6, 0.2, 0.2, 0.2])

    assert transitions == ["raised", None, None, None, None, None, "cleared"]


def test_alerts_policy_clear_level_is_threshold_times_ratio() -> None:
    assert POLICY.clear_level == pytest.approx(0.45)


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_alerts_raise_clear_and_raise_again(
    tmp_path: Path, mosquitto: Broker, model_dir: Path
) -> None:
    settings = make_settings(tmp_path, mosquitto, alert_clear_count=3)
    install_model(settings, model_dir)
    pattern = [True] * 4 + [False] * 3 + [True] * 2  # failing, recovered, failing

    with TelemetryPublisher(mosquitto) as machine:
        machine.subscribe_alerts()
        async with running(Agent(settings)):
            for seq, failing in enumerate(pattern):
                fields = FAILING if failing else {}
                machine.publish_reading(reading("m-007", seq, **fields))
            await wait_until(lambda: len(machine.received_alerts()) == 3, "3 alerts")

        alerts = machine.received_alerts()
        rows = query(
            settings.database_path,
            "SELECT state, published, reading_seq FROM alerts ORDER BY seq",
        )
        states = query(settings.database_path, "SELECT * FROM alert_state")

    assert [alert["state"] for alert in alerts] == ["raised", "cleared", "raised"]
    assert {alert["machine_id"] for alert in alerts} == {"m-007"}
    assert alerts[0]["agent_id"] == "plant-a-agent"
    assert alerts[0]["failure_type"] == "Overstrain Failure"
    assert alerts[0]["risk_band"] == "high"
    assert alerts[0]["model_version"] == 1
    assert [row[0] for row in rows] == ["raised", "cleared", "raised"]
    assert all(row[1] == 1 for row in rows)
    assert alerts[0]["reading_seq"] == rows[0][2]
    assert states == [("m-007", "raised", 0)]


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_alerts_unpublished_alert_is_published_later(
    tmp_path: Path, mosquitto: Broker, model_dir: Path
) -> None:
    settings = make_settings(tmp_path, mosquitto)
    install_model(settings, model_dir)
    # An alert committed while the broker was away, as the store keeps it.
    store = LocalStore.open(settings.database_path)
    with store.transaction():
        store.insert_alerts(
            [
                {
                    "seq": 1,
                    "machine_id": "m-003",
                    "ts": "2026-12-04T15:00:01.002+00:00",
                    "state": "raised",
                    "failure_probability": 0.97,
                    "risk_band": "high",
                    "failure_type": "Power Failure",
                    "model_version": 1,
                    "reading_seq": 0,
                    "published": 0,
                }
            ]
        )
        store.set_last_seq(1)
    store.close()

    with TelemetryPublisher(mosquitto) as subscriber:
        subscriber.subscribe_alerts()
        async with running(Agent(settings)):
            await wait_until(lambda: subscriber.received_alerts(), "the pending alert")
            await wait_until(
                lambda: (
                    query(settings.database_path, "SELECT published FROM alerts")
                    == [(1,)]
                ),
                "the published flag",
            )

    alert = subscriber.received_alerts()[0]
    assert alert["seq"] == 1
    assert alert["machine_id"] == "m-003"
    assert alert["failure_type"] == "Power Failure"
    assert json.dumps(alert)  # a JSON object, as sent
