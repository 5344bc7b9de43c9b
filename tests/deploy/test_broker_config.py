"""The site broker's rendered configuration, run by a real Mosquitto: the init
container's script hashes the passwords, the agent and the machines authenticate, and
the ACL lets telemetry and alerts through."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import free_port, mosquitto_binary, wait_for_port
from tests.deploy.manifests import Rendering, containers, resolve_env

pytestmark = pytest.mark.mqtt

KUSTOMIZATION = "k3s/overlays/demo"
CONTAINER_ROOT = "/mosquitto/"
WAIT_S = 10.0

Render = Callable[[str], Rendering]


@dataclass
class RunningBroker:
    """A Mosquitto run from the rendered configuration, with its users and passwords."""

    port: int
    users: dict[str, str]
    process: subprocess.Popen[bytes]


def _broker_parts(rendering: Rendering) -> tuple[dict[str, str], str, dict[str, str]]:
    """Return the ConfigMap files, the init container's script and its environment."""
    broker = rendering.find("Deployment", "edgepm-mosquitto")
    assert broker is not None, f"{KUSTOMIZATION} renders no Deployment edgepm-mosquitto"
    volumes = broker["spec"]["template"]["spec"]["volumes"]
    name = next(v["configMap"]["name"] for v in volumes if "configMap" in v)
    config = rendering.find("ConfigMap", name)
    assert config is not None
    init = next(r for r in containers(rendering) if r.workload is broker and r.is_init)
    script = init.container["args"][-1]
    return dict(config["data"]), script, resolve_env(init).values


@pytest.fixture
def broker(rendered: Render, tmp_path: Path) -> Iterator[RunningBroker]:
    """Mosquitto on a free loopback port with the demo's configuration and users."""
    if shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto_passwd is not installed; apt-get install mosquitto")
    files, script, env = _broker_parts(rendered(KUSTOMIZATION))
    root = tmp_path / "mosquitto"
    for folder in ("config", "auth", "data"):
        (root / folder).mkdir(parents=True)
    port = free_port()

    def local(text: str) -> str:
        return text.replace(CONTAINER_ROOT, f"{root}/")

    config = local(files["mosquitto.conf"]).replace(
        "listener 1883\n", f"listener {port} 127.0.0.1\n"
    )
    if os.geteuid() == 0:
        # Started as root, Mosquitto switches to the user mosquitto, which cannot read
        # the password file this process writes. In the pod both run as uid 1883.
        config += "user root\n"
    (root / "config" / "mosquitto.conf").write_text(config)
    (root / "config" / "acl").write_text(files["acl"])
    subprocess.run(
        ["/bin/sh", "-c", local(script)],
        env={"PATH": "/usr/bin:/bin:/usr/sbin", **env},
        check=True,
        timeout=30,
    )

    log = (tmp_path / "mosquitto.log").open("wb")
    process = subprocess.Popen(
        [mosquitto_binary(), "-c", str(root / "config" / "mosquitto.conf")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        users = {
            env["AGENT_USERNAME"]: env["AGENT_PASSWORD"],
            env["MACHINE_USERNAME"]: env["MACHINE_PASSWORD"],
        }
        yield RunningBroker(port, users, process)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


class Client:
    """A paho MQTT 5 client whose connect result and messages tests wait for."""

    def __init__(self, port: int, username: str | None, password: str | None) -> None:
        self.connected = threading.Event()
        self.reason_code: int | None = None
        self.received: list[tuple[str, bytes]] = []
        self.message = threading.Event()
        self.subscribed = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        # Runs on paho's network thread.
        self.reason_code = reason_code.value
        self.connected.set()

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        self.received.append((message.topic, message.payload))
        self.message.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        self.subscribed.set()

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK."""
        self._client.subscribe(topic, qos=1)
        assert self.subscribed.wait(WAIT_S), f"no SUBACK for {topic} in {WAIT_S} s"

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait until the broker acknowledged it."""
        info = self._client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=WAIT_S)
        assert info.is_published(), f"no PUBACK for {topic} in {WAIT_S} s"

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def client_factory(broker: RunningBroker) -> Iterator[Callable[..., Client]]:
    """Connect clients to the broker; all are disconnected after the test."""
    clients: list[Client] = []

    def connect(username: str | None, password: str | None = None) -> Client:
        client = Client(broker.port, username, password)
        clients.append(client)
        assert client.connected.wait(WAIT_S), f"no CONNACK in {WAIT_S} s"
        return client

    yield connect
    for client in clients:
        client.close()


def test_broker_rejects_wrong_password(
    broker: RunningBroker, client_factory: Callable[..., Client]
) -> None:
    client = client_factory("machine", "not-the-password")

    assert client.reason_code == 135, "expected Not authorized (135)"


def test_broker_rejects_anonymous_client(client_factory: Callable[..., Client]) -> None:
    client = client_factory(None)

    assert client.reason_code == 135, "expected Not authorized (135)"


def test_broker_delivers_machine_telemetry_to_agent(
    broker: RunningBroker, client_factory: Callable[..., Client]
) -> None:
    agent = client_factory("edgepm-agent", broker.users["edgepm-agent"])
    machine = client_factory("machine", broker.users["machine"])
    assert agent.reason_code == 0
    assert machine.reason_code == 0
    agent.subscribe("edgepm/demo/+/telemetry")

    machine.publish("edgepm/demo/m-001/telemetry", b'{"seq": 1}')

    assert agent.message.wait(WAIT_S), "the agent received no telemetry"
    assert agent.received == [("edgepm/demo/m-001/telemetry", b'{"seq": 1}')]


def test_broker_delivers_agent_alert_to_machine(
    broker: RunningBroker, client_factory: Callable[..., Client]
) -> None:
    agent = client_factory("edgepm-agent", broker.users["edgepm-agent"])
    machine = client_factory("machine", broker.users["machine"])
    machine.subscribe("edgepm/demo/m-001/alert")

    agent.publish("edgepm/demo/m-001/alert", b'{"state": "raised"}')

    assert machine.message.wait(WAIT_S), "the machine received no alert"
    assert machine.received == [("edgepm/demo/m-001/alert", b'{"state": "raised"}')]
