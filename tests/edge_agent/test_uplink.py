"""The uplink: each record once across outages; rejections, 409, token, heartbeat."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from edge_agent.agent import Agent
from edge_agent.errors import StoreReplacedError, UplinkError
from edge_agent.metrics import AgentMetrics
from edge_agent.store import LocalStore
from edge_agent.uplink import Uplink
from tests.conftest import Broker, free_port
from tests.edge_agent.control_plane_stub import StubControlPlane
from tests.edge_agent.harness import (
    TelemetryPublisher,
    count,
    install_model,
    make_settings,
    reading,
    running,
    wait_until,
)


@pytest_asyncio.fixture
async def control_plane() -> AsyncIterator[StubControlPlane]:
    """A stub control plane on a free port, not yet started."""
    stub = StubControlPlane(free_port())
    yield stub
    await stub.stop()


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_uplink_sends_each_record_once_across_outage(
    tmp_path: Path, mosquitto: Broker, model_dir: Path, control_plane: StubControlPlane
) -> None:
    settings = make_settings(
        tmp_path, mosquitto, control_plane_url=control_plane.base_url
    )
    install_model(settings, model_dir)
    database = settings.database_path

    def uploaded(readings: int) -> Callable[[], bool]:
        return lambda: control_plane.unique("readings") == readings

    with TelemetryPublisher(mosquitto) as machine:
        async with running(Agent(settings)):
            # Control plane down from the start: records wait in the store.
            for seq in range(20):
                machine.publish_reading(reading(seq=seq))
            machine.publish(b"not json")
            await wait_until(lambda: count(database, "quarantine") == 1, "21 records")
            await control_plane.start()
            await wait_until(uploaded(20), "the first 20 readings upstream")

            # Down again, with records pending when the agent stops.
            await control_plane.stop()
            for seq in range(20, 30):
                machine.publish_reading(reading(seq=seq))
            await wait_until(lambda: count(database, "readings") == 30, "30 stored")

        # The restarted agent resumes from the cursors stored in SQLite.
        async with running(Agent(settings)):
            await control_plane.start()
            for seq in range(30, 35):
                machine.publish_reading(reading(seq=seq))
            await wait_until(uploaded(35), "all 35 readings upstream")
            await wait_until(
                lambda: control_plane.unique("predictions") == 35, "35 predictions"
            )

    assert control_plane.received == {
        "readings": 35,
        "predictions": 35,
        "quarantine": 1,
        "alerts": 0,
    }
    seqs = sorted(key[1] for key in control_plane.records["readings"])
    assert seqs == sorted(set(seqs))
    assert {key[0] for key in control_plane.records["readings"]} == {"plant-a-agent"}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = LocalStore.open(tmp_path / "agent.sqlite3")
    yield opened
    opened.close()


def add_readings(store: LocalStore, total: int) -> None:
    first = store.last_seq() + 1
    rows = [
        {
            "seq": seq,
            "received_at": "2026-12-04T15:00:00.000+00:00",
            "site": "plant-a",
            "machine_id": "m-001",
            "machine_seq": seq,
            "ts": "2026-12-04T15:00:00.000+00:00",
            "product_type": "L",
            "air_temperature_k": 298.1,
            "process_temperature_k": 308.6,
            "rotational_speed_rpm": 1551.0,
            "torque_nm": 42.8,
            "tool_wear_min": 0.0,
        }
        for seq in range(first, first + total)
    ]
    with store.transaction():
        store.insert_readings(rows)
        store.set_last_seq(first + total - 1)


async def call_here(function: Any, *args: Any) -> Any:
    """Run a store call on the test's own thread, which opened the store."""
    return function(*args)


def make_uplink(
    session: aiohttp.ClientSession,
    store: LocalStore,
    control_plane: StubControlPlane,
    **overrides: Any,
) -> Uplink:
    values: dict[str, Any] = {
        "session": session,
        "control_plane_url": control_plane.base_url,
        "api_token": None,
        "agent_id": "plant-a-agent",
        "site": "plant-a",
        "store": store,
        "run_in_store": call_here,
        "metrics": AgentMetrics(),
        "batch_size": 4,
        "interval_s": 0.05,
        "heartbeat_interval_s": 0.05,
        "status": lambda: {"model_version": 1, "counters": {"readings_stored": 9}},
    }
    values.update(overrides)
    return Uplink(**values)


@pytest.mark.asyncio
async def test_uplink_sends_in_batches_and_moves_cursor(
    store: LocalStore, control_plane: StubControlPlane
) -> None:
    await control_plane.start()
    add_readings(store, 10)

    async with aiohttp.ClientSession() as session:
        uplink = make_uplink(session, store, control_plane)
        results = [await uplink.sync_once() for _ in range(4)]

    assert [result.sent for result in results] == [4, 4, 2, 0]
    assert [result.is_full for result in results] == [True, True, False, False]
    assert store.upload_cursor("readings") == 10
    assert store.backlog()["readings"] == 0
    assert control_plane.received["readings"] == 10


@pytest.mark.asyncio
async def test_uplink_rejected_batch_keeps_records(
    store: LocalStore, control_plane: StubControlPlane
) -> None:
    await control_plane.start()
    add_readings(store, 3)

    async with aiohttp.ClientSession() as session:
        uplink = make_uplink(session, store, control_plane)
        control_plane.ingest_status = 422
        with pytest.raises(UplinkError, match="returned 422: stub says no") as rejected:
            await uplink.sync_once()
        control_plane.ingest_status = 503
        with pytest.raises(UplinkError, match="returned 503") as unavailable:
            await uplink.sync_once()
        cursor_after_failures = store.upload_cursor("readings")
        control_plane.ingest_status = None
        result = await uplink.sync_once()

    assert rejected.value.retryable is False
    assert unavailable.value.retryable is True
    assert cursor_after_failures == 0
    assert result.sent == 3
    assert store.upload_cursor("readings") == 3


@pytest.mark.asyncio
async def test_uplink_connection_refused_is_retryable(
    store: LocalStore, control_plane: StubControlPlane
) -> None:
    add_readings(store, 1)

    async with aiohttp.ClientSession() as session:
        uplink = make_uplink(session, store, control_plane)
        with pytest.raises(UplinkError, match="failed") as refused:
            await uplink.sync_once()

    assert refused.value.retryable is True
    assert refused.value.status is None
    assert store.upload_cursor("readings") == 0


@pytest.mark.asyncio
async def test_uplink_pauses_when_store_replaced(
    tmp_path: Path,
    store: LocalStore,
    control_plane: StubControlPlane,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await control_plane.start()
    replaced = LocalStore.open(tmp_path / "replaced.sqlite3")
    add_readings(store, 2)
    add_readings(replaced, 2)

    async with aiohttp.ClientSession() as session:
        await make_uplink(session, store, control_plane).sync_once()
        uplink = make_uplink(session, replaced, control_plane)
        with pytest.raises(StoreReplacedError, match="another store id"):
            await uplink.sync_once()
        with caplog.at_level(logging.ERROR, logger="edge_agent.uplink"):
            task = asyncio.create_task(uplink.run())
            await wait_until(lambda: uplink.is_paused, "the uplink to pause")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    replaced.close()

    assert "sync paused until the agent restarts" in caplog.text
    assert control_plane.received["readings"] == 2


@pytest.mark.asyncio
async def test_uplink_sends_token_and_heartbeat(
    store: LocalStore, control_plane: StubControlPlane
) -> None:
    await control_plane.start()
    add_readings(store, 2)

    async with aiohttp.ClientSession() as session:
        uplink = make_uplink(session, store, control_plane, api_token="t0ken")
        await uplink.sync_once()
        await uplink.send_heartbeat()

    heartbeat = control_plane.heartbeats[0]
    assert control_plane.authorization == ["Bearer t0ken", "Bearer t0ken"]
    assert heartbeat["agent_id"] == "plant-a-agent"
    assert heartbeat["store_id"] == store.store_id
    assert heartbeat["model_version"] == 1
    assert heartbeat["backlog"] == {
        "readings": 0,
        "predictions": 0,
        "quarantine": 0,
        "alerts": 0,
    }
    assert heartbeat["counters"] == {"readings_stored": 9}
    assert set(heartbeat) >= {"site", "sent_at", "started_at"}
