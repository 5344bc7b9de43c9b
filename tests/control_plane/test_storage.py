"""Storage tests, run with the same cases on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from control_plane.storage import (
    InvalidRequestError,
    NotFoundError,
    SchemaVersionError,
    Storage,
    StorageError,
    StoreIdConflictError,
    open_storage,
)
from control_plane.storage.records import IngestBatch, ModelVersion
from tests.control_plane.factories import (
    START,
    dump_tables,
    make_batch,
    make_heartbeat,
    make_prediction,
    make_reading,
)


def accepted_model(version: int, sha256: str = "ab" * 32) -> ModelVersion:
    return ModelVersion(
        version=version,
        created_at=START,
        status="accepted",
        sha256=sha256,
        manifest={"format": "edgepm-model/1", "version": version},
        metrics={"f1": 0.8},
        path=f"/models/v{version}",
    )


def test_storage_migrate_is_idempotent(storage: Storage, database_url: str) -> None:
    assert storage.migrate() == 1
    assert storage.migrate() == 1

    assert all(rows == [] for rows in dump_tables(database_url).values())


def test_storage_ingest_counts_inserted_rows(storage: Storage) -> None:
    result = storage.ingest(make_batch())

    assert result.inserted == {
        "readings": 4,
        "predictions": 4,
        "quarantine": 1,
        "alerts": 1,
    }
    assert result.duplicates == {
        "readings": 0,
        "predictions": 0,
        "quarantine": 0,
        "alerts": 0,
    }


def test_storage_replay_changes_nothing(storage: Storage, database_url: str) -> None:
    storage.ingest(make_batch(), now=START)
    before = dump_tables(database_url)

    result = storage.ingest(make_batch(), now=START + dt.timedelta(minutes=5))

    assert result.inserted == {
        "readings": 0,
        "predictions": 0,
        "quarantine": 0,
        "alerts": 0,
    }
    assert result.duplicates == {
        "readings": 4,
        "predictions": 4,
        "quarantine": 1,
        "alerts": 1,
    }
    assert dump_tables(database_url) == before


def test_storage_partial_replay_inserts_new_rows(storage: Storage) -> None:
    batch = make_batch()
    storage.ingest(batch)
    extended = dataclasses.replace(
        batch,
        readings=(*batch.readings, make_reading(7, minute=2)),
        predictions=(*batch.predictions, make_prediction(7, 0.4)),
    )

    result = storage.ingest(extended)

    assert result.inserted["readings"] == 1
    assert result.duplicates["readings"] == 4
    assert result.inserted["predictions"] == 1


def test_storage_store_id_change_stores_nothing(
    storage: Storage, database_url: str
) -> None:
    storage.ingest(make_batch(store_id="store-1"))
    before = dump_tables(database_url)
    fresh = dataclasses.replace(
        make_batch(store_id="store-2"), readings=(make_reading(99, minute=9),)
    )

    with pytest.raises(StoreIdConflictError, match="known with store_id 'store-1'"):
        storage.ingest(fresh)
    with pytest.raises(StoreIdConflictError, match="new agent id"):
        storage.record_heartbeat(make_heartbeat(store_id="store-2"))
    assert dump_tables(database_url) == before


def test_storage_heartbeat_upserts_agent(storage: Storage) -> None:
    first = storage.record_heartbeat(make_heartbeat(), now=START)
    second = storage.record_heartbeat(
        dataclasses.replace(make_heartbeat(), model_version=2, backlog={"readings": 0}),
        now=START + dt.timedelta(seconds=10),
    )

    agents = storage.list_agents()
    assert [agent.agent_id for agent in agents] == ["plant-a-agent"]
    assert agents[0] == second
    assert second.first_seen_at == first.first_seen_at == START
    assert second.last_heartbeat_at == START + dt.timedelta(seconds=10)
    assert second.model_version == 2
    assert second.backlog == {"readings": 0}
    assert second.counters == {"readings_stored": 2000, "readings_quarantined": 11}


def test_storage_agent_status_follows_heartbeat_age(storage: Storage) -> None:
    agent = storage.record_heartbeat(make_heartbeat(), now=START)

    assert agent.is_up(START + dt.timedelta(seconds=30), stale_s=30)
    assert not agent.is_up(START + dt.timedelta(seconds=31), stale_s=30)


def test_storage_ingest_alone_registers_agent_down(storage: Storage) -> None:
    storage.ingest(make_batch(), now=START)

    (agent,) = storage.list_agents()
    assert agent.store_id == "store-1"
    assert agent.last_heartbeat_at is None
    assert not agent.is_up(START, stale_s=30)


def test_storage_machine_risk_takes_latest_scored_reading(storage: Storage) -> None:
    storage.ingest(make_batch())
    later = IngestBatch(
        agent_id="plant-a-agent",
        site="plant-a",
        store_id="store-1",
        readings=(make_reading(10, machine_id="m-002", minute=5),),
        # m-002's newest reading is not scored yet, and m-001's reading 3 gets a
        # second opinion from a newer model version.
        predictions=(make_prediction(3, 0.6, model_version=2),),
    )
    storage.ingest(later)

    machines = storage.list_machine_risk()

    assert [(m.machine_id, m.failure_probability) for m in machines] == [
        ("m-001", 0.6),
        ("m-002", 0.05),
    ]
    assert machines[0].model_version == 2
    assert machines[0].risk_band == "high"
    assert machines[1].last_reading_at == START + dt.timedelta(minutes=5)
    assert machines[1].scored_reading_at == START + dt.timedelta(minutes=1)


def test_storage_machine_risk_lists_unscored_last(storage: Storage) -> None:
    batch = dataclasses.replace(make_batch(), predictions=(make_prediction(2, 0.2),))
    storage.ingest(batch)

    machines = storage.list_machine_risk()

    assert [m.machine_id for m in machines] == ["m-002", "m-001"]
    assert machines[1].failure_probability is None
    assert machines[1].risk_band is None


def test_storage_late_batch_keeps_newest_machine_state(storage: Storage) -> None:
    newer = IngestBatch(
        agent_id="agent-new",
        site="plant-a",
        store_id="store-9",
        readings=(make_reading(1, machine_id="m-001", minute=30),),
    )
    storage.ingest(newer)
    storage.ingest(make_batch())

    machine = next(m for m in storage.list_machine_risk() if m.machine_id == "m-001")

    assert machine.agent_id == "agent-new"
    assert machine.last_reading_at == START + dt.timedelta(minutes=30)


def test_storage_machine_history_is_oldest_first(storage: Storage) -> None:
    storage.ingest(make_batch())

    history = storage.machine_history("plant-a", "m-001")

    assert [point.seq for point in history] == [1, 3]
    assert [point.failure_probability for point in history] == [0.10, 0.93]
    assert history[1].torque_nm == pytest.approx(43.8)
    assert storage.machine_history("plant-a", "m-001", limit=1)[0].seq == 3
    assert storage.machine_history("plant-b", "m-001") == []


def test_storage_recent_alerts_are_newest_first(storage: Storage) -> None:
    storage.ingest(make_batch())

    (alert,) = storage.recent_alerts()

    assert alert.site == "plant-a"
    assert alert.machine_id == "m-001"
    assert alert.state == "raised"
    assert alert.ts == START + dt.timedelta(minutes=1, seconds=1)


def test_storage_model_version_recorded_once(storage: Storage) -> None:
    assert storage.record_model_version(accepted_model(1))
    assert not storage.record_model_version(accepted_model(1))

    with pytest.raises(InvalidRequestError, match="new version"):
        storage.record_model_version(accepted_model(1, sha256="cd" * 32))
    assert storage.get_model_version(1) == accepted_model(1)


def test_storage_unknown_model_version_not_found(storage: Storage) -> None:
    with pytest.raises(NotFoundError, match="v7 is not recorded"):
        storage.get_model_version(7)


def test_storage_current_version_resolution(storage: Storage) -> None:
    assert storage.current_version("plant-a") is None
    storage.record_model_version(accepted_model(1))
    storage.record_model_version(accepted_model(2))
    storage.record_model_version(
        dataclasses.replace(
            accepted_model(3),
            status="rejected",
            sha256=None,
            manifest=None,
            path=None,
            rejection_reason="F1 0.41 below the 0.5 floor",
        )
    )
    assert storage.current_version("plant-a") == 2

    storage.add_deployment(1, "*", created_by="test")
    assert storage.current_version("plant-a") == 1
    storage.add_deployment(2, "plant-a", created_by="test")
    assert storage.current_version("plant-a") == 2
    assert storage.current_version("plant-b") == 1
    assert storage.current_version() == 1
    storage.add_deployment(1, "plant-a", created_by="test")
    assert storage.current_version("plant-a") == 1
    assert [d.version for d in storage.list_deployments()] == [1, 2, 1]


def test_storage_deploy_rejects_unusable_versions(storage: Storage) -> None:
    storage.record_model_version(
        dataclasses.replace(
            accepted_model(3), status="rejected", rejection_reason="parity"
        )
    )

    with pytest.raises(InvalidRequestError, match="v3 is rejected"):
        storage.add_deployment(3, "*", created_by="test")
    with pytest.raises(NotFoundError, match="v4 is not recorded"):
        storage.add_deployment(4, "*", created_by="test")
    assert storage.list_deployments() == []


def test_storage_read_only_rejects_writes(storage: Storage, database_url: str) -> None:
    storage.ingest(make_batch())
    reader = open_storage(database_url, read_only=True)
    try:
        assert len(reader.list_machine_risk()) == 2
        with pytest.raises(StorageError, match="read-only|readonly"):
            reader.record_heartbeat(make_heartbeat())
    finally:
        reader.close()


def test_storage_newer_schema_is_rejected(storage: Storage, database_url: str) -> None:
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as connection:
            connection.execute("INSERT INTO schema_version VALUES (99, 'x')")
    else:
        with psycopg.connect(database_url) as connection:
            connection.execute("INSERT INTO schema_version VALUES (99, now())")

    with pytest.raises(SchemaVersionError, match="schema version 99"):
        storage.migrate()


def test_storage_missing_tables_name_init_db(database_url: str) -> None:
    unmigrated = open_storage(database_url)
    try:
        with pytest.raises(StorageError, match="init-db"):
            unmigrated.list_agents()
    finally:
        unmigrated.close()


def test_open_storage_rejects_unknown_scheme() -> None:
    with pytest.raises(StorageError, match="'mysql'.*not supported"):
        open_storage("mysql://localhost/db")


def test_open_storage_read_only_needs_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'none.sqlite3'}", read_only=True)


def test_storage_concurrent_replays_insert_once(storage: Storage) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: storage.ingest(make_batch()), range(8)))

    assert sum(result.inserted["readings"] for result in results) == 4
    assert sum(result.duplicates["readings"] for result in results) == 28
    assert sum(result.inserted["alerts"] for result in results) == 1
    assert len(storage.list_machine_risk()) == 2
