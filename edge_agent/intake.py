"""MQTT intake: where a reading enters the agent.

A paho-mqtt 2.x client subscribes to the site's telemetry with QoS 1 in a persistent
session and never acknowledges a message by itself (``manual_ack=True``). The pipeline
acknowledges a message only after its reading or quarantine record is committed, so
the broker delivers again whatever the agent held when it died.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.metrics import AgentMetrics
from edge_agent.reading import telemetry_subscription
from edge_agent.retry import LogThrottle, backoff_delay

logger = logging.getLogger(__name__)

KEEPALIVE_S = 30
# How often paho's thread, waiting for room, checks for a stop, in seconds.
_POLL_S = 0.1
_RECONNECT_CAP_S = 30.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as received, before validation.

    Attributes:
        topic: the topic it arrived on.
        payload: the raw body.
        mid: the broker's message id, needed for the acknowledgement.
        qos: the delivery QoS (0 needs no acknowledgement).
        connection: the number of the MQTT connection it arrived on; a message id is
            only valid on that connection.
        received_at: arrival time, seconds since the epoch.
    """

    topic: str
    payload: bytes
    mid: int
    qos: int
    connection: int
    received_at: float


class MqttIntake:
    """The telemetry subscription, served by paho's network thread (``loop_start``).

    paho calls ``on_connect``, ``on_message`` and the other callbacks on that thread.
    They hand work to the event loop with ``loop.call_soon_threadsafe`` and touch no
    asyncio object directly. ``acknowledge`` and ``publish`` run on the event loop and
    only queue packets, which paho's thread writes.

    The agent holds at most ``capacity`` received messages that are not yet processed.
    When it holds that many, paho's thread waits in ``on_message`` and stops reading
    the socket, so the broker keeps the rest: backpressure, not loss. The broker sends
    at most ``receive_maximum`` unacknowledged messages, but Mosquitto 2.0 was seen to
    send about twice that when it resumes a session, hence the default of twice.

    Args:
        host: broker host.
        port: broker TCP port.
        protocol: ``5`` or ``3.1.1``.
        client_id: the MQTT client id; the persistent session belongs to it.
        username: broker user name, None for anonymous.
        password: broker password.
        site: the site whose telemetry to subscribe to.
        receive_maximum: MQTT 5 Receive Maximum, the unacknowledged messages the broker
            may send; with 3.1.1 the broker's own in-flight limit applies instead.
        session_expiry_s: MQTT 5 Session Expiry Interval, seconds the broker keeps the
            session and its queued messages after a disconnect.
        queue: where deliveries go, on the event loop.
        loop: the event loop that owns ``queue``.
        metrics: the agent's metrics.
        capacity: received messages the agent may hold before paho's thread waits;
            0 means twice ``receive_maximum``.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        protocol: str,
        client_id: str,
        username: str | None,
        password: str | None,
        site: str,
        receive_maximum: int,
        session_expiry_s: int,
        queue: asyncio.Queue[Delivery],
        loop: asyncio.AbstractEventLoop,
        metrics: AgentMetrics,
        capacity: int = 0,
    ) -> None:
        self._host = host
        self._port = port
        self._protocol = protocol
        self._client_id = client_id
        self._topic_filter = telemetry_subscription(site)
        self._receive_maximum = receive_maximum
        self._session_expiry_s = session_expiry_s
        self._queue = queue
        self._loop = loop
        self._metrics = metrics

        self._client = self._create_client(username, password)
        self._capacity = capacity or 2 * receive_maximum
        self._room = threading.BoundedSemaphore(self._capacity)
        self._stopping = threading.Event()
        self._accepting = True
        self._started = False
        self._connection = 0
        self._connected = False
        self._subscribed = False
        self._reconnect_attempt = 0
        self._reconnect_delay_s = 0.0
        self._pending_publishes: dict[int, asyncio.Future[bool]] = {}
        self._inbox: list[Delivery] = []
        self._inbox_lock = threading.Lock()
        self._is_handover_scheduled = False
        self._wait_log = LogThrottle()
        # Called on the event loop after each successful subscription, e.g. to
        # publish what waited for the connection.
        self.on_subscribed: Callable[[], None] | None = None

    @property
    def is_connected(self) -> bool:
        """True while connected to the broker and subscribed to the telemetry."""
        return self._connected and self._subscribed

    def start(self) -> None:
        """Start paho's network thread, which connects and reconnects on its own."""
        if self._protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self._session_expiry_s
            properties.ReceiveMaximum = self._receive_maximum
            self._client.connect_async(
                self._host,
                self._port,
                KEEPALIVE_S,
                clean_start=False,
                properties=properties,
            )
        else:
            self._client.connect_async(self._host, self._port, KEEPALIVE_S)
        self._set_reconnect_delay()
        self._client.loop_start()
        self._started = True

    async def stop(self) -> None:
        """Disconnect and wait for paho's thread to end.

        Messages received but not yet acknowledged stay with the broker, which delivers
        them again on the next connection of this client id.
        """
        self._accepting = False
        self._stopping.set()
        if self._started:
            self._started = False
            self._client.disconnect()
            await asyncio.to_thread(self._client.loop_stop)
            # paho 2.2 closes the socket pair that wakes its select() only when the
            # client is garbage collected; close it now rather than leak two sockets.
            self._client._reset_sockets()
        self._set_connected(False)

    def acknowledge(self, delivery: Delivery) -> None:
        """Acknowledge a committed delivery and free its place; call on the event loop.

        A delivery from an earlier connection is not acknowledged, because its message
        id may now name another message. The broker delivers it again anyway, and the
        store skips it as a duplicate.
        """
        self._room.release()
        if delivery.qos == 0 or not self._connected:
            return
        if delivery.connection != self._connection:
            return
        self._client.ack(delivery.mid, delivery.qos)

    async def publish(self, topic: str, payload: bytes, *, timeout_s: float) -> bool:
        """Publish with QoS 1 and wait for the broker's PUBACK.

        Returns:
            True when the broker acknowledged the message within ``timeout_s`` seconds;
            False when not connected, rejected or timed out.
        """
        if not self.is_connected:
            return False
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        # on_publish reaches the loop through call_soon_threadsafe, so it cannot run
        # before this future is registered, because no await comes in between.
        future: asyncio.Future[bool] = self._loop.create_future()
        self._pending_publishes[info.mid] = future
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            return False
        finally:
            self._pending_publishes.pop(info.mid, None)

    def _set_reconnect_delay(self) -> None:
        # paho doubles its reconnect delay without jitter. Setting min and max to one
        # value before each wait makes paho wait exactly our capped, jittered delay.
        delay = backoff_delay(max(1, self._reconnect_attempt), cap_s=_RECONNECT_CAP_S)
        self._client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]
        self._reconnect_delay_s = delay

    def _create_client(self, username: str | None, password: str | None) -> mqtt.Client:
        if self._protocol == "5":
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self._client_id,
                protocol=mqtt.MQTTv5,
                manual_ack=True,
            )
        else:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self._client_id,
                protocol=mqtt.MQTTv311,
                clean_session=False,
                manual_ack=True,
            )
        if username is not None:
            client.username_pw_set(username, password)
        client.on_socket_open = self._on_socket_open
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    # paho callbacks, all on the network thread

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # paho leaves Nagle's algorithm on, so small PUBACKs and PUBLISHes wait for the
        # peer's delayed ACK. That raised p99 latency 20 to 30 times on loopback
        # (Mosquitto 2.0.11, paho 2.2, measured at 2,000 messages/s).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            logger.error(
                "MQTT broker %s:%d rejected client %s: %s; check "
                "EDGEPM_MQTT_USERNAME, EDGEPM_MQTT_PASSWORD and the broker's ACL",
                self._host,
                self._port,
                self._client_id,
                reason_code,
            )
            return
        self._connection += 1
        self._connected = True
        self._reconnect_attempt = 0
        logger.info(
            "MQTT client %s connected to %s:%d (MQTT %s, session present: %s)",
            self._client_id,
            self._host,
            self._port,
            self._protocol,
            flags.session_present,
        )
        client.subscribe(self._topic_filter, qos=1)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._reconnect_attempt += 1
        self._set_reconnect_delay()
        logger.warning(
            "MQTT client %s cannot connect to %s:%d; retrying in %.1f s",
            self._client_id,
            self._host,
            self._port,
            self._reconnect_delay_s,
        )

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if any(code.is_failure for code in reason_codes):
            logger.error(
                "MQTT broker %s:%d denied client %s the subscription %s: %s",
                self._host,
                self._port,
                self._client_id,
                self._topic_filter,
                reason_codes,
            )
            return
        self._subscribed = True
        self._loop.call_soon_threadsafe(self._metrics.mqtt_connected.set, 1)
        if self.on_subscribed is not None:
            self._loop.call_soon_threadsafe(self.on_subscribed)
        logger.info(
            "MQTT client %s subscribed to %s", self._client_id, self._topic_filter
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._connected
        self._set_connected(False)
        if self._stopping.is_set():
            logger.info("MQTT client %s disconnected", self._client_id)
            return
        self._reconnect_attempt += 1
        self._set_reconnect_delay()
        if was_connected:
            logger.warning(
                "MQTT client %s lost the connection to %s:%d (%s); readings wait at "
                "the broker, reconnecting in %.1f s",
                self._client_id,
                self._host,
                self._port,
                reason_code,
                self._reconnect_delay_s,
            )

    def _on_message(
        self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        if not self._wait_for_room():
            return  # stopping: left unacknowledged for the next session
        delivery = Delivery(
            topic=message.topic,
            payload=bytes(message.payload),
            mid=message.mid,
            qos=message.qos,
            connection=self._connection,
            received_at=time.time(),
        )
        # One wake-up of the event loop per burst, not per message: each
        # call_soon_threadsafe writes to the loop's self-pipe.
        with self._inbox_lock:
            self._inbox.append(delivery)
            if self._is_handover_scheduled:
                return
            self._is_handover_scheduled = True
        self._loop.call_soon_threadsafe(self._hand_over)

    def _wait_for_room(self) -> bool:
        """Wait until the agent may hold one more message; False when stopping."""
        if self._room.acquire(blocking=False):
            return self._accepting
        self._metrics.intake_waits.inc()
        if self._wait_log.allow():
            logger.info(
                "intake is at its capacity of %d unprocessed messages, so reads from "
                "the broker pause until the pipeline catches up (%d more pauses)",
                self._capacity,
                self._wait_log.take_suppressed(),
            )
        while not self._room.acquire(timeout=_POLL_S):
            if self._stopping.is_set():
                return False
        return self._accepting

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._loop.call_soon_threadsafe(
            self._complete_publish, mid, not reason_code.is_failure
        )

    # Event loop side

    def _hand_over(self) -> None:
        with self._inbox_lock:
            deliveries, self._inbox = self._inbox, []
            self._is_handover_scheduled = False
        for delivery in deliveries:
            self._queue.put_nowait(delivery)

    def _complete_publish(self, mid: int, succeeded: bool) -> None:
        future = self._pending_publishes.get(mid)
        if future is not None and not future.done():
            future.set_result(succeeded)

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        if not connected:
            self._subscribed = False
            self._loop.call_soon_threadsafe(self._metrics.mqtt_connected.set, 0)
