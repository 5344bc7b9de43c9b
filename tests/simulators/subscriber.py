"""A counting MQTT subscriber for simulator tests, running paho's loop in a thread."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TIMEOUT_S = 20.0


class Subscriber:
    """Collects (topic, payload) of every message on one topic filter at QoS 1."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.subscribed = threading.Event()
        self._messages: list[tuple[str, bytes]] = []
        # on_message runs on paho's network thread; tests read from the main thread.
        self._lock = threading.Lock()

    @property
    def messages(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self._messages)

    def wait_for(
        self, count: int, timeout_s: float = TIMEOUT_S
    ) -> list[tuple[str, bytes]]:
        """Return the messages once ``count`` have arrived, or all after the timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._messages) >= count:
                    break
            time.sleep(0.02)
        return self.messages

    def on_message(self, client: mqtt.Client, userdata: Any, message: Any) -> None:
        with self._lock:
            self._messages.append((message.topic, bytes(message.payload)))


@contextmanager
def subscribe(host: str, port: int, topic_filter: str) -> Iterator[Subscriber]:
    """Subscribe to ``topic_filter`` and yield once the SUBACK has arrived."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    subscriber = Subscriber(client)
    client.on_message = subscriber.on_message
    client.on_subscribe = lambda *args: subscriber.subscribed.set()
    client.on_connect = lambda c, *args: c.subscribe(topic_filter, qos=1)
    client.connect(host, port)
    client.loop_start()
    try:
        assert subscriber.subscribed.wait(TIMEOUT_S), f"no SUBACK for {topic_filter}"
        yield subscriber
    finally:
        client.disconnect()
        client.loop_stop()
        # The callbacks refer back to the client through the subscriber; without
        # them the client is freed at once and closes its sockets on the way.
        client.on_message = None
        client.on_subscribe = None
        client.on_connect = None
