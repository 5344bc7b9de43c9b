"""The records the storage layer writes and returns, as frozen dataclasses.

Timestamps are timezone-aware datetimes in UTC on both backends; the ingest payload
parser builds the input records and the API and dashboard render the output records.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

RECORD_TABLES = ("readings", "predictions", "quarantine", "alerts")
MODEL_STATUSES = ("accepted", "rejected")
FLEET_SCOPE = "*"
# Model versions are stored in an INTEGER column, which is 32-bit signed on
# PostgreSQL.
MAX_MODEL_VERSION = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ReadingRecord:
    """One reading as an agent stored it, numbered by the agent's sequence."""

    seq: int
    received_at: dt.datetime
    machine_id: str
    machine_seq: int
    ts: dt.datetime
    product_type: str
    air_temperature_k: float
    process_temperature_k: float
    rotational_speed_rpm: float
    torque_nm: float
    tool_wear_min: float


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One model output for a reading, keyed by the reading's agent sequence number."""

    reading_seq: int
    model_version: int
    failure_probability: float
    failure_label: int
    risk_band: str
    failure_type: str
    failure_type_probability: float


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """A payload the agent rejected, with the reason and a bounded excerpt."""

    seq: int
    received_at: dt.datetime
    topic: str
    reason: str
    excerpt: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert state change the agent published."""

    seq: int
    machine_id: str
    ts: dt.datetime
    state: str
    failure_probability: float
    risk_band: str
    failure_type: str
    model_version: int
    reading_seq: int


@dataclass(frozen=True, slots=True)
class IngestBatch:
    """One upload from an agent: records of every kind, stored in one transaction."""

    agent_id: str
    site: str
    store_id: str
    readings: tuple[ReadingRecord, ...] = ()
    predictions: tuple[PredictionRecord, ...] = ()
    quarantine: tuple[QuarantineRecord, ...] = ()
    alerts: tuple[AlertRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class IngestResult:
    """Rows inserted and rows already present, per table."""

    inserted: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """An agent's periodic status report."""

    agent_id: str
    site: str
    store_id: str
    sent_at: dt.datetime
    started_at: dt.datetime | None
    model_version: int | None
    backlog: dict[str, int]
    counters: dict[str, int]


@dataclass(frozen=True, slots=True)
class AgentRow:
    """An agent as the control plane last heard of it.

    ``last_heartbeat_at`` is the control plane's clock at receipt, so staleness never
    depends on the agent's clock; it is None for an agent that only uploaded records.
    """

    agent_id: str
    site: str
    store_id: str
    model_version: int | None
    backlog: dict[str, int]
    counters: dict[str, int]
    started_at: dt.datetime | None
    last_heartbeat_at: dt.datetime | None
    first_seen_at: dt.datetime

    def heartbeat_age_s(self, now: dt.datetime) -> float | None:
        """Return the seconds since the last heartbeat, or None if there was none."""
        if self.last_heartbeat_at is None:
            return None
        return (now - self.last_heartbeat_at).total_seconds()

    def is_up(self, now: dt.datetime, stale_s: float) -> bool:
        """Tell whether the last heartbeat is at most ``stale_s`` seconds old."""
        age = self.heartbeat_age_s(now)
        return age is not None and age <= stale_s


@dataclass(frozen=True, slots=True)
class MachineRisk:
    """A machine with its latest prediction; the prediction fields are None until the
    first scored reading arrives."""

    site: str
    machine_id: str
    agent_id: str
    last_reading_at: dt.datetime
    scored_reading_at: dt.datetime | None = None
    model_version: int | None = None
    failure_probability: float | None = None
    failure_label: int | None = None
    risk_band: str | None = None
    failure_type: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One reading of a machine with the newest model version's prediction, if any."""

    ts: dt.datetime
    agent_id: str
    seq: int
    product_type: str
    air_temperature_k: float
    process_temperature_k: float
    rotational_speed_rpm: float
    torque_nm: float
    tool_wear_min: float
    model_version: int | None
    failure_probability: float | None
    risk_band: str | None


@dataclass(frozen=True, slots=True)
class AlertRow:
    """A stored alert with the site of the agent that raised it."""

    agent_id: str
    seq: int
    site: str
    machine_id: str
    ts: dt.datetime
    state: str
    failure_probability: float
    risk_band: str
    failure_type: str
    model_version: int
    reading_seq: int


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """A model version the control plane accepted or rejected.

    A rejected candidate keeps its reason and may have no artifact.
    """

    version: int
    created_at: dt.datetime
    status: str
    sha256: str | None
    manifest: dict[str, Any] | None
    metrics: dict[str, Any]
    path: str | None
    rejection_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Deployment:
    """An instruction to run a version on one site, or on the fleet (scope ``*``)."""

    id: int
    version: int
    scope: str
    created_at: dt.datetime
    created_by: str
