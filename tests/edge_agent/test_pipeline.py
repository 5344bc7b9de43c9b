"""The pipeline: quarantine, duplicates, micro-batches and a locked store."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent
from edge_agent.alerts import AlertPolicy
from edge_agent.intake import Delivery
from edge_agent.metrics import AgentMetrics
from edge_agent.pipeline import Pipeline
from edge_agent.reading import EXCERPT_BYTES, telemetry_topic
from edge_agent.scorer import OnnxScorer
from edge_agent.store import LocalStore
from tests.conftest import Broker
from tests.edge_agent.harness import (
    SITE,
    TelemetryPublisher,
    count,
    encode,
    install_model,
    make_settings,
    query,
    reading,
    running,
    sample,
    wait_until,
)

QUARANTINED = "edgepm_agent_readings_quarantined_total"


def without(field: str) -> bytes:
    document = reading()
    del document[field]
    return encode(document)


def with_token(token: str) -> bytes:
    return encode(reading(torque_nm=42.8)).replace(b"42.8", token.encode())


BAD_PAYLOADS = [
    pytest.param(b"{not json", "not_json", r"payload is not JSON", id="not-json"),
    pytest.param(b'\xff{"site": 1}', "not_utf8", r"not UTF-8", id="not-utf8"),
    pytest.param(b"[1, 2, 3]", "not_object", r"JSON array, expected", id="json-array"),
    pytest.param(
        without("torque_nm"), "missing_field", r"'torque_nm' is missing", id="missing"
    ),
    pytest.param(
        encode(reading(torque_nm="42.8")),
        "not_a_number",
        r"'torque_nm' is '42.8'; expected a number",
        id="string-number",
    ),
    pytest.param(with_token("NaN"), "non_finite", r"token NaN", id="nan"),
    pytest.param(
        with_token("Infinity"), "non_finite", r"token Infinity", id="infinity"
    ),
    pytest.param(
        encode(reading(torque_nm=-5.0)),
        "out_of_range",
        r"'torque_nm' is -5.0, outside the physical range",
        id="negative-torque",
    ),
    pytest.param(
        encode(reading(air_temperature_k=25.0)),
        "looks_celsius",
        r"looks like degrees Celsius",
        id="celsius",
    ),
    pytest.param(
        encode(reading(product_type="X")),
        "invalid_product_type",
        r"'product_type' is 'X'",
        id="product-type",
    ),
    pytest.param(
        encode(reading(ts="2026-12-04T15:00:00")),
        "invalid_timestamp",
        r"no UTC offset",
        id="no-offset",
    ),
    pytest.param(
        encode({**reading(), "seq": 10**30}),
        "invalid_seq",
        r"'seq' is 1000000000000000000000000000000; expected",
        id="huge-seq",
    ),
    pytest.param(b"", "not_json", r"payload is empty", id="empty"),
    pytest.param(
        b'{"pad": "' + b"x" * 1_000_000 + b'"}',
        "too_large",
        r"payload is 1000011 bytes, over the limit",
        id="one-megabyte",
    ),
]


@pytest.mark.mqtt
@pytest.mark.asyncio
@pytest.mark.parametrize(("payload", "reason", "message"), BAD_PAYLOADS)
async def test_pipeline_quarantines_bad_payload_and_goes_on(
    tmp_path: Path,
    mosquitto: Broker,
    model_dir: Path,
    payload: bytes,
    reason: str,
    message: str,
) -> None:
    settings = make_settings(tmp_path, mosquitto)
    install_model(settings, model_dir)
    database = settings.database_path

    with TelemetryPublisher(mosquitto) as machine:
        async with running(Agent(settings)) as agent:
            machine.publish(payload, machine="m-001")
            machine.publish_reading(reading("m-001", seq=1))
            await wait_until(
                lambda: count(database, "predictions") == 1, "the good reading"
            )
            assert agent.readiness() == []
            quarantined = sample(agent, QUARANTINED, reason=reason)

    rows = query(
        database, "SELECT seq, topic, reason, excerpt, size_bytes FROM quarantine"
    )
    assert len(rows) == 1
    seq, topic, stored_reason, excerpt, size_bytes = rows[0]
    assert topic == telemetry_topic(SITE, "m-001")
    assert re.search(message, stored_reason), stored_reason
    assert size_bytes == len(payload)
    # Bounded even for 1 MB: each byte shows as at most 4 characters (\xff), plus
    # a note of the total size.
    assert len(excerpt) <= EXCERPT_BYTES * 4 + 40
    assert quarantined == 1
    assert query(database, "SELECT seq, machine_seq FROM readings") == [(seq + 1, 1)]


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_pipeline_stores_duplicate_reading_once(
    tmp_path: Path, mosquitto: Broker, model_dir: Path
) -> None:
    settings = make_settings(tmp_path, mosquitto)
    install_model(settings, model_dir)
    database = settings.database_path

    with TelemetryPublisher(mosquitto) as machine:
        async with running(Agent(settings)) as agent:
            for document in (reading(seq=4), reading(seq=4), reading(seq=5)):
                machine.publish_reading(document)
            await wait_until(
                lambda: sample(agent, "edgepm_agent_batch_size_sum") == 3,
                "all three messages",
            )
            duplicates = sample(agent, "edgepm_agent_readings_duplicate_total")

    assert query(database, "SELECT machine_seq FROM readings ORDER BY seq") == [
        (4,),
        (5,),
    ]
    assert count(database, "predictions") == 2
    assert duplicates == 1


def delivery(seq: int, mid: int) -> Delivery:
    return Delivery(
        topic=telemetry_topic(SITE, "m-001"),
        payload=encode(reading(seq=seq)),
        mid=mid,
        qos=1,
        connection=1,
        received_at=time.time(),
    )


@pytest.mark.asyncio
async def test_pipeline_batches_what_is_queued(tmp_path: Path, model_dir: Path) -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()

    async def in_store(function: Any, *args: Any) -> Any:
        return await loop.run_in_executor(executor, function, *args)

    store = await in_store(LocalStore.open, tmp_path / "agent.sqlite3")
    scorer = await in_store(OnnxScorer, model_dir)
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    for position in range(300):
        queue.put_nowait(delivery(position, mid=position + 1))
    acked: list[int] = []
    metrics = AgentMetrics()
    pipeline = Pipeline(
        queue=queue,
        store=store,
        scorer=scorer,
        run_in_store=in_store,
        ack=lambda item: acked.append(item.mid),
        metrics=metrics,
        alert_policy=AlertPolicy(threshold=0.9, clear_ratio=0.5, clear_count=3),
        batch_max=256,
        batch_wait_s=0.01,
        receive_window=1000,
    )
    task = asyncio.create_task(pipeline.run())
    try:
        assert await pipeline.drain(10.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    last_seq = await in_store(store.last_seq)
    await in_store(store.close)
    executor.shutdown()

    registry = metrics.registry
    bucket = "edgepm_agent_batch_size_bucket"
    assert registry.get_sample_value("edgepm_agent_batch_size_count") == 2
    assert registry.get_sample_value("edgepm_agent_batch_size_sum") == 300
    assert registry.get_sample_value(bucket, {"le": "128.0"}) == 1  # the 44 left over
    assert registry.get_sample_value(bucket, {"le": "256.0"}) == 2  # and the full 256
    assert acked == list(range(1, 301))
    assert last_seq == 300


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_pipeline_waits_out_a_locked_store(
    tmp_path: Path, mosquitto: Broker, model_dir: Path
) -> None:
    settings = make_settings(tmp_path, mosquitto)
    install_model(settings, model_dir)
    database = settings.database_path

    with TelemetryPublisher(mosquitto) as machine:
        async with running(Agent(settings)) as agent:
            # Another process holds the write lock, as a backup tool might.
            blocker = sqlite3.connect(database, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                for seq in range(3):
                    machine.publish_reading(reading(seq=seq))
                await wait_until(
                    lambda: any("not writable" in r for r in agent.readiness()),
                    "readiness to report the store",
                )
                assert count(database, "readings") == 0
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            await wait_until(lambda: count(database, "readings") == 3, "3 readings")
            await agent.wait_ready(15)
            errors = sample(agent, "edgepm_agent_store_errors_total")

    assert errors >= 1
    assert count(database, "predictions") == 3


class FailingScorer:
    """A scorer that fails on one machine's readings, as a defect might."""

    def __init__(self, scorer: OnnxScorer, machine: str) -> None:
        self._scorer = scorer
        self._machine = machine
        self.manifest = scorer.manifest

    def score(self, readings: list[Any]) -> list[Any]:
        if any(item.machine_id == self._machine for item in readings):
            raise RuntimeError(f"cannot score {self._machine}")
        return self._scorer.score(readings)


@pytest.mark.asyncio
async def test_pipeline_quarantines_unprocessable_message(
    tmp_path: Path, model_dir: Path
) -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()

    async def in_store(function: Any, *args: Any) -> Any:
        return await loop.run_in_executor(executor, function, *args)

    store = await in_store(LocalStore.open, tmp_path / "agent.sqlite3")
    scorer = FailingScorer(await in_store(OnnxScorer, model_dir), "m-bad")
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    queue.put_nowait(delivery(0, mid=1))
    bad = Delivery(
        topic=telemetry_topic(SITE, "m-bad"),
        payload=encode(reading(machine="m-bad", seq=0)),
        mid=2,
        qos=1,
        connection=1,
        received_at=time.time(),
    )
    queue.put_nowait(bad)
    queue.put_nowait(delivery(1, mid=3))
    acked: list[int] = []
    pipeline = Pipeline(
        queue=queue,
        store=store,
        scorer=scorer,  # type: ignore[arg-type]
        run_in_store=in_store,
        ack=lambda item: acked.append(item.mid),
        metrics=AgentMetrics(),
        alert_policy=AlertPolicy(threshold=0.9, clear_ratio=0.5, clear_count=3),
        batch_max=256,
        batch_wait_s=0.05,
        receive_window=1000,
    )
    task = asyncio.create_task(pipeline.run())
    try:
        assert await pipeline.drain(10.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    database = store.path
    await in_store(store.close)
    executor.shutdown()

    assert sorted(acked) == [1, 2, 3]
    assert count(database, "readings") == 2
    reasons = query(database, "SELECT reason FROM quarantine")
    assert len(reasons) == 1
    assert (
        "could not process this payload (RuntimeError: cannot score m-bad)"
        in (reasons[0][0])
    )
