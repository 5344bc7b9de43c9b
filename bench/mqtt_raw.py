"""Raw QoS 1 rate of an MQTT broker on loopback: one publisher, one counting subscriber.

Run: ``.venv/bin/python bench/mqtt_raw.py [--count 20000] [--runs 3]`` to start a
private Mosquitto configured like the edge deployment (TCP_NODELAY, no queue limit),
or add ``--host``/``--port`` to measure a broker that is already running. The
publisher is the simulators' MqttPublisher with 20 messages in flight. The subscriber
runs in its own process, so the two clients do not share one interpreter lock.
Prints the messages per second of each run and their median.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker import private_mosquitto

# The subscriber process gives up after this long, so no run can hang.
SUBSCRIBER_TIMEOUT_S = 120.0
_READY = "ready"


def measure_raw_rate(host: str, port: int, count: int) -> float:
    """Return the messages per second from first publish to last delivery.

    One MqttPublisher publishes ``count`` reading-sized payloads at QoS 1 as fast as
    its in-flight window allows. A subscriber in a child process counts them at QoS 1
    on a topic no other client uses.

    Raises:
        RuntimeError: the subscriber did not get ready or missed messages.
    """
    # Imported here, not at the top: the subscriber child runs this file with only
    # paho, from wherever the interpreter finds it.
    from simulators.publisher import MqttPublisher

    site = f"bench-{uuid.uuid4().hex[:8]}"
    topic = f"edgepm/{site}/m-001/telemetry"
    subscriber = subprocess.Popen(
        [sys.executable, __file__, "--subscribe", topic, "--host", host,
         "--port", str(port), "--count", str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert subscriber.stdout is not None
        # The child prints "ready" after its SUBACK, or exits within its timeout.
        if subscriber.stdout.readline().strip() != _READY:
            raise RuntimeError(f"the subscriber on {host}:{port} did not get ready")

        payload = _reading_payload(site)
        with MqttPublisher(host=host, port=port) as publisher:
            # time.monotonic is CLOCK_MONOTONIC on Linux, shared by all processes, so
            # the child's delivery time compares with this start time.
            started = time.monotonic()
            report = publisher.publish_stream((topic, payload) for _ in range(count))
        received, last_at = subscriber.stdout.readline().split()
        subscriber.wait(timeout=SUBSCRIBER_TIMEOUT_S)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait(timeout=10)

    if report.acknowledged != count or int(received) != count:
        raise RuntimeError(
            f"{host}:{port} acknowledged {report.acknowledged} and delivered "
            f"{received} of {count} messages; check the broker's max_queued_messages"
        )
    return count / (float(last_at) - started)


def _reading_payload(site: str) -> bytes:
    from edge_agent.reading import Reading
    from simulators.fleet import encode_reading, utc_timestamp

    reading = Reading(
        site, "m-001", utc_timestamp(), 0, "M", 298.1, 308.6, 1551.0, 42.8, 0.0
    )
    return encode_reading(reading)


def _count_messages(host: str, port: int, topic: str, count: int) -> None:
    # Runs in the child process: print "ready" once subscribed, then
    # "<received> <monotonic time of the last message>" when done or timed out.
    received = 0
    last_at = 0.0
    subscribed = threading.Event()
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, message: object) -> None:
        nonlocal received, last_at
        received += 1
        last_at = time.monotonic()
        if received >= count:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_connect = lambda c, *args: c.subscribe(topic, qos=1)
    client.on_socket_open = lambda c, u, sock: sock.setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )
    client.connect(host, port)
    client.loop_start()
    try:
        if subscribed.wait(timeout=10):
            print(_READY, flush=True)
            done.wait(timeout=SUBSCRIBER_TIMEOUT_S)
        print(received, last_at, flush=True)
    finally:
        client.disconnect()
        client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, help="a running broker; default: a private one"
    )
    parser.add_argument("--count", type=int, default=20_000, help="messages per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--subscribe", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.subscribe:
        _count_messages(args.host, args.port, args.subscribe, args.count)
        return

    with contextlib.ExitStack() as stack:
        port = args.port or stack.enter_context(private_mosquitto())
        rates = []
        for run in range(1, args.runs + 1):
            rate = measure_raw_rate(args.host, port, args.count)
            rates.append(rate)
            print(f"run {run}: {args.count} messages at QoS 1, {rate:,.0f} messages/s")
    print(f"median: {statistics.median(rates):,.0f} messages/s")


if __name__ == "__main__":
    main()
