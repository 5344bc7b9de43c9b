"""The storage interface and the SQL both backends share.

``SqlStorage`` contains every query, and its subclasses only open connections and
translate driver errors. Queries use ``?`` markers, which the dialect rewrites.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from control_plane.storage.errors import (
    InvalidRequestError,
    NotFoundError,
    SchemaVersionError,
    StorageError,
    StoreIdConflictError,
)
from control_plane.storage.records import (
    FLEET_SCOPE,
    RECORD_TABLES,
    AgentRow,
    AlertRow,
    Deployment,
    Heartbeat,
    HistoryPoint,
    IngestBatch,
    IngestResult,
    MachineRisk,
    ModelVersion,
)
from control_plane.storage.schema import MIGRATIONS, SCHEMA_VERSION, Dialect

logger = logging.getLogger(__name__)

_INSERT_READING = """INSERT INTO readings (agent_id, seq, site, machine_id, machine_seq,
    ts, product_type, air_temperature_k, process_temperature_k, rotational_speed_rpm,
    torque_nm, tool_wear_min, received_at, synced_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (agent_id, seq) DO NOTHING"""
_INSERT_PREDICTION = """INSERT INTO predictions (agent_id, reading_seq, model_version,
    failure_probability, failure_label, risk_band, failure_type,
    failure_type_probability)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (agent_id, reading_seq, model_version) DO NOTHING"""
_INSERT_QUARANTINE = """INSERT INTO quarantine (agent_id, seq, received_at, topic,
    reason, excerpt, size_bytes)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (agent_id, seq) DO NOTHING"""
_INSERT_ALERT = """INSERT INTO alerts (agent_id, seq, site, machine_id, ts, state,
    failure_probability, risk_band, failure_type, model_version, reading_seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (agent_id, seq) DO NOTHING"""
# A replayed or late batch must not move a machine back to an older reading or agent.
_UPSERT_MACHINE = """INSERT INTO machines (site, machine_id, agent_id, first_seen_at,
    last_reading_at)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (site, machine_id) DO UPDATE SET
    agent_id = CASE WHEN excluded.last_reading_at > machines.last_reading_at
        THEN excluded.agent_id ELSE machines.agent_id END,
    last_reading_at = CASE WHEN excluded.last_reading_at > machines.last_reading_at
        THEN excluded.last_reading_at ELSE machines.last_reading_at END"""
_CLAIM_AGENT = """INSERT INTO agents (agent_id, site, store_id, first_seen_at)
VALUES (?, ?, ?, ?)
ON CONFLICT (agent_id) DO NOTHING"""
_AGENT_COLUMNS = """agent_id, site, store_id, model_version, backlog, counters,
    started_at, last_heartbeat_at, first_seen_at"""
# The newest prediction of a reading is the one of the highest model version.
_NEWEST_PREDICTION = """p.model_version = (SELECT MAX(p2.model_version)
    FROM predictions p2 WHERE p2.agent_id = r.agent_id AND p2.reading_seq = r.seq)"""
# For each machine, the reading at the latest timestamp that has a prediction. The
# subquery walks readings_machine_ts backwards, so it reads a few rows per machine.
_MACHINE_RISK = f"""SELECT m.site, m.machine_id, m.agent_id, m.last_reading_at,
    r.ts, r.seq, p.model_version, p.failure_probability, p.failure_label,
    p.risk_band, p.failure_type
FROM machines m
LEFT JOIN readings r ON r.site = m.site AND r.machine_id = m.machine_id
    AND r.ts = (SELECT r3.ts FROM readings r3
        WHERE r3.site = m.site AND r3.machine_id = m.machine_id
        AND EXISTS (SELECT 1 FROM predictions p3
            WHERE p3.agent_id = r3.agent_id AND p3.reading_seq = r3.seq)
        ORDER BY r3.ts DESC LIMIT 1)
LEFT JOIN predictions p ON p.agent_id = r.agent_id AND p.reading_seq = r.seq
    AND {_NEWEST_PREDICTION}
ORDER BY m.site, m.machine_id, p.model_version IS NULL, r.seq DESC"""
_MACHINE_HISTORY = f"""SELECT r.ts, r.agent_id, r.seq, r.product_type,
    r.air_temperature_k, r.process_temperature_k, r.rotational_speed_rpm,
    r.torque_nm, r.tool_wear_min, p.model_version, p.failure_probability, p.risk_band
FROM readings r
LEFT JOIN predictions p ON p.agent_id = r.agent_id AND p.reading_seq = r.seq
    AND {_NEWEST_PREDICTION}
WHERE r.site = ? AND r.machine_id = ?
ORDER BY r.ts DESC, r.seq DESC
LIMIT ?"""
_ALERT_COLUMNS = """agent_id, seq, site, machine_id, ts, state, failure_probability,
    risk_band, failure_type, model_version, reading_seq"""
_MODEL_COLUMNS = """version, created_at, status, sha256, manifest, metrics, path,
    rejection_reason"""
_DEPLOYMENT_COLUMNS = "id, version, scope, created_at, created_by"


class Cursor(Protocol):
    """The part of a DB-API cursor that sqlite3 and psycopg share and we use."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...

    def executemany(self, query: Any, params_seq: Any, /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Storage(Protocol):
    """The database interface that the API, the dashboard and the command line use."""

    dialect: Dialect
    description: str

    def close(self) -> None: ...

    def migrate(self) -> int: ...

    def ping(self) -> None: ...

    def ingest(
        self, batch: IngestBatch, *, now: dt.datetime | None = None
    ) -> IngestResult: ...

    def record_heartbeat(
        self, heartbeat: Heartbeat, *, now: dt.datetime | None = None
    ) -> AgentRow: ...

    def list_agents(self) -> list[AgentRow]: ...

    def list_machine_risk(self) -> list[MachineRisk]: ...

    def machine_history(
        self, site: str, machine_id: str, *, limit: int = 500
    ) -> list[HistoryPoint]: ...

    def recent_alerts(self, *, limit: int = 50) -> list[AlertRow]: ...

    def record_model_version(self, model: ModelVersion) -> bool: ...

    def list_model_versions(self) -> list[ModelVersion]: ...

    def get_model_version(self, version: int) -> ModelVersion: ...

    def add_deployment(
        self,
        version: int,
        scope: str,
        *,
        created_by: str,
        now: dt.datetime | None = None,
    ) -> Deployment: ...

    def list_deployments(self) -> list[Deployment]: ...

    def current_version(self, site: str | None = None) -> int | None: ...


def utc_now() -> dt.datetime:
    """Return the current time as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


class SqlStorage:
    """The queries of the control plane, run through a subclass's connections."""

    dialect: Dialect
    description: str

    def _transaction(self) -> AbstractContextManager[Cursor]:
        """Open a write transaction that commits on exit and rolls back on error."""
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Cursor]:
        """Open a cursor for reads outside an explicit transaction."""
        raise NotImplementedError

    def _lock_schema(self, cursor: Cursor) -> None:
        """Serialize concurrent migrations; a no-op where the write lock does it."""

    def close(self) -> None:
        """Close every connection."""

    def ping(self) -> None:
        """Run a trivial query; raises StorageUnavailableError when that fails."""
        with self._reading() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    def migrate(self) -> int:
        """Create or upgrade the schema to SCHEMA_VERSION and return that version.

        Raises:
            SchemaVersionError: the database was created by a newer release.
        """
        with self._transaction() as cursor:
            self._lock_schema(cursor)
            cursor.execute(
                self.dialect.ddl(
                    "CREATE TABLE IF NOT EXISTS schema_version ("
                    "version {integer} PRIMARY KEY, applied_at {timestamp} NOT NULL)"
                )
            )
            cursor.execute("SELECT MAX(version) FROM schema_version")
            current = cursor.fetchone()[0] or 0
            if current > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.description} has schema version {current}, newer than "
                    f"{SCHEMA_VERSION} which this release knows; upgrade edgepm"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    cursor.execute(self.dialect.ddl(statement))
                self._execute(
                    cursor,
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, self.dialect.encode_time(utc_now())),
                )
                logger.info("%s: schema version %d applied", self.description, version)
        return SCHEMA_VERSION

    def ingest(
        self, batch: IngestBatch, *, now: dt.datetime | None = None
    ) -> IngestResult:
        """Store one batch in one transaction, skipping records already stored.

        Raises:
            StoreIdConflictError: the agent is known with another store id; nothing
                of the batch is stored.
        """
        now = now or utc_now()
        rows = self._batch_rows(batch, now)
        with self._transaction() as cursor:
            self._claim_agent(cursor, batch.agent_id, batch.site, batch.store_id, now)
            inserted = {
                table: self._insert_many(cursor, query, rows[table])
                for table, query in (
                    ("readings", _INSERT_READING),
                    ("predictions", _INSERT_PREDICTION),
                    ("quarantine", _INSERT_QUARANTINE),
                    ("alerts", _INSERT_ALERT),
                )
            }
            self._update_machines(cursor, batch, now)
        duplicates = {
            table: len(rows[table]) - inserted[table] for table in RECORD_TABLES
        }
        return IngestResult(inserted=inserted, duplicates=duplicates)

    def record_heartbeat(
        self, heartbeat: Heartbeat, *, now: dt.datetime | None = None
    ) -> AgentRow:
        """Create or update the agent's row from its heartbeat.

        ``now`` becomes ``last_heartbeat_at``: the control plane's clock, not the
        agent's ``sent_at``, decides whether an agent is stale.

        Raises:
            StoreIdConflictError: the agent is known with another store id.
        """
        now = now or utc_now()
        encode_time, encode_json = self.dialect.encode_time, self.dialect.encode_json
        with self._transaction() as cursor:
            self._claim_agent(
                cursor, heartbeat.agent_id, heartbeat.site, heartbeat.store_id, now
            )
            self._execute(
                cursor,
                """UPDATE agents SET site = ?, model_version = ?, backlog = ?,
                    counters = ?, started_at = ?, last_heartbeat_at = ?
                WHERE agent_id = ?""",
                (
                    heartbeat.site,
                    heartbeat.model_version,
                    encode_json(heartbeat.backlog),
                    encode_json(heartbeat.counters),
                    encode_time(heartbeat.started_at),
                    encode_time(now),
                    heartbeat.agent_id,
                ),
            )
            self._execute(
                cursor,
                f"SELECT {_AGENT_COLUMNS} FROM agents WHERE agent_id = ?",
                (heartbeat.agent_id,),
            )
            return self._agent(cursor.fetchone())

    def list_agents(self) -> list[AgentRow]:
        """Return every agent, ordered by site and id."""
        with self._reading() as cursor:
            cursor.execute(
                f"SELECT {_AGENT_COLUMNS} FROM agents ORDER BY site, agent_id"
            )
            return [self._agent(row) for row in cursor.fetchall()]

    def list_machine_risk(self) -> list[MachineRisk]:
        """Return every machine with its latest prediction, highest risk first.

        Machines without a scored reading come last.
        """
        with self._reading() as cursor:
            cursor.execute(_MACHINE_RISK)
            rows = cursor.fetchall()
        decode_time = self.dialect.decode_time
        machines: dict[tuple[str, str], MachineRisk] = {}
        for row in rows:
            key = (row[0], row[1])
            # Two readings can share the latest timestamp; the query orders the
            # scored one with the higher sequence number first and that one wins.
            if key in machines:
                continue
            machines[key] = MachineRisk(
                site=row[0],
                machine_id=row[1],
                agent_id=row[2],
                last_reading_at=_required_time(decode_time(row[3])),
                scored_reading_at=decode_time(row[4]),
                model_version=row[6],
                failure_probability=row[7],
                failure_label=row[8],
                risk_band=row[9],
                failure_type=row[10],
            )
        return sorted(machines.values(), key=_risk_order)

    def machine_history(
        self, site: str, machine_id: str, *, limit: int = 500
    ) -> list[HistoryPoint]:
        """Return a machine's latest ``limit`` readings, oldest first."""
        with self._reading() as cursor:
            self._execute(cursor, _MACHINE_HISTORY, (site, machine_id, limit))
            rows = cursor.fetchall()
        points = [
            HistoryPoint(
                ts=_required_time(self.dialect.decode_time(row[0])),
                agent_id=row[1],
                seq=row[2],
                product_type=row[3],
                air_temperature_k=row[4],
                process_temperature_k=row[5],
                rotational_speed_rpm=row[6],
                torque_nm=row[7],
                tool_wear_min=row[8],
                model_version=row[9],
                failure_probability=row[10],
                risk_band=row[11],
            )
            for row in rows
        ]
        points.reverse()
        return points

    def recent_alerts(self, *, limit: int = 50) -> list[AlertRow]:
        """Return the latest ``limit`` alerts, newest first."""
        with self._reading() as cursor:
            self._execute(
                cursor,
                f"SELECT {_ALERT_COLUMNS} FROM alerts "
                "ORDER BY ts DESC, agent_id, seq DESC LIMIT ?",
                (limit,),
            )
            rows = cursor.fetchall()
        decode_time = self.dialect.decode_time
        return [
            AlertRow(
                agent_id=row[0],
                seq=row[1],
                site=row[2],
                machine_id=row[3],
                ts=_required_time(decode_time(row[4])),
                state=row[5],
                failure_probability=row[6],
                risk_band=row[7],
                failure_type=row[8],
                model_version=row[9],
                reading_seq=row[10],
            )
            for row in rows
        ]

    def record_model_version(self, model: ModelVersion) -> bool:
        """Record a model version; return False if it was recorded before.

        Raises:
            InvalidRequestError: the version is recorded with another status or
                artifact digest.
        """
        encode_time, encode_json = self.dialect.encode_time, self.dialect.encode_json
        with self._transaction() as cursor:
            self._execute(
                cursor,
                f"""INSERT INTO model_versions ({_MODEL_COLUMNS})
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (version) DO NOTHING""",
                (
                    model.version,
                    encode_time(model.created_at),
                    model.status,
                    model.sha256,
                    encode_json(model.manifest),
                    encode_json(model.metrics),
                    model.path,
                    model.rejection_reason,
                ),
            )
            if cursor.rowcount == 1:
                return True
            self._execute(
                cursor,
                "SELECT status, sha256 FROM model_versions WHERE version = ?",
                (model.version,),
            )
            status, sha256 = cursor.fetchone()
        if (status, sha256) != (model.status, model.sha256):
            raise InvalidRequestError(
                f"model v{model.version} is already recorded as {status} with sha256 "
                f"{sha256}, not {model.status} with {model.sha256}; a version number "
                "names one artifact, so publish the new model as a new version"
            )
        return False

    def list_model_versions(self) -> list[ModelVersion]:
        """Return every recorded version, newest first."""
        with self._reading() as cursor:
            cursor.execute(
                f"SELECT {_MODEL_COLUMNS} FROM model_versions ORDER BY version DESC"
            )
            return [self._model(row) for row in cursor.fetchall()]

    def get_model_version(self, version: int) -> ModelVersion:
        """Return one recorded version.

        Raises:
            NotFoundError: no such version is recorded.
        """
        with self._reading() as cursor:
            self._execute(
                cursor,
                f"SELECT {_MODEL_COLUMNS} FROM model_versions WHERE version = ?",
                (version,),
            )
            row = cursor.fetchone()
        if row is None:
            raise NotFoundError(
                f"model v{version} is not recorded; list the versions at "
                "GET /api/v1/models"
            )
        return self._model(row)

    def add_deployment(
        self,
        version: int,
        scope: str,
        *,
        created_by: str,
        now: dt.datetime | None = None,
    ) -> Deployment:
        """Append a deployment of an accepted version to a site or to the fleet.

        Raises:
            NotFoundError: the version is not recorded.
            InvalidRequestError: the version was rejected.
        """
        now = now or utc_now()
        with self._transaction() as cursor:
            self._execute(
                cursor,
                "SELECT status FROM model_versions WHERE version = ?",
                (version,),
            )
            row = cursor.fetchone()
            if row is None:
                raise NotFoundError(
                    f"model v{version} is not recorded; deploy one of the accepted "
                    "versions listed at GET /api/v1/models"
                )
            if row[0] != "accepted":
                raise InvalidRequestError(
                    f"model v{version} is {row[0]}; only accepted versions can be "
                    "deployed"
                )
            self._execute(
                cursor,
                "INSERT INTO deployments (version, scope, created_at, created_by) "
                f"VALUES (?, ?, ?, ?) RETURNING {_DEPLOYMENT_COLUMNS}",
                (version, scope, self.dialect.encode_time(now), created_by),
            )
            deployment = self._deployment(cursor.fetchone())
        logger.info("model v%d deployed to scope %r by %s", version, scope, created_by)
        return deployment

    def list_deployments(self) -> list[Deployment]:
        """Return every deployment, newest first."""
        with self._reading() as cursor:
            cursor.execute(
                f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments ORDER BY id DESC"
            )
            return [self._deployment(row) for row in cursor.fetchall()]

    def current_version(self, site: str | None = None) -> int | None:
        """Return the version a site should run.

        That is the latest deployment to the site, else the latest to the fleet,
        else the newest accepted version; None when no version is accepted.
        """
        scopes = [FLEET_SCOPE] if site is None else [site, FLEET_SCOPE]
        with self._reading() as cursor:
            for scope in scopes:
                self._execute(
                    cursor,
                    "SELECT version FROM deployments WHERE scope = ? "
                    "ORDER BY id DESC LIMIT 1",
                    (scope,),
                )
                row = cursor.fetchone()
                if row is not None:
                    return int(row[0])
            cursor.execute(
                "SELECT MAX(version) FROM model_versions WHERE status = 'accepted'"
            )
            row = cursor.fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _execute(self, cursor: Cursor, query: str, params: Sequence[Any] = ()) -> None:
        cursor.execute(self.dialect.sql(query), params)

    def _insert_many(
        self, cursor: Cursor, query: str, rows: Sequence[Sequence[Any]]
    ) -> int:
        if not rows:
            return 0
        # One executemany in the open transaction: psycopg 3 pipelines it, which
        # measured as fast as COPY through a temporary table for ON CONFLICT inserts.
        cursor.executemany(self.dialect.sql(query), rows)
        return max(cursor.rowcount, 0)

    def _claim_agent(
        self, cursor: Cursor, agent_id: str, site: str, store_id: str, now: dt.datetime
    ) -> None:
        self._execute(
            cursor,
            _CLAIM_AGENT,
            (agent_id, site, store_id, self.dialect.encode_time(now)),
        )
        self._execute(
            cursor, "SELECT store_id FROM agents WHERE agent_id = ?", (agent_id,)
        )
        known_store_id = cursor.fetchone()[0]
        if known_store_id != store_id:
            raise StoreIdConflictError(
                f"agent {agent_id!r} sent store_id {store_id!r} but is known with "
                f"store_id {known_store_id!r}: its local database was replaced and "
                "its sequence numbers started again, so its new records would be "
                "mistaken for duplicates. Restore the agent's original database, or "
                "start the agent under a new agent id"
            )

    def _batch_rows(
        self, batch: IngestBatch, now: dt.datetime
    ) -> dict[str, list[tuple[Any, ...]]]:
        encode_time = self.dialect.encode_time
        agent_id, site, synced_at = batch.agent_id, batch.site, encode_time(now)
        return {
            "readings": [
                (
                    agent_id, r.seq, site, r.machine_id, r.machine_seq,
                    encode_time(r.ts), r.product_type, r.air_temperature_k,
                    r.process_temperature_k, r.rotational_speed_rpm, r.torque_nm,
                    r.tool_wear_min, encode_time(r.received_at), synced_at,
                )
                for r in batch.readings
            ],
            "predictions": [
                (
                    agent_id, p.reading_seq, p.model_version, p.failure_probability,
                    p.failure_label, p.risk_band, p.failure_type,
                    p.failure_type_probability,
                )
                for p in batch.predictions
            ],
            "quarantine": [
                (
                    agent_id, q.seq, encode_time(q.received_at), q.topic, q.reason,
                    q.excerpt, q.size_bytes,
                )
                for q in batch.quarantine
            ],
            "alerts": [
                (
                    agent_id, a.seq, site, a.machine_id, encode_time(a.ts), a.state,
                    a.failure_probability, a.risk_band, a.failure_type,
                    a.model_version, a.reading_seq,
                )
                for a in batch.alerts
            ],
        }  # fmt: skip

    def _update_machines(
        self, cursor: Cursor, batch: IngestBatch, now: dt.datetime
    ) -> None:
        latest: dict[str, dt.datetime] = {}
        for reading in batch.readings:
            if (
                reading.machine_id not in latest
                or reading.ts > latest[reading.machine_id]
            ):
                latest[reading.machine_id] = reading.ts
        encode_time = self.dialect.encode_time
        self._insert_many(
            cursor,
            _UPSERT_MACHINE,
            [
                (
                    batch.site,
                    machine_id,
                    batch.agent_id,
                    encode_time(now),
                    encode_time(ts),
                )
                for machine_id, ts in sorted(latest.items())
            ],
        )

    def _agent(self, row: Sequence[Any]) -> AgentRow:
        decode_time, decode_json = self.dialect.decode_time, self.dialect.decode_json
        return AgentRow(
            agent_id=row[0],
            site=row[1],
            store_id=row[2],
            model_version=row[3],
            backlog=decode_json(row[4]) or {},
            counters=decode_json(row[5]) or {},
            started_at=decode_time(row[6]),
            last_heartbeat_at=decode_time(row[7]),
            first_seen_at=_required_time(decode_time(row[8])),
        )

    def _model(self, row: Sequence[Any]) -> ModelVersion:
        return ModelVersion(
            version=row[0],
            created_at=_required_time(self.dialect.decode_time(row[1])),
            status=row[2],
            sha256=row[3],
            manifest=self.dialect.decode_json(row[4]),
            metrics=self.dialect.decode_json(row[5]) or {},
            path=row[6],
            rejection_reason=row[7],
        )

    def _deployment(self, row: Sequence[Any]) -> Deployment:
        return Deployment(
            id=row[0],
            version=row[1],
            scope=row[2],
            created_at=_required_time(self.dialect.decode_time(row[3])),
            created_by=row[4],
        )


def _required_time(value: dt.datetime | None) -> dt.datetime:
    if value is None:
        raise StorageError("a NOT NULL timestamp column returned NULL")
    return value


def _risk_order(machine: MachineRisk) -> tuple[bool, float, str, str]:
    probability = machine.failure_probability
    return (
        probability is None,
        -(probability or 0.0),
        machine.site,
        machine.machine_id,
    )
