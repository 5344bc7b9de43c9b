"""The control plane's schema, written once for PostgreSQL and SQLite.

The DDL uses type placeholders that each dialect fills in; a dialect also converts
timestamps and JSON between Python and its column types, and rewrites the ``?``
parameter markers the queries are written with.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1

_POSTGRES_TYPES = {
    "text": "TEXT",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "real": "DOUBLE PRECISION",
    "timestamp": "TIMESTAMPTZ",
    "json": "JSONB",
    "identity": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
}
# SQLite keeps timestamps as ISO 8601 text in UTC with a fixed microsecond width, so
# comparing the text orders them in time.
_SQLITE_TYPES = {
    "text": "TEXT",
    "integer": "INTEGER",
    "bigint": "INTEGER",
    "real": "REAL",
    "timestamp": "TEXT",
    "json": "TEXT",
    "identity": "INTEGER PRIMARY KEY AUTOINCREMENT",
}

_MEASUREMENT_COLUMNS = """
    air_temperature_k {real} NOT NULL,
    process_temperature_k {real} NOT NULL,
    rotational_speed_rpm {real} NOT NULL,
    torque_nm {real} NOT NULL,
    tool_wear_min {real} NOT NULL,"""

# Version 1 of the schema. Every statement is idempotent so that a half-applied
# migration can run again.
_SCHEMA_V1 = (
    """CREATE TABLE IF NOT EXISTS agents (
    agent_id {text} PRIMARY KEY,
    site {text} NOT NULL,
    store_id {text} NOT NULL,
    model_version {integer},
    backlog {json},
    counters {json},
    started_at {timestamp},
    last_heartbeat_at {timestamp},
    first_seen_at {timestamp} NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS readings (
    agent_id {text} NOT NULL,
    seq {bigint} NOT NULL,
    site {text} NOT NULL,
    machine_id {text} NOT NULL,
    machine_seq {bigint} NOT NULL,
    ts {timestamp} NOT NULL,
    product_type {text} NOT NULL,"""
    + _MEASUREMENT_COLUMNS
    + """
    received_at {timestamp} NOT NULL,
    synced_at {timestamp} NOT NULL,
    PRIMARY KEY (agent_id, seq)
)""",
    # Serves a machine's readings over time and its latest scored reading.
    "CREATE INDEX IF NOT EXISTS readings_machine_ts ON readings (site, machine_id, ts)",
    """CREATE TABLE IF NOT EXISTS predictions (
    agent_id {text} NOT NULL,
    reading_seq {bigint} NOT NULL,
    model_version {integer} NOT NULL,
    failure_probability {real} NOT NULL,
    failure_label {integer} NOT NULL,
    risk_band {text} NOT NULL,
    failure_type {text} NOT NULL,
    failure_type_probability {real} NOT NULL,
    PRIMARY KEY (agent_id, reading_seq, model_version)
)""",
    """CREATE TABLE IF NOT EXISTS quarantine (
    agent_id {text} NOT NULL,
    seq {bigint} NOT NULL,
    received_at {timestamp} NOT NULL,
    topic {text} NOT NULL,
    reason {text} NOT NULL,
    excerpt {text} NOT NULL,
    size_bytes {bigint} NOT NULL,
    PRIMARY KEY (agent_id, seq)
)""",
    """CREATE TABLE IF NOT EXISTS alerts (
    agent_id {text} NOT NULL,
    seq {bigint} NOT NULL,
    site {text} NOT NULL,
    machine_id {text} NOT NULL,
    ts {timestamp} NOT NULL,
    state {text} NOT NULL CHECK (state IN ('raised', 'cleared')),
    failure_probability {real} NOT NULL,
    risk_band {text} NOT NULL,
    failure_type {text} NOT NULL,
    model_version {integer} NOT NULL,
    reading_seq {bigint} NOT NULL,
    PRIMARY KEY (agent_id, seq)
)""",
    "CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts)",
    # One row per machine, kept current by ingest, so the fleet view does not have to
    # find the distinct machines by scanning every reading.
    """CREATE TABLE IF NOT EXISTS machines (
    site {text} NOT NULL,
    machine_id {text} NOT NULL,
    agent_id {text} NOT NULL,
    first_seen_at {timestamp} NOT NULL,
    last_reading_at {timestamp} NOT NULL,
    PRIMARY KEY (site, machine_id)
)""",
    """CREATE TABLE IF NOT EXISTS model_versions (
    version {integer} PRIMARY KEY,
    created_at {timestamp} NOT NULL,
    status {text} NOT NULL CHECK (status IN ('accepted', 'rejected')),
    sha256 {text},
    manifest {json},
    metrics {json} NOT NULL,
    path {text},
    rejection_reason {text}
)""",
    # Append-only: the current version of a site is its latest deployment, so a
    # rollback is a new row, and the history of what ran where stays readable.
    """CREATE TABLE IF NOT EXISTS deployments (
    id {identity},
    version {integer} NOT NULL REFERENCES model_versions (version),
    scope {text} NOT NULL,
    created_at {timestamp} NOT NULL,
    created_by {text} NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS deployments_scope ON deployments (scope, id)",
)

MIGRATIONS: Mapping[int, tuple[str, ...]] = {1: _SCHEMA_V1}


@dataclass(frozen=True, slots=True)
class Dialect:
    """The differences between the two SQL backends.

    Attributes:
        name: ``postgresql`` or ``sqlite``.
        types: the column type for each placeholder in the DDL.
        native_values: True when the driver converts datetimes and JSON itself.
    """

    name: str
    types: Mapping[str, str]
    native_values: bool

    def ddl(self, statement: str) -> str:
        """Fill a DDL statement's type placeholders."""
        return statement.format_map(self.types)

    def sql(self, query: str) -> str:
        """Rewrite a query's ``?`` markers to the driver's parameter style."""
        if self.name == "postgresql":
            # psycopg reads % as the start of a placeholder, so no query may hold one.
            assert "%" not in query, query
            return query.replace("?", "%s")
        return query

    def encode_time(self, value: dt.datetime | None) -> Any:
        """Convert an aware datetime to the column value."""
        if value is None:
            return None
        utc = value.astimezone(dt.UTC)
        return utc if self.native_values else utc.isoformat(timespec="microseconds")

    def decode_time(self, value: Any) -> dt.datetime | None:
        """Convert a column value to an aware datetime in UTC."""
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC)
        return dt.datetime.fromisoformat(value).astimezone(dt.UTC)

    def encode_json(self, value: Any) -> Any:
        """Convert a JSON-compatible value to the column value."""
        if value is None:
            return None
        if self.native_values:
            from psycopg.types.json import Jsonb

            return Jsonb(value)
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    def decode_json(self, value: Any) -> Any:
        """Convert a column value to a JSON-compatible value."""
        if value is None or self.native_values:
            return value
        return json.loads(value)


POSTGRES = Dialect("postgresql", _POSTGRES_TYPES, native_values=True)
SQLITE = Dialect("sqlite", _SQLITE_TYPES, native_values=False)
