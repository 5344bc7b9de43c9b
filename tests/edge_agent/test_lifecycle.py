"""The agent as a process: ack after commit across a kill, SIGTERM, MQTT 3.1.1, CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge_agent.__main__ import main
from edge_agent.agent import Agent
from tests.conftest import PROJECT_ROOT, Broker, free_port
from tests.edge_agent.harness import (
    SITE,
    TIMEOUT_S,
    TelemetryPublisher,
    count,
    install_model,
    make_settings,
    query,
    reading,
    running,
    wait_until,
)


def start_agent(
    data_dir: Path, broker: Broker, http_port: int, log: Path
) -> subprocess.Popen[bytes]:
    environ = {
        **os.environ,
        "EDGEPM_SITE": SITE,
        "EDGEPM_MQTT_PORT": str(broker.port),
        "EDGEPM_DATA_DIR": str(data_dir),
        "EDGEPM_HTTP_PORT": str(http_port),
        "EDGEPM_CONTROL_PLANE_URL": f"http://127.0.0.1:{free_port()}",
        # One message per transaction, so a stream of readings takes long enough
        # to be killed in the middle.
        "EDGEPM_BATCH_MAX": "1",
        "EDGEPM_BATCH_WAIT_MS": "0",
    }
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent"],
            cwd=PROJECT_ROOT,
            env=environ,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def wait_ready(process: subprocess.Popen[bytes], http_port: int, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    url = f"http://127.0.0.1:{http_port}/readyz"
    while time.monotonic() < deadline:
        assert process.poll() is None, f"agent exited early:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"agent not ready after {TIMEOUT_S} s:\n{log.read_text()}")


def wait_stored(database: Path, at_least: int) -> int:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        stored = count(database, "readings")
        if stored >= at_least:
            return stored
        time.sleep(0.01)
    raise AssertionError(f"fewer than {at_least} readings stored after {TIMEOUT_S} s")


@pytest.mark.mqtt
def test_agent_killed_midstream_stores_each_reading_once(
    tmp_path: Path, mosquitto: Broker, model_dir: Path
) -> None:
    total = 2000
    data_dir = tmp_path / "agent"
    database = data_dir / "agent.sqlite3"
    log = tmp_path / "agent.log"
    http_port = free_port()
    install_model(make_settings(tmp_path, mosquitto, data_dir=data_dir), model_dir)

    # First run: creates the persistent session, then stops on SIGTERM.
    agent = start_agent(data_dir, mosquitto, http_port, log)
    wait_ready(agent, http_port, log)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=TIMEOUT_S) == 0
    assert f"store {database} closed" in log.read_text()

    # The broker queues the stream for the absent agent.
    with TelemetryPublisher(mosquitto) as machine:
        machine.publish_readings([reading("m-042", seq) for seq in range(total)])

    # Second run: killed without warning while it works through the stream.
    agent = start_agent(data_dir, mosquitto, http_port, log)
    stored_at_kill = wait_stored(database, 50)
    agent.kill()
    agent.wait(timeout=TIMEOUT_S)
    assert stored_at_kill < total, "the agent finished before it could be killed"

    # Third run: the broker delivers everything not acknowledged, duplicates included.
    agent = start_agent(data_dir, mosquitto, http_port, log)
    try:
        wait_stored(database, total)
        wait_ready(agent, http_port, log)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=TIMEOUT_S)

    seqs = [row[0] for row in query(database, "SELECT seq FROM readings ORDER BY seq")]
    machine_seqs = query(database, "SELECT count(DISTINCT machine_seq) FROM readings")
    assert seqs == list(range(1, total + 1))  # no number lost to the killed transaction
    assert machine_seqs == [(total,)]
    assert count(database, "predictions") == total
    assert count(database, "quarantine") == 0


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_agent_mqtt311_session_keeps_messages(
    tmp_path: Path, mosquitto: Broker, model_dir: Path
) -> None:
    settings = make_settings(tmp_path, mosquitto, mqtt_protocol="3.1.1")
    install_model(settings, model_dir)
    database = settings.database_path

    async with running(Agent(settings)):
        pass  # subscribes with clean_session=False, then disconnects
    with TelemetryPublisher(mosquitto) as machine:
        # More than the broker's in-flight window of 20 for MQTT 3.1.1 clients.
        for seq in range(50):
            machine.publish_reading(reading(seq=seq))
    async with running(Agent(settings)):
        await wait_until(lambda: count(database, "readings") == 50, "50 readings")

    assert settings.mqtt_receive_maximum == 20
    assert count(database, "predictions") == 50


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_agent_restart_continues_sequence(
    tmp_path: Path, mosquitto: Broker, model_dir: Path
) -> None:
    settings = make_settings(tmp_path, mosquitto)
    install_model(settings, model_dir)
    database = settings.database_path

    with TelemetryPublisher(mosquitto) as machine:
        for run in range(2):
            async with running(Agent(settings)):
                machine.publish_reading(reading(seq=2 * run))
                machine.publish(b"[]")
                await wait_until(
                    lambda n=run: count(database, "quarantine") == n + 1,
                    "the quarantined payload",
                )
    store_ids = query(database, "SELECT value FROM meta WHERE key = 'store_id'")

    assert query(database, "SELECT seq FROM readings ORDER BY seq") == [(1,), (3,)]
    assert query(database, "SELECT seq FROM quarantine ORDER BY seq") == [(2,), (4,)]
    assert query(database, "SELECT value FROM meta WHERE key = 'last_seq'") == [("4",)]
    assert len(store_ids) == 1


def test_main_reports_missing_site(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EDGEPM_SITE", raising=False)

    status = main([])

    assert status == 2
    assert "EDGEPM_SITE is not set" in capsys.readouterr().err


def test_main_help_lists_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    output = capsys.readouterr().out
    assert exited.value.code == 0
    assert "EDGEPM_MQTT_RECEIVE_MAXIMUM" in output
    assert "EDGEPM_ALERT_CLEAR_COUNT" in output
