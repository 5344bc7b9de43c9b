"""Builders of valid storage records for the control plane tests."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import psycopg

from control_plane.storage.records import (
    AlertRecord,
    Heartbeat,
    IngestBatch,
    PredictionRecord,
    QuarantineRecord,
    ReadingRecord,
)

START = dt.datetime(2026, 12, 4, 15, 0, tzinfo=dt.UTC)
# The store_id an agent sends: the UUID it created with its SQLite file.
STORE_ID = "0b9d6f0e-5c1a-4e8b-9f3d-2a7c1e4b6d80"


def make_reading(
    seq: int, *, machine_id: str = "m-001", minute: int = 0
) -> ReadingRecord:
    """A valid reading record taken ``minute`` minutes after START."""
    ts = START + dt.timedelta(minutes=minute)
    return ReadingRecord(
        seq=seq,
        received_at=ts + dt.timedelta(milliseconds=5),
        machine_id=machine_id,
        machine_seq=seq,
        ts=ts,
        product_type="M",
        air_temperature_k=298.1,
        process_temperature_k=308.6,
        rotational_speed_rpm=1551.0,
        torque_nm=42.8 + minute,
        tool_wear_min=float(minute),
    )


def make_prediction(
    reading_seq: int, probability: float, *, model_version: int = 1
) -> PredictionRecord:
    """A prediction record for one reading."""
    band = "high" if probability >= 0.5 else "low"
    return PredictionRecord(
        reading_seq=reading_seq,
        model_version=model_version,
        failure_probability=probability,
        failure_label=int(probability >= 0.5),
        risk_band=band,
        failure_type="Power Failure" if probability >= 0.5 else "No Failure",
        failure_type_probability=0.9,
    )


def make_batch(
    *,
    agent_id: str = "plant-a-agent",
    site: str = "plant-a",
    store_id: str = "store-1",
) -> IngestBatch:
    """A batch with records of every kind for two machines."""
    return IngestBatch(
        agent_id=agent_id,
        site=site,
        store_id=store_id,
        readings=(
            make_reading(1, machine_id="m-001", minute=0),
            make_reading(2, machine_id="m-002", minute=0),
            make_reading(3, machine_id="m-001", minute=1),
            make_reading(4, machine_id="m-002", minute=1),
        ),
        predictions=(
            make_prediction(1, 0.10),
            make_prediction(2, 0.20),
            make_prediction(3, 0.93),
            make_prediction(4, 0.05),
        ),
        quarantine=(
            QuarantineRecord(
                seq=5,
                received_at=START,
                topic="edgepm/plant-a/m-003/telemetry",
                reason="payload is not JSON",
                excerpt="{oops",
                size_bytes=5,
            ),
        ),
        alerts=(
            AlertRecord(
                seq=6,
                machine_id="m-001",
                ts=START + dt.timedelta(minutes=1, seconds=1),
                state="raised",
                failure_probability=0.93,
                risk_band="high",
                failure_type="Power Failure",
                model_version=1,
                reading_seq=3,
            ),
        ),
    )


def make_heartbeat(
    *, agent_id: str = "plant-a-agent", store_id: str = "store-1"
) -> Heartbeat:
    """A heartbeat of an agent running model v1 with a small backlog."""
    return Heartbeat(
        agent_id=agent_id,
        site="plant-a",
        store_id=store_id,
        sent_at=START,
        started_at=START - dt.timedelta(hours=1),
        model_version=1,
        backlog={"readings": 3, "predictions": 3, "quarantine": 0, "alerts": 0},
        counters={"readings_stored": 2000, "readings_quarantined": 11},
    )


def batch_document(
    *, agent_id: str = "plant-a-agent", store_id: str = STORE_ID
) -> dict[str, Any]:
    """An ingest body as an agent sends it: two readings of one machine and the rest."""
    return {
        "agent_id": agent_id,
        "site": "plant-a",
        "store_id": store_id,
        "readings": [
            {
                "seq": seq,
                "received_at": f"2026-12-04T15:00:0{seq}.100+00:00",
                "machine_id": "m-001",
                "machine_seq": seq,
                "ts": f"2026-12-04T15:00:0{seq}.000+00:00",
                "product_type": "M",
                "air_temperature_k": 298.1,
                "process_temperature_k": 308.6,
                "rotational_speed_rpm": 1551.0,
                "torque_nm": 42.8,
                "tool_wear_min": 0.0,
            }
            for seq in (1, 2)
        ],
        "predictions": [
            {
                "reading_seq": seq,
                "model_version": 1,
                "failure_probability": probability,
                "failure_label": int(probability >= 0.5),
                "risk_band": "high" if probability >= 0.5 else "low",
                "failure_type": "No Failure",
                "failure_type_probability": 0.98,
            }
            for seq, probability in ((1, 0.012), (2, 0.81))
        ],
        "quarantine": [
            {
                "seq": 3,
                "received_at": "2026-12-04T15:00:03.000Z",
                "topic": "edgepm/plant-a/m-001/telemetry",
                "reason": "payload is not JSON",
                "excerpt": "{oops",
                "size_bytes": 5,
            }
        ],
        "alerts": [
            {
                "seq": 4,
                "machine_id": "m-001",
                "ts": "2026-12-04T15:00:02.500+00:00",
                "state": "raised",
                "failure_probability": 0.81,
                "risk_band": "high",
                "failure_type": "Power Failure",
                "model_version": 1,
                "reading_seq": 2,
            }
        ],
    }


def heartbeat_document(
    *, agent_id: str = "plant-a-agent", store_id: str = STORE_ID
) -> dict[str, Any]:
    """A heartbeat body as an agent sends it."""
    return {
        "agent_id": agent_id,
        "site": "plant-a",
        "store_id": store_id,
        "sent_at": "2026-12-04T15:00:05.000+00:00",
        "started_at": "2026-12-04T14:00:00.000+00:00",
        "model_version": 1,
        "backlog": {"readings": 0, "predictions": 0, "quarantine": 0, "alerts": 0},
        "counters": {"readings_stored": 2, "readings_quarantined": 1},
    }


TABLE_KEYS = {
    "agents": "agent_id",
    "readings": "agent_id, seq",
    "predictions": "agent_id, reading_seq, model_version",
    "quarantine": "agent_id, seq",
    "alerts": "agent_id, seq",
    "machines": "site, machine_id",
    "model_versions": "version",
    "deployments": "id",
}


def dump_tables(url: str) -> dict[str, list[str]]:
    """Read every table through a raw driver connection, one text line per row."""
    dump: dict[str, list[str]] = {}
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            for table, key in TABLE_KEYS.items():
                rows = connection.execute(f"SELECT * FROM {table} ORDER BY {key}")
                dump[table] = [repr(row) for row in rows]
        return dump
    with psycopg.connect(url) as connection:
        for table, key in TABLE_KEYS.items():
            rows = connection.execute(f"SELECT t::text FROM {table} t ORDER BY {key}")
            dump[table] = [row[0] for row in rows]
    return dump
