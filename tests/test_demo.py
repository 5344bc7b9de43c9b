"""The demo command: every part starts, readings flow to the centre, all stop."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.mqtt

DURATION_S = 25


def count_rows(database: Path, table: str) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@pytest.mark.timeout(240)
def test_demo_runs_whole_loop_and_stops(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    ports = {name: free_port() for name in ("mqtt", "api", "dashboard", "agent")}

    result = subprocess.run(
        [
            sys.executable, "-m", "control_plane.demo",
            "--state-dir", str(state), "--quick-model",
            "--duration-s", str(DURATION_S), "--rate", "200",
            "--mqtt-port", str(ports["mqtt"]), "--api-port", str(ports["api"]),
            "--dashboard-port", str(ports["dashboard"]),
            "--agent-port", str(ports["agent"]),
        ],
        capture_output=True,
        text=True,
        timeout=200,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"dashboard       http://127.0.0.1:{ports['dashboard']}/" in result.stdout
    assert "broker: Mosquitto" in result.stdout
    for name in ("simulator", "agent", "dashboard", "control-plane", "broker"):
        assert f"stopped {name}" in result.stdout
    stored = count_rows(state / "agent" / "agent.sqlite3", "readings")
    assert stored > 100
    # The agent stops before the control plane and syncs on its way out.
    assert count_rows(state / "control.sqlite3", "readings") == stored
