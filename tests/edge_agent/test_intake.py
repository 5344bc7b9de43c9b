"""The MQTT intake: backpressure at capacity, redelivery of unacknowledged messages."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from edge_agent.intake import Delivery, MqttIntake
from edge_agent.metrics import AgentMetrics
from tests.conftest import Broker
from tests.edge_agent.harness import SITE, TelemetryPublisher, reading, wait_until


def make_intake(
    broker: Broker, queue: asyncio.Queue[Delivery], metrics: AgentMetrics, capacity: int
) -> MqttIntake:
    return MqttIntake(
        host=broker.host,
        port=broker.port,
        protocol="5",
        client_id="intake-under-test",
        username=None,
        password=None,
        site=SITE,
        receive_maximum=100,
        session_expiry_s=600,
        queue=queue,
        loop=asyncio.get_running_loop(),
        metrics=metrics,
        capacity=capacity,
    )


def machine_seq(delivery: Delivery) -> int:
    return int(json.loads(delivery.payload)["seq"])


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_intake_pauses_at_capacity_and_resumes(mosquitto: Broker) -> None:
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    metrics = AgentMetrics()
    intake = make_intake(mosquitto, queue, metrics, capacity=5)
    intake.start()
    try:
        await wait_until(lambda: intake.is_connected, "the subscription")
        with TelemetryPublisher(mosquitto) as machine:
            machine.publish_readings([reading(seq=seq) for seq in range(12)])
        waits = "edgepm_agent_intake_waits_total"
        await wait_until(
            lambda: metrics.registry.get_sample_value(waits) == 1, "the reader to pause"
        )
        # Let the event loop take over what paho's thread handed it before pausing.
        await asyncio.sleep(0.1)
        held_while_paused = queue.qsize()

        received = []
        while len(received) < 12:
            async with asyncio.timeout(10):
                delivery = await queue.get()
            received.append(machine_seq(delivery))
            intake.acknowledge(delivery)
        sock = intake._client.socket()
        nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) if sock else 0
    finally:
        await intake.stop()

    assert held_while_paused == 5
    assert received == list(range(12))
    assert nodelay == 1


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_intake_unacknowledged_messages_come_again(mosquitto: Broker) -> None:
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    first = make_intake(mosquitto, queue, AgentMetrics(), capacity=50)
    first.start()
    try:
        await wait_until(lambda: first.is_connected, "the subscription")
        with TelemetryPublisher(mosquitto) as machine:
            machine.publish_readings([reading(seq=seq) for seq in range(4)])
        await wait_until(lambda: queue.qsize() == 4, "4 deliveries")
        for _ in range(2):
            first.acknowledge(queue.get_nowait())  # seq 0 and 1 are done
        # paho writes packets in order, so both PUBACKs precede the DISCONNECT.
    finally:
        await first.stop()
    while not queue.empty():
        queue.get_nowait()  # seq 2 and 3: held, never acknowledged

    second = make_intake(mosquitto, queue, AgentMetrics(), capacity=50)
    second.start()
    try:
        await wait_until(lambda: queue.qsize() == 2, "the 2 redelivered messages")
        redelivered = [machine_seq(queue.get_nowait()) for _ in range(2)]
    finally:
        await second.stop()

    assert redelivered == [2, 3]
