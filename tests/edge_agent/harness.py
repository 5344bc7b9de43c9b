"""Helpers for edge agent tests: readings, a telemetry publisher, a running agent."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent import Agent
from edge_agent.config import AgentSettings
from edge_agent.models import ModelDirectory
from edge_agent.reading import alert_topic, telemetry_topic
from tests.conftest import Broker, free_port

SITE = "plant-a"
TIMEOUT_S = 15.0
_START = dt.datetime(2026, 12, 4, 15, 0, tzinfo=dt.UTC)

# Measurements the quick AI4I model scores far from its threshold in each direction:
# an ordinary cut, and heavy torque on a worn tool (overstrain).
NORMAL = {"torque_nm": 42.8, "rotational_speed_rpm": 1551.0, "tool_wear_min": 0.0}
FAILING = {"torque_nm": 65.0, "rotational_speed_rpm": 1300.0, "tool_wear_min": 230.0}


def reading(machine: str = "m-001", seq: int = 0, **fields: Any) -> dict[str, Any]:
    """Return a valid reading document; ``fields`` override or add fields."""
    ts = _START + dt.timedelta(milliseconds=100 * seq)
    document: dict[str, Any] = {
        "site": SITE,
        "machine_id": machine,
        "ts": ts.isoformat(timespec="milliseconds"),
        "seq": seq,
        "product_type": "L",
        "air_temperature_k": 298.1,
        "process_temperature_k": 308.6,
        **NORMAL,
    }
    document.update(fields)
    return document


def encode(document: Any) -> bytes:
    return json.dumps(document).encode("utf-8")


def make_settings(tmp_path: Path, broker: Broker, **overrides: Any) -> AgentSettings:
    """Settings for an agent on the test's broker, with a control plane that is down."""
    values: dict[str, Any] = {
        "site": SITE,
        "mqtt_host": broker.host,
        "mqtt_port": broker.port,
        "data_dir": tmp_path / "agent",
        "http_port": free_port(),
        "control_plane_url": f"http://127.0.0.1:{free_port()}",
        "sync_interval_s": 0.1,
        "heartbeat_interval_s": 0.5,
    }
    values.update(overrides)
    return AgentSettings(**values)


def install_model(settings: AgentSettings, model_dir: Path) -> None:
    """Install the session's model version as the agent's active model."""
    ModelDirectory(settings.model_path).install_directory(model_dir)


@contextlib.asynccontextmanager
async def running(agent: Agent, *, ready: bool = True) -> AsyncIterator[Agent]:
    """Run the agent for the block, waiting until it is ready; stop it after."""
    task = asyncio.create_task(agent.run(), name="agent")
    try:
        if ready:
            await _wait_ready(agent, task)
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, TIMEOUT_S)


async def _wait_ready(agent: Agent, task: asyncio.Task[None]) -> None:
    ready = asyncio.create_task(agent.wait_ready(TIMEOUT_S))
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # re-raises the agent's failure
        raise AssertionError("agent.run() returned before the agent was ready")
    ready.result()


async def wait_until(
    condition: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


def query(database: Path, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
    """Run a read-only query on the agent's SQLite file from the test's thread."""
    if not database.exists():
        return []
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    try:
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


def count(database: Path, table: str) -> int:
    rows = query(database, f"SELECT count(*) FROM {table}")
    return int(rows[0][0]) if rows else 0


def sample(agent: Agent, name: str, **labels: str) -> float:
    """Return one sample of the agent's metrics, 0 when it has none yet."""
    value = agent.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


class TelemetryPublisher:
    """A machine-side MQTT 5 client that publishes with QoS 1 and waits for PUBACK.

    Optionally subscribes to the site's alerts and keeps their payloads.
    """

    def __init__(self, broker: Broker, *, client_id: str = "test-machine") -> None:
        self.alerts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()

    def subscribe_alerts(self) -> None:
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *args: subscribed.set()
        self._client.subscribe(alert_topic(SITE, "+"), qos=1)
        assert subscribed.wait(TIMEOUT_S), "alert subscription not acknowledged"

    def publish(
        self, payload: bytes, *, machine: str = "m-001", topic: str = ""
    ) -> None:
        info = self._client.publish(
            topic or telemetry_topic(SITE, machine), payload, qos=1
        )
        info.wait_for_publish(TIMEOUT_S)
        assert info.is_published(), "broker did not acknowledge the publish"

    def publish_reading(self, document: dict[str, Any]) -> None:
        self.publish(encode(document), machine=document["machine_id"])

    def publish_readings(self, documents: list[dict[str, Any]]) -> None:
        """Publish a stream with paho's in-flight window full, then await PUBACKs."""
        infos = [
            self._client.publish(
                telemetry_topic(SITE, document["machine_id"]), encode(document), qos=1
            )
            for document in documents
        ]
        for info in infos:
            info.wait_for_publish(TIMEOUT_S)
            assert info.is_published(), "broker did not acknowledge the publish"

    def received_alerts(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.alerts)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        # paho 2.2 closes its wake-up socket pair only on garbage collection.
        self._client._reset_sockets()

    def __enter__(self) -> TelemetryPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _on_message(
        self, client: Any, userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        with self._lock:
            self.alerts.append(json.loads(message.payload))
