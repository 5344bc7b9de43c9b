"""The local SQLite store: schema, sequence, cursors and alert state across restarts."""

from __future__ import annotations

import concurrent.futures
import sqlite3
from pathlib import Path

import pytest

from edge_agent.alerts import AlertState
from edge_agent.errors import StoreError
from edge_agent.store import LocalStore


def reading_row(seq: int, machine_seq: int) -> dict[str, object]:
    return {
        "seq": seq,
        "received_at": "2026-12-04T15:00:00.000+00:00",
        "site": "plant-a",
        "machine_id": "m-001",
        "machine_seq": machine_seq,
        "ts": f"2026-12-04T15:00:{machine_seq:02d}.000+00:00",
        "product_type": "M",
        "air_temperature_k": 298.1,
        "process_temperature_k": 308.6,
        "rotational_speed_rpm": 1551.0,
        "torque_nm": 42.8,
        "tool_wear_min": 0.0,
    }


def test_store_new_file_uses_wal_and_starts_at_zero(tmp_path: Path) -> None:
    store = LocalStore.open(tmp_path / "agent.sqlite3")
    try:
        journal = store.db.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = store.db.execute("PRAGMA synchronous").fetchone()[0]

        assert journal == "wal"
        assert synchronous == 2  # FULL
        assert store.last_seq() == 0
        assert len(store.store_id) == 36
        assert store.backlog() == dict.fromkeys(
            ["readings", "predictions", "quarantine", "alerts"], 0
        )
    finally:
        store.close()


def test_store_restart_resumes_sequence_cursor_and_alert_state(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite3"
    store = LocalStore.open(path)
    store_id = store.store_id
    with store.transaction():
        store.insert_readings([reading_row(1, 0), reading_row(2, 1)])
        store.save_alert_states({"m-001": AlertState("raised", 2)})
        store.set_last_seq(2)
    with store.transaction():
        store.advance_upload_cursor("readings", 1)
    store.close()

    reopened = LocalStore.open(path)
    try:
        assert reopened.store_id == store_id
        assert reopened.last_seq() == 2
        assert reopened.upload_cursor("readings") == 1
        assert reopened.load_alert_states(["m-001", "m-002"]) == {
            "m-001": AlertState("raised", 2)
        }
        assert reopened.backlog()["readings"] == 1
        assert [row["seq"] for row in reopened.records_after("readings", 1, 10)] == [2]
    finally:
        reopened.close()


def test_store_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = LocalStore.open(tmp_path / "agent.sqlite3")
    try:
        with (
            pytest.raises(StoreError, match="UNIQUE constraint failed"),
            store.transaction(),
        ):
            store.insert_readings([reading_row(1, 0)])
            store.set_last_seq(1)
            store.insert_readings([reading_row(2, 0)])  # same machine_seq and ts

        assert store.last_seq() == 0
        assert store.count("readings") == 0
    finally:
        store.close()


def test_store_cursor_never_moves_back(tmp_path: Path) -> None:
    store = LocalStore.open(tmp_path / "agent.sqlite3")
    try:
        store.advance_upload_cursor("alerts", 9)
        store.advance_upload_cursor("alerts", 4)

        assert store.upload_cursor("alerts") == 9
    finally:
        store.close()


def test_store_open_rejects_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the data directory should be")

    with pytest.raises(StoreError, match="check that EDGEPM_DATA_DIR is writable"):
        LocalStore.open(blocker / "agent.sqlite3")


def test_store_is_usable_only_from_its_thread(tmp_path: Path) -> None:
    store = LocalStore.open(tmp_path / "agent.sqlite3")
    try:
        with (
            concurrent.futures.ThreadPoolExecutor(1) as other,
            pytest.raises(sqlite3.ProgrammingError, match="same thread"),
        ):
            other.submit(store.last_seq).result()
    finally:
        store.close()
