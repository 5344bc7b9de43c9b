"""Replay: how rows are dealt to machines, and publishing them through Mosquitto."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from edge_agent.reading import (
    MEASUREMENT_FIELDS,
    parse_reading,
    telemetry_subscription,
    telemetry_topic,
)
from simulators.ai4i import load_ai4i_rows
from simulators.fleet import encode_reading
from simulators.publisher import MqttPublisher
from simulators.replay import plan_replay
from tests.conftest import Broker
from tests.simulators.subscriber import subscribe

TS = "2026-12-04T15:00:00.000+00:00"
PAYLOAD_KEYS = {"site", "machine_id", "ts", "seq", "product_type", *MEASUREMENT_FIELDS}


@pytest.mark.parametrize("machines", [1, 7, 20])
def test_plan_replay_deals_rows_in_udi_order(ai4i_csv: Path, machines: int) -> None:
    rows = load_ai4i_rows(ai4i_csv, limit=2_000)
    by_udi = {row.udi: row for row in rows}
    shuffled = random.Random(5).sample(rows, len(rows))

    plan = list(
        plan_replay(shuffled, machines=machines, site="plant-a", clock=lambda: TS)
    )

    assert len(plan) == 2_000
    for index, (topic, reading) in enumerate(plan):
        row = by_udi[index + 1]
        expected_machine = f"m-{index % machines + 1:03d}"
        assert reading.machine_id == expected_machine
        assert reading.machine_seq == index // machines
        assert topic == telemetry_topic("plant-a", expected_machine)
        assert reading.product_type == row.product_type
        for name in MEASUREMENT_FIELDS:
            assert getattr(reading, name) == getattr(row, name), (index, name)


def test_plan_replay_counts_seq_per_machine(ai4i_csv: Path) -> None:
    rows = load_ai4i_rows(ai4i_csv, limit=100)

    plan = list(plan_replay(rows, machines=3, site="plant-a", clock=lambda: TS))

    seqs: dict[str, list[int]] = {}
    for _, reading in plan:
        seqs.setdefault(reading.machine_id, []).append(reading.machine_seq)
    assert sorted(seqs) == ["m-001", "m-002", "m-003"]
    assert seqs["m-001"] == list(range(34))
    assert seqs["m-003"] == list(range(33))


def test_plan_replay_stamps_site_and_clock(ai4i_csv: Path) -> None:
    rows = load_ai4i_rows(ai4i_csv, limit=3)
    stamps = iter(["t0", "t1", "t2"])

    plan = list(
        plan_replay(rows, machines=2, site="plant-b", clock=lambda: next(stamps))
    )

    assert [reading.ts for _, reading in plan] == ["t0", "t1", "t2"]
    assert {reading.site for _, reading in plan} == {"plant-b"}


def test_plan_replay_payload_carries_no_targets(ai4i_csv: Path) -> None:
    rows = load_ai4i_rows(ai4i_csv, limit=50)

    for topic, reading in plan_replay(rows, machines=5, site="plant-a"):
        payload = encode_reading(reading)
        assert set(reading.to_payload()) == PAYLOAD_KEYS
        assert b"Target" not in payload
        assert b"Failure" not in payload
        parse_reading(payload, topic)


def test_plan_replay_rejects_zero_machines(ai4i_csv: Path) -> None:
    rows = load_ai4i_rows(ai4i_csv, limit=3)

    with pytest.raises(ValueError, match="machines is 0; expected 1 or more"):
        list(plan_replay(rows, machines=0, site="plant-a"))


@pytest.mark.mqtt
def test_replay_reaches_subscriber_complete(ai4i_csv: Path, mosquitto: Broker) -> None:
    rows = load_ai4i_rows(ai4i_csv, limit=2_000)
    plan = list(plan_replay(rows, machines=20, site="plant-a"))
    expected = {
        (reading.machine_id, reading.machine_seq): reading for _, reading in plan
    }

    with subscribe(
        mosquitto.host, mosquitto.port, telemetry_subscription("plant-a")
    ) as sub:
        with MqttPublisher(host=mosquitto.host, port=mosquitto.port) as publisher:
            report = publisher.publish_stream(
                (topic, encode_reading(reading)) for topic, reading in plan
            )
        received = sub.wait_for(2_000)

    assert report.published == 2_000
    assert report.acknowledged == 2_000
    assert len(received) == 2_000
    parsed = [parse_reading(payload, topic) for topic, payload in received]
    assert {(reading.machine_id, reading.machine_seq) for reading in parsed} == set(
        expected
    )
    for reading in parsed:
        assert reading == expected[(reading.machine_id, reading.machine_seq)]
