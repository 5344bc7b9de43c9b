"""An MQTT publisher for simulated telemetry: QoS 1, a bounded in-flight window,
a rate limit and reconnects with capped, jittered backoff.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulators.errors import SimulatorError

logger = logging.getLogger(__name__)

PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}
QOS = 1
# Twenty unacknowledged messages keep a loopback link busy. paho 2.2 rescans its
# queue on every PUBACK, so a longer queue makes it slower: an unthrottled QoS 1
# burst of 100,000 messages stalled it, and a window of 1,000 halved throughput.
DEFAULT_WINDOW = 20
# Within one loop call the client waits at most this long for the socket, so a stop
# request or a due message is seen within 0.1 s.
_POLL_S = 0.1
# CONNACK reason codes that a retry cannot fix: unsupported protocol version, client
# identifier not valid, bad user name or password, not authorized, banned, bad
# authentication method.
_FATAL_CONNACK_CODES = frozenset({0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C})


class PublisherError(SimulatorError):
    """Publishing cannot go on."""


class BrokerConnectionError(PublisherError):
    """The broker refused the connection."""


class BrokerUnreachableError(BrokerConnectionError):
    """Nothing that speaks MQTT accepts connections at the broker's address."""


@dataclass(frozen=True)
class PublishReport:
    """Counts of one publisher's messages.

    Attributes:
        published: messages handed to the client and written to the broker at least
            once, or queued for the next connection.
        acknowledged: messages the broker acknowledged with a success code; only
            these count as sent.
        rejected: messages the broker acknowledged with an error code, which only
            MQTT 5 reports (e.g. 135, not authorized).
        reconnects: connections re-established after a loss.
        elapsed_s: seconds from the first publish to the end of the drain.
        peak_in_flight: the maximum number of messages unacknowledged at once.
    """

    published: int
    acknowledged: int
    rejected: int
    reconnects: int
    elapsed_s: float
    peak_in_flight: int

    @property
    def unacknowledged(self) -> int:
        """Messages published but neither acknowledged nor rejected."""
        return self.published - self.acknowledged - self.rejected

    @property
    def rate_per_s(self) -> float:
        """Acknowledged messages per second over the run; 0 for an empty run."""
        return self.acknowledged / self.elapsed_s if self.elapsed_s > 0 else 0.0


class RateLimiter:
    """Paces events to a target rate.

    A caller that falls behind, e.g. while reconnecting, may catch up with a burst
    of at most ``max_lag_s`` seconds' worth of events.
    """

    def __init__(self, rate_per_s: float, *, max_lag_s: float = 1.0) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s is {rate_per_s}; expected a positive rate")
        self.interval_s = 1.0 / rate_per_s
        self.max_lag_s = max_lag_s
        self._next_at: float | None = None

    def delay_s(self, now: float) -> float:
        """Return the seconds from ``now`` until the next event is due; 0 if it is."""
        if self._next_at is None:
            return 0.0
        return max(0.0, self._next_at - now)

    def take(self, now: float) -> None:
        """Record an event at monotonic time ``now`` (seconds)."""
        due = now if self._next_at is None else max(self._next_at, now - self.max_lag_s)
        self._next_at = due + self.interval_s


class MqttPublisher:
    """A paho-mqtt client that publishes at QoS 1 from the calling thread.

    The client runs single-threaded: ``publish_stream`` interleaves publishing with
    paho's network loop, so callbacks run on the caller's thread and need no locks.
    Messages the broker has not acknowledged stay in paho's queue and are sent again
    after a reconnect; they count as sent only once acknowledged.

    Args:
        host: the broker's host name or address.
        port: the broker's TCP port.
        protocol: "5" for MQTT 5 or "3.1.1" for brokers that speak only that.
        username: the user name to log in with; None connects anonymously.
        password: the password for ``username``.
        client_id: the MQTT client id; None makes a unique one.
        window: the maximum number of unacknowledged messages.
        keepalive_s: the MQTT keepalive in seconds. A reconnect that gets no CONNACK
            is dropped after this long and tried again.
        connect_timeout_s: seconds to wait for the TCP connection and, on the first
            connect, for the CONNACK.
        backoff_initial_s: the delay before the first reconnect attempt, in seconds.
        backoff_max_s: the cap on the delay between reconnect attempts, in seconds.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        protocol: str = "5",
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        window: int = DEFAULT_WINDOW,
        keepalive_s: int = 30,
        connect_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(
                f"protocol is {protocol!r}; expected one of {', '.join(PROTOCOLS)}"
            )
        if window < 1:
            raise ValueError(f"window is {window}; expected 1 or more messages")
        self.host = host
        self.port = port
        self.protocol = protocol
        self.window = window
        self.connect_timeout_s = connect_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._keepalive_s = keepalive_s
        self._client = self._make_client(
            client_id or f"edgepm-sim-{uuid.uuid4().hex[:12]}", username, password
        )

        self._is_connected = False
        self._is_connecting = False
        self._is_closing = False
        self._has_connected = False
        self._fatal_error: BrokerConnectionError | None = None
        self._failed_attempts = 0
        self._next_attempt_at = 0.0
        self._jitter = random.Random()

        self._published = 0
        self._acknowledged = 0
        self._rejected = 0
        self._reconnects = 0
        self._peak_in_flight = 0
        self._started_at: float | None = None
        self._finished_at: float | None = None

    @property
    def address(self) -> str:
        """The broker as host:port, for messages."""
        return f"{self.host}:{self.port}"

    @property
    def in_flight(self) -> int:
        """Messages published and not yet acknowledged or rejected."""
        return self._published - self._acknowledged - self._rejected

    def __enter__(self) -> MqttPublisher:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Connect to the broker and wait for its CONNACK.

        The first connection is not retried, so a wrong address fails at once. A
        publisher connects once; after a failed connect, make a new one.

        Raises:
            BrokerUnreachableError: nothing accepts connections at the address, or
                no CONNACK came within ``connect_timeout_s``.
            BrokerConnectionError: the broker refused the connection.
        """
        try:
            self._client.connect(self.host, self.port, keepalive=self._keepalive_s)
        except OSError as exc:
            self._detach_callbacks()
            raise BrokerUnreachableError(
                f"cannot connect to MQTT broker at {self.address}: "
                f"{_describe_socket_error(exc, self.connect_timeout_s)}"
            ) from exc
        self._is_connecting = True

        deadline = time.monotonic() + self.connect_timeout_s
        try:
            while self._is_connecting and time.monotonic() < deadline:
                self._service(_POLL_S)
        except BrokerConnectionError:
            self._detach_callbacks()
            raise
        if not self._is_connected:
            self._client.disconnect()
            self._detach_callbacks()
            raise BrokerUnreachableError(
                f"MQTT broker at {self.address} sent no CONNACK within "
                f"{self.connect_timeout_s} s; check that the port is an MQTT listener"
            )
        logger.info(
            "connected to MQTT broker at %s (MQTT %s)", self.address, self.protocol
        )

    def publish_stream(
        self,
        messages: Iterable[tuple[str, bytes]],
        *,
        rate_per_s: float | None = None,
        count: int | None = None,
        duration_s: float | None = None,
        stop: threading.Event | None = None,
        drain_timeout_s: float = 10.0,
    ) -> PublishReport:
        """Publish (topic, payload) pairs at QoS 1, then wait for the acknowledgements.

        Publishing ends at the first of: the messages run out, ``count`` messages are
        published, ``duration_s`` passes, or ``stop`` is set. It then waits up to
        ``drain_timeout_s`` seconds for the messages still in flight.

        Args:
            messages: the pairs to publish, consumed lazily.
            rate_per_s: the target rate in messages per second; None or 0 publishes
                as fast as the in-flight window allows.
            count: the maximum number of messages to publish; None for no limit.
            duration_s: the maximum publishing time in seconds; None for no limit.
            stop: an event that ends publishing when set, e.g. by a signal handler.
            drain_timeout_s: seconds to wait for outstanding acknowledgements.

        Raises:
            BrokerConnectionError: the broker refused a reconnect for a reason a
                retry cannot fix, such as bad credentials.
            PublisherError: paho rejected a message.
        """
        limiter = RateLimiter(rate_per_s) if rate_per_s else None
        self._started_at = time.monotonic()
        deadline = None if duration_s is None else self._started_at + duration_s
        source = iter(messages)
        published_here = 0

        while count is None or published_here < count:
            now = time.monotonic()
            if (stop is not None and stop.is_set()) or (
                deadline is not None and now >= deadline
            ):
                break
            if not self._is_connected:
                self._reconnect_when_due()
                continue
            if self.in_flight >= self.window:
                self._service(_POLL_S)
                continue
            if limiter is not None and (delay_s := limiter.delay_s(now)) > 0:
                self._service(min(delay_s, _POLL_S))
                continue
            message = next(source, None)
            if message is None:
                break
            self._publish_one(*message)
            published_here += 1
            if limiter is not None:
                limiter.take(now)

        self._drain(drain_timeout_s)
        self._finished_at = time.monotonic()
        return self.report()

    def report(self) -> PublishReport:
        """Return the counts so far."""
        started = self._started_at
        finished = (
            self._finished_at if self._finished_at is not None else time.monotonic()
        )
        return PublishReport(
            published=self._published,
            acknowledged=self._acknowledged,
            rejected=self._rejected,
            reconnects=self._reconnects,
            elapsed_s=0.0 if started is None else finished - started,
            peak_in_flight=self._peak_in_flight,
        )

    def close(self) -> None:
        """Send DISCONNECT and close the socket; calling it again does nothing."""
        if self._is_closing:
            return
        self._is_closing = True
        if self._is_connected:
            self._client.disconnect()
            # One more loop call writes the DISCONNECT packet, if paho queued it.
            self._client.loop(timeout=0.0)
        self._is_connected = False
        self._detach_callbacks()
        logger.info("disconnected from MQTT broker at %s", self.address)

    def _make_client(
        self, client_id: str, username: str | None, password: str | None
    ) -> mqtt.Client:
        protocol = PROTOCOLS[self.protocol]
        options: dict[str, Any] = {}
        if protocol != mqtt.MQTTv5:
            # MQTT 5 replaces clean_session with clean_start, set on connect.
            options["clean_session"] = True
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            **options,
        )
        client.connect_timeout = self.connect_timeout_s
        client.max_inflight_messages_set(self.window)
        if username is not None:
            client.username_pw_set(username, password)
        client.on_socket_open = _set_tcp_nodelay
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _detach_callbacks(self) -> None:
        # The bound-method callbacks make a reference cycle between this object and
        # the client. Without the cycle the client is freed with the publisher, and
        # its __del__ closes paho's internal socket pair. The cycle collector may
        # instead finalize the sockets first, which then warn that they were unclosed.
        self._client.on_connect = None
        self._client.on_disconnect = None
        self._client.on_publish = None

    def _publish_one(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=QOS)
        # NO_CONN means the connection dropped during the write; paho keeps the
        # message and sends it again after the reconnect.
        if info.rc not in (
            MQTTErrorCode.MQTT_ERR_SUCCESS,
            MQTTErrorCode.MQTT_ERR_NO_CONN,
        ):
            raise PublisherError(
                f"paho rejected a message on {topic!r}: {mqtt.error_string(info.rc)}"
            )
        self._published += 1
        self._peak_in_flight = max(self._peak_in_flight, self.in_flight)
        logger.debug("published mid %d on %s", info.mid, topic)

    def _service(self, timeout_s: float) -> None:
        # Runs paho's network loop once: reads PUBACKs and CONNACKs (which run the
        # callbacks below on this thread), writes queued packets and sends pings.
        self._client.loop(timeout=timeout_s)
        if self._fatal_error is not None:
            raise self._fatal_error

    def _drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.in_flight > 0 and time.monotonic() < deadline:
            if self._is_connected:
                self._service(_POLL_S)
            else:
                self._reconnect_when_due()
        if self.in_flight > 0:
            logger.warning(
                "%d messages to %s are still unacknowledged after %s s; "
                "they are not counted as sent",
                self.in_flight,
                self.address,
                timeout_s,
            )

    def _reconnect_when_due(self) -> None:
        if self._is_connecting:
            self._service(_POLL_S)
            return
        remaining_s = self._next_attempt_at - time.monotonic()
        if remaining_s > 0:
            time.sleep(min(remaining_s, _POLL_S))
            return
        try:
            self._client.reconnect()
        except OSError as exc:
            self._schedule_reconnect(
                _describe_socket_error(exc, self.connect_timeout_s)
            )
            return
        self._is_connecting = True

    def _schedule_reconnect(self, reason: str) -> None:
        # Capped exponential backoff with jitter, so that a fleet of simulators does
        # not reconnect in lockstep after a broker restart.
        self._failed_attempts += 1
        ceiling = min(
            self.backoff_max_s,
            self.backoff_initial_s * 2 ** (self._failed_attempts - 1),
        )
        delay_s = ceiling * self._jitter.uniform(0.5, 1.0)
        self._next_attempt_at = time.monotonic() + delay_s
        # The first failures and then every tenth are logged, to keep a long outage
        # from flooding the log.
        if self._failed_attempts <= 3 or self._failed_attempts % 10 == 0:
            logger.warning(
                "cannot reach MQTT broker at %s (%s, attempt %d); retrying in %.1f s",
                self.address,
                reason,
                self._failed_attempts,
                delay_s,
            )

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._is_connecting = False
        if reason_code.is_failure:
            message = (
                f"MQTT broker at {self.address} refused the connection: {reason_code}"
            )
            # A refused first connection is not retried either.
            if not self._has_connected or reason_code.value in _FATAL_CONNACK_CODES:
                self._fatal_error = BrokerConnectionError(
                    f"{message}; check the user name, password and protocol version"
                )
            else:
                self._schedule_reconnect(str(reason_code))
            return

        self._is_connected = True
        if self._has_connected:
            self._reconnects += 1
            logger.info(
                "reconnected to MQTT broker at %s after %d failed attempts; "
                "%d unacknowledged messages are sent again",
                self.address,
                self._failed_attempts,
                self.in_flight,
            )
        self._has_connected = True
        self._failed_attempts = 0

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._is_connected
        self._is_connected = False
        self._is_connecting = False
        if self._is_closing or self._fatal_error is not None:
            return
        # A refused CONNACK has already scheduled the next attempt.
        if not was_connected and self._next_attempt_at > time.monotonic():
            return
        if was_connected:
            logger.warning(
                "lost the connection to MQTT broker at %s (%s); %d messages in flight",
                self.address,
                reason_code,
                self.in_flight,
            )
        self._schedule_reconnect(str(reason_code))

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._rejected += 1
            if self._rejected <= 3 or self._rejected % 100 == 0:
                logger.warning(
                    "MQTT broker at %s rejected message mid %d: %s (%d rejected)",
                    self.address,
                    mid,
                    reason_code,
                    self._rejected,
                )
            return
        self._acknowledged += 1


def _set_tcp_nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    # paho leaves Nagle's algorithm on, so a small QoS 1 message can wait for the
    # previous PUBACK. On loopback at 2,000 messages/s (paho-mqtt 2.2, Mosquitto
    # 2.0.11) p99 latency was 20 to 30 times higher without TCP_NODELAY.
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _describe_socket_error(exc: OSError, timeout_s: float) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout_s} s"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror})"
    return exc.strerror or str(exc)
