"""The whole loop on real components: replay, agent, sync, batch scoring, dashboard.

The simulator and the edge agent run as their own processes through their command
lines, against a private Mosquitto. The control plane runs on PostgreSQL and serves
the model the agent downloads, and the fleet page is opened in headless Chromium.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from control_plane.config import Settings
from control_plane.model_store import ModelStore
from control_plane.registry import register_version
from control_plane.storage import open_storage
from edge_agent.reading import MEASUREMENT_FIELDS
from simulators.ai4i import load_ai4i_rows
from simulators.replay import plan_replay
from tests.conftest import Broker, free_port
from tests.control_plane.api_server import ApiServer, serve_api
from tests.control_plane.conftest import postgres_url_from_conninfo
from tests.dashboard.dashboard_server import serve_dashboard

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.browser]

SITE = "plant-a"
AGENT_ID = "plant-a-agent"
ROWS = 2000
MACHINES = 20
WAIT_S = 120.0
READING_COLUMNS = (
    "seq",
    "machine_id",
    "machine_seq",
    "ts",
    "product_type",
    *MEASUREMENT_FIELDS,
)
PREDICTION_COLUMNS = (
    "reading_seq",
    "model_version",
    "failure_probability",
    "failure_label",
    "risk_band",
    "failure_type",
    "failure_type_probability",
)


def wait_until(condition: Any, awaited: str, timeout_s: float = WAIT_S) -> None:
    """Poll condition() every 0.2 s until it is true, or fail naming the state."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {awaited}")


def agent_rows(database: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(query).fetchall()


def count_predictions(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        return int(agent_rows(database, "SELECT count(*) FROM predictions")[0][0])
    except sqlite3.OperationalError:  # the agent has not created its tables yet
        return 0


@pytest.fixture
def control_plane(
    postgres_url: str, model_store_root: Path, tmp_path: Path
) -> Iterator[ApiServer]:
    """The control plane API on PostgreSQL, with the quick model as version 1."""
    store_root = tmp_path / "models"
    ModelStore(store_root).publish(ModelStore(model_store_root).get(1).directory)
    settings = Settings(
        database_url=postgres_url_from_conninfo(postgres_url), model_store=store_root
    )
    storage = open_storage(settings.database_url)
    try:
        storage.migrate()
        register_version(storage, ModelStore(store_root).get(1))
    finally:
        storage.close()
    with serve_api(settings) as server:
        yield server


@pytest.fixture
def agent_process(
    mosquitto: Broker, control_plane: ApiServer, tmp_path: Path
) -> Iterator[Path]:
    """An edge agent process with no local model; yields its SQLite path."""
    data_dir = tmp_path / "agent"
    env = {
        **os.environ,
        "EDGEPM_SITE": SITE,
        "EDGEPM_AGENT_ID": AGENT_ID,
        "EDGEPM_MQTT_HOST": mosquitto.host,
        "EDGEPM_MQTT_PORT": str(mosquitto.port),
        "EDGEPM_DATA_DIR": str(data_dir),
        "EDGEPM_CONTROL_PLANE_URL": control_plane.base_url,
        "EDGEPM_HTTP_PORT": str(free_port()),
        "EDGEPM_SYNC_INTERVAL_S": "0.5",
        "EDGEPM_HEARTBEAT_INTERVAL_S": "1",
    }
    log = (tmp_path / "agent.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_agent"], env=env, stdout=log, stderr=log
    )
    try:
        yield data_dir / "agent.sqlite3"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    assert process.returncode == 0, (tmp_path / "agent.log").read_text()


def replay_rows(broker: Broker, tmp_path: Path) -> None:
    """Publish the first ROWS AI4I rows through the simulator's command line."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulators",
            "replay",
            "--host",
            broker.host,
            "--port",
            str(broker.port),
            "--site",
            SITE,
            "--machines",
            str(MACHINES),
            "--rows",
            str(ROWS),
            "--rate",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert result.returncode == 0, result.stderr
    assert f"acknowledged {ROWS}," in result.stdout + result.stderr


def batch_scores(api: ApiServer, ai4i_csv: Path) -> list[dict[str, str]]:
    """Score the first ROWS rows of the file through the batch endpoint."""
    lines = ai4i_csv.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    body = "".join(lines[: ROWS + 1]).encode()
    response = api.request(
        "POST", "/api/v1/score/batch", body=body, headers={"Content-Type": "text/csv"}
    )
    assert response.status == 200, response.body[:500]
    return list(csv.DictReader(io.StringIO(response.body.decode())))


def test_end_to_end_replay_score_sync_show(
    mosquitto: Broker,
    control_plane: ApiServer,
    agent_process: Path,
    ai4i_csv: Path,
    browser: WebDriver,
    tmp_path: Path,
) -> None:
    database = agent_process
    wait_until(lambda: database.exists(), "the agent's SQLite store")
    # The agent subscribes only after its model is loaded. Waiting for its first
    # heartbeat with a model version keeps the replay from starting before that.
    wait_until(lambda: _agent_ready(control_plane), "the agent's first heartbeat")

    replay_rows(mosquitto, tmp_path)
    wait_until(lambda: count_predictions(database) >= ROWS, f"{ROWS} predictions")

    # Each stored prediction equals the control plane's batch score of its row.
    plan = list(
        plan_replay(load_ai4i_rows(ai4i_csv)[:ROWS], machines=MACHINES, site=SITE)
    )
    row_of = {(r.machine_id, r.machine_seq): i for i, (_, r) in enumerate(plan)}
    scored = batch_scores(control_plane, ai4i_csv)
    stored = agent_rows(
        database,
        "SELECT r.machine_id, r.machine_seq, r.torque_nm, p.failure_probability, "
        "p.failure_label, p.risk_band, p.failure_type "
        "FROM readings r JOIN predictions p ON p.reading_seq = r.seq",
    )
    assert len(stored) == ROWS
    assert len(row_of) == ROWS
    for machine, machine_seq, torque, probability, label, band, failure_type in stored:
        row = scored[row_of[(machine, machine_seq)]]
        assert float(row["Torque [Nm]"]) == pytest.approx(torque)
        assert abs(float(row["failure_probability"]) - probability) <= 1e-6
        assert int(row["failure_label"]) == label
        assert row["risk_band"] == band
        assert row["failure_type"] == failure_type

    # After sync PostgreSQL contains exactly the agent's rows.
    local_readings = agent_rows(
        database, f"SELECT {', '.join(READING_COLUMNS)} FROM readings ORDER BY seq"
    )
    local_predictions = agent_rows(
        database,
        f"SELECT {', '.join(PREDICTION_COLUMNS)} FROM predictions ORDER BY reading_seq",
    )
    database_url = control_plane.settings.database_url

    def central(query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(database_url) as connection:
            return connection.execute(query, (AGENT_ID,)).fetchall()

    def synced() -> bool:
        rows = central("SELECT count(*) FROM predictions WHERE agent_id = %s")
        return int(rows[0][0]) >= ROWS

    wait_until(synced, "the sync of every prediction to PostgreSQL")
    central_readings = central(
        f"SELECT {', '.join(READING_COLUMNS)} FROM readings WHERE agent_id = %s "
        "ORDER BY seq"
    )
    central_predictions = central(
        f"SELECT {', '.join(PREDICTION_COLUMNS)} FROM predictions "
        "WHERE agent_id = %s ORDER BY reading_seq"
    )
    assert len(central_readings) == ROWS
    assert [_normalise(row) for row in central_readings] == [
        _normalise(row) for row in local_readings
    ]
    assert [_normalise(row) for row in central_predictions] == [
        _normalise(row) for row in local_predictions
    ]

    # The fleet page shows the agent and its machines.
    storage = open_storage(database_url, read_only=True)
    try:
        with serve_dashboard(storage) as url:
            browser.get(url + "/")
            wait = WebDriverWait(browser, 30)
            agents = wait.until(
                expected_conditions.presence_of_element_located((By.ID, "agents-table"))
            )
            wait.until(lambda _: AGENT_ID in agents.text)
            machines = browser.find_element(By.ID, "machines-table")
            wait.until(lambda _: "m-020" in machines.text)
            assert "m-001" in machines.text
            browser.save_screenshot(str(tmp_path / "fleet.png"))
    finally:
        storage.close()


def _agent_ready(api: ApiServer) -> bool:
    response = api.request("GET", "/api/v1/agents")
    if response.status != 200:
        return False
    agents = response.json()
    agents = agents.get("agents", agents) if isinstance(agents, dict) else agents
    return any(
        agent.get("agent_id") == AGENT_ID and agent.get("model_version") == 1
        for agent in agents
    )


def _normalise(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Make a row from either database comparable: timestamps as datetimes.

    SQLite keeps the ISO text the machine sent; PostgreSQL returns a datetime.
    """
    return tuple(
        dt.datetime.fromisoformat(value)
        if isinstance(value, str) and _looks_like_timestamp(value)
        else value
        for value in row
    )


def _looks_like_timestamp(value: str) -> bool:
    return len(value) >= 20 and value[4] == "-" and value[10] == "T"
