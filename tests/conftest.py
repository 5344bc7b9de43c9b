"""Fixtures for the real components the tests talk to.

Every test that needs a broker gets its own Mosquitto process on a free loopback port,
configured as the edge deployment configures it. PostgreSQL tests use the server named
by EDGEPM_TEST_DATABASE_URL (default: the local server on 127.0.0.1:5432) and create a
fresh database per test session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# The trained-model fixtures (model_dir and the objects it is built from) and the
# headless browser for dashboard tests.
pytest_plugins = ["tests.model_fixture", "tests.browser_fixture"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
AI4I_CSV = PROJECT_ROOT / "data" / "ai4i2020.csv"
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Broker:
    """A running Mosquitto process started for one test."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    config_path: Path
    persistence_dir: Path

    def stop(self) -> None:
        """Stop the broker; it saves its persistent sessions on the way out."""
        _stop(self.process)

    def start(self) -> None:
        """Start a stopped broker again on the same port and persistence."""
        self.process = _start_mosquitto(self.config_path, self.port)

    def restart(self) -> None:
        """Stop the broker and start it again on the same port and persistence."""
        self.stop()
        self.start()


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 at the time of the call."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts TCP connections on the port, or fail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")


def mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(path).exists():
        pytest.fail(
            "mosquitto is not installed; install it (apt-get install mosquitto) "
            "or run the tests through scripts/test, which installs it"
        )
    return path


def write_mosquitto_config(directory: Path, port: int) -> Path:
    """Write a broker config like the edge deployment's: TCP_NODELAY, no queue cap."""
    persistence = directory / "persistence"
    persistence.mkdir(parents=True, exist_ok=True)
    config = directory / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence true\n"
        f"persistence_location {persistence}/\n"
        "set_tcp_nodelay true\n"
        "max_queued_messages 0\n"
        "max_inflight_messages 20\n"
        "log_dest stderr\n"
        "log_type error\n"
        "log_type warning\n" + ("user root\n" if os.geteuid() == 0 else "")
        # Started as root, Mosquitto drops to the 'mosquitto' user, which cannot
        # write its persistence file into pytest's private temporary folders.
    )
    return config


def _start_mosquitto(config: Path, port: int) -> subprocess.Popen[bytes]:
    # The child gets its own copy of the descriptor, so the parent's can close now.
    with (config.parent / "mosquitto.log").open("ab") as log:
        process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port)
    except TimeoutError:
        _stop(process)
        raise
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A private Mosquitto broker on a free loopback port, stopped after the test."""
    port = free_port()
    directory = tmp_path / "mosquitto"
    config = write_mosquitto_config(directory, port)
    broker = Broker(
        "127.0.0.1",
        port,
        _start_mosquitto(config, port),
        config,
        directory / "persistence",
    )
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The URL of a PostgreSQL server that accepts a superuser connection."""
    import psycopg

    url = os.environ.get("EDGEPM_TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    try:
        with psycopg.connect(url, connect_timeout=5) as connection:
            connection.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {url} is not reachable ({exc}); start it, set "
            "EDGEPM_TEST_DATABASE_URL, or run the tests through scripts/test"
        )
    return url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"edgepm_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(postgres_server_url)
    params["dbname"] = name
    yield make_conninfo(**params)
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def ai4i_csv() -> Path:
    """The AI4I 2020 file shipped with the project."""
    assert AI4I_CSV.is_file(), f"{AI4I_CSV} is missing from the checkout"
    return AI4I_CSV
