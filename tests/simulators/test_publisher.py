"""The MQTT publisher: pacing, the in-flight window, reconnects and broker errors."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.reading import telemetry_subscription, telemetry_topic
from simulators.publisher import (
    DEFAULT_WINDOW,
    BrokerConnectionError,
    BrokerUnreachableError,
    MqttPublisher,
    RateLimiter,
)
from tests.conftest import Broker, free_port
from tests.simulators.brokers import (
    PASSWORD,
    USERNAME,
    amqtt_broker,
    mosquitto_with_password,
)
from tests.simulators.subscriber import subscribe

SITE = "plant-a"


@pytest.fixture(scope="module")
def amqtt_port() -> Iterator[int]:
    """An embedded amqtt broker shared by this module's tests; its shutdown is slow."""
    with amqtt_broker() as port:
        yield port


def numbered(
    count: int | None = None, machine: str = "m-001"
) -> Iterator[tuple[str, bytes]]:
    """Yield (topic, payload) pairs whose payload is the message number."""
    numbers = range(count) if count is not None else itertools.count()
    for number in numbers:
        yield telemetry_topic(SITE, machine), str(number).encode()


def test_rate_limiter_spaces_events() -> None:
    limiter = RateLimiter(10.0)

    assert limiter.delay_s(100.0) == 0.0
    limiter.take(100.0)
    assert limiter.delay_s(100.0) == pytest.approx(0.1)
    assert limiter.delay_s(100.05) == pytest.approx(0.05)
    limiter.take(100.1)
    assert limiter.delay_s(100.1) == pytest.approx(0.1)


def test_rate_limiter_bounds_catch_up_burst() -> None:
    limiter = RateLimiter(10.0, max_lag_s=1.0)
    limiter.take(100.0)

    # Five seconds late, the limiter lets through one second's worth and no more.
    burst = 0
    while limiter.delay_s(105.0) == 0.0 and burst < 1_000:
        limiter.take(105.0)
        burst += 1

    assert burst == 11


def test_rate_limiter_rejects_zero_rate() -> None:
    with pytest.raises(ValueError, match="rate_per_s is 0; expected a positive rate"):
        RateLimiter(0)


def test_publisher_rejects_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="protocol is '4'; expected one of 5, 3.1.1"):
        MqttPublisher(host="127.0.0.1", port=1883, protocol="4")


def test_publisher_unreachable_broker_raises() -> None:
    port = free_port()
    publisher = MqttPublisher(host="127.0.0.1", port=port)

    expected = (
        rf"^cannot connect to MQTT broker at 127\.0\.0\.1:{port}: connection refused$"
    )

    with pytest.raises(BrokerUnreachableError, match=expected):
        publisher.connect()


@pytest.mark.mqtt
def test_publisher_burst_arrives_complete(mosquitto: Broker) -> None:
    with subscribe(mosquitto.host, mosquitto.port, telemetry_subscription(SITE)) as sub:
        with MqttPublisher(host=mosquitto.host, port=mosquitto.port) as publisher:
            report = publisher.publish_stream(numbered(5_000))
        received = sub.wait_for(5_000)

    assert report.published == 5_000
    assert report.acknowledged == 5_000
    assert report.unacknowledged == 0
    assert report.peak_in_flight <= DEFAULT_WINDOW
    assert sorted(int(payload) for _, payload in received) == list(range(5_000))


@pytest.mark.mqtt
def test_publisher_stops_at_count(mosquitto: Broker) -> None:
    with MqttPublisher(host=mosquitto.host, port=mosquitto.port) as publisher:
        report = publisher.publish_stream(numbered(), count=300)

    assert report.published == 300
    assert report.acknowledged == 300


@pytest.mark.mqtt
def test_publisher_stops_after_duration(mosquitto: Broker) -> None:
    with MqttPublisher(host=mosquitto.host, port=mosquitto.port) as publisher:
        report = publisher.publish_stream(numbered(), rate_per_s=200.0, duration_s=0.3)

    assert report.published > 0
    assert report.acknowledged == report.published


@pytest.mark.mqtt
def test_publisher_stops_on_event(mosquitto: Broker) -> None:
    stop = threading.Event()
    stop.set()

    with MqttPublisher(host=mosquitto.host, port=mosquitto.port) as publisher:
        report = publisher.publish_stream(numbered(), stop=stop)

    assert report.published == 0


@pytest.mark.mqtt
def test_publisher_reconnects_after_broker_restart(mosquitto: Broker) -> None:
    restarter = threading.Timer(0.5, mosquitto.restart)
    publisher = MqttPublisher(
        host=mosquitto.host,
        port=mosquitto.port,
        backoff_initial_s=0.1,
        backoff_max_s=0.5,
    )

    with publisher:
        restarter.start()
        try:
            report = publisher.publish_stream(
                numbered(1_500), rate_per_s=500.0, drain_timeout_s=20.0
            )
        finally:
            restarter.join(timeout=30)

    assert report.reconnects >= 1
    assert report.published == 1_500
    assert report.acknowledged == 1_500


@pytest.mark.mqtt
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_publisher_speaks_both_protocols(mosquitto: Broker, protocol: str) -> None:
    with subscribe(mosquitto.host, mosquitto.port, telemetry_subscription(SITE)) as sub:
        publisher = MqttPublisher(
            host=mosquitto.host, port=mosquitto.port, protocol=protocol
        )
        with publisher:
            report = publisher.publish_stream(numbered(200))
        received = sub.wait_for(200)

    assert report.acknowledged == 200
    assert len(received) == 200


def test_publisher_mqtt311_reaches_amqtt(amqtt_port: int) -> None:
    publisher = MqttPublisher(host="127.0.0.1", port=amqtt_port, protocol="3.1.1")
    with publisher:
        report = publisher.publish_stream(numbered(300))

    assert report.acknowledged == 300


def test_publisher_mqtt5_on_amqtt_is_refused(amqtt_port: int) -> None:
    publisher = MqttPublisher(host="127.0.0.1", port=amqtt_port, protocol="5")

    with pytest.raises(BrokerConnectionError, match="Unsupported protocol version"):
        publisher.connect()


@pytest.mark.mqtt
def test_publisher_wrong_password_is_refused(tmp_path: Path) -> None:
    with mosquitto_with_password(tmp_path / "broker") as port:
        publisher = MqttPublisher(
            host="127.0.0.1", port=port, username=USERNAME, password="wrong"
        )

        with pytest.raises(
            BrokerConnectionError, match="refused the connection: Not authorized"
        ):
            publisher.connect()


@pytest.mark.mqtt
def test_publisher_counts_denied_publishes(tmp_path: Path) -> None:
    denied = (("forbidden/topic", b"x") for _ in range(5))
    allowed = numbered(5)

    with mosquitto_with_password(tmp_path / "broker") as port:
        publisher = MqttPublisher(
            host="127.0.0.1", port=port, username=USERNAME, password=PASSWORD
        )
        with publisher:
            report = publisher.publish_stream(itertools.chain(allowed, denied))

    assert report.published == 10
    assert report.acknowledged == 5
    assert report.rejected == 5
    assert report.unacknowledged == 0
