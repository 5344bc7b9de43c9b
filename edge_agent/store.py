"""The local SQLite store: readings, predictions, quarantine, alerts and sync cursors.

Every record gets its number from one per-agent sequence kept in the ``meta`` table,
allocated inside the transaction that stores the record, so numbers are never reused
and the uplink can resume from "highest number acknowledged". A store is used from
one thread only (sqlite3 enforces it): the agent's store executor thread.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from edge_agent.alerts import AlertState
from edge_agent.errors import StoreError
from edge_agent.reading import MEASUREMENT_FIELDS

logger = logging.getLogger(__name__)

# Tables the uplink sends, with the column that orders them and that the upload
# cursor stores. Predictions carry no number of their own: they follow their reading.
UPLOAD_TABLES: dict[str, str] = {
    "readings": "seq",
    "predictions": "reading_seq",
    "quarantine": "seq",
    "alerts": "seq",
}
READING_KEY = ("machine_id", "machine_seq", "ts")

# The agent has one writer connection, so a lock wait happens only when another process
# writes the file. Two seconds bound how long a batch stalls on it before a retry.
_BUSY_TIMEOUT_MS = 2000
# SQLite 3.32 and later accept 32,766 bound parameters; three per key stays far below.
_MAX_KEYS_PER_QUERY = 5000


class LocalStore:
    """The agent's SQLite file, opened with WAL and synchronous=FULL.

    Use ``LocalStore.open`` on the thread that will use it. The insert methods expect to
    run inside ``transaction()``; a single-statement update called outside one commits
    on its own.
    """

    def __init__(self, db: sqlite_utils.Database, path: Path) -> None:
        self.db = db
        self.path = path
        self.store_id = self._read_meta("store_id")

    @classmethod
    def open(cls, path: Path) -> LocalStore:
        """Open the store at ``path``, creating the file and its tables when new.

        Raises:
            StoreError: the file cannot be created or is not an agent store.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite_utils.Database(path)
            db.enable_wal()
            # FULL syncs the WAL at every commit. The broker deletes a message once
            # it is acknowledged, and the acknowledgement follows the commit, so a
            # commit must survive a power loss too. One commit covers a micro-batch,
            # which keeps the cost to one fsync per batch.
            db.execute("PRAGMA synchronous = FULL")
            db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            with db.atomic():
                _create_schema(db)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(
                f"cannot open the agent store {path}: {exc}; check that "
                "EDGEPM_DATA_DIR is writable and holds an edge agent store"
            ) from exc
        store = cls(db, path)
        logger.info(
            "store %s opened (store id %s, last seq %d)",
            path,
            store.store_id,
            store.last_seq(),
        )
        return store

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one transaction: commit at the end, roll back on error.

        Raises:
            StoreError: SQLite failed (locked by another process, disk full, I/O).
        """
        connection = self.db.conn
        try:
            # IMMEDIATE takes the write lock up front. A deferred transaction that has
            # read first gets SQLITE_BUSY at once when another process holds the
            # lock, without waiting the busy timeout.
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise StoreError(
                f"write to the agent store {self.path} failed: {exc}"
            ) from exc

    # Sequence

    def last_seq(self) -> int:
        """Return the highest sequence number allocated so far (0 for a new store)."""
        return int(self._read_meta("last_seq"))

    def set_last_seq(self, seq: int) -> None:
        """Record ``seq`` as the highest number allocated; call it in the transaction
        that stores the records numbered up to ``seq``."""
        self._write_meta("last_seq", str(seq))

    # Writes of one micro-batch

    def known_reading_keys(
        self, keys: Sequence[tuple[str, int, str]]
    ) -> set[tuple[str, int, str]]:
        """Return which of the (machine_id, machine_seq, ts) keys are already stored."""
        known: set[tuple[str, int, str]] = set()
        for start in range(0, len(keys), _MAX_KEYS_PER_QUERY):
            chunk = keys[start : start + _MAX_KEYS_PER_QUERY]
            values = ", ".join(["(?, ?, ?)"] * len(chunk))
            sql = (
                "SELECT machine_id, machine_seq, ts FROM readings "
                f"WHERE (machine_id, machine_seq, ts) IN (VALUES {values})"
            )
            parameters = [part for key in chunk for part in key]
            known.update(
                (row[0], row[1], row[2]) for row in self.db.execute(sql, parameters)
            )
        return known

    def insert_readings(self, rows: Sequence[dict[str, Any]]) -> None:
        self._insert("readings", rows)

    def insert_predictions(self, rows: Sequence[dict[str, Any]]) -> None:
        self._insert("predictions", rows)

    def insert_quarantine(self, rows: Sequence[dict[str, Any]]) -> None:
        self._insert("quarantine", rows)

    def insert_alerts(self, rows: Sequence[dict[str, Any]]) -> None:
        self._insert("alerts", rows)

    def load_alert_states(self, machine_ids: Iterable[str]) -> dict[str, AlertState]:
        """Return the stored alert state of each machine that has one."""
        wanted = sorted(set(machine_ids))
        states: dict[str, AlertState] = {}
        for start in range(0, len(wanted), _MAX_KEYS_PER_QUERY):
            chunk = wanted[start : start + _MAX_KEYS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            rows = self.db.execute(
                "SELECT machine_id, state, below_count FROM alert_state "
                f"WHERE machine_id IN ({marks})",
                chunk,
            )
            for machine_id, state, below_count in rows:
                states[machine_id] = AlertState(state, int(below_count))
        return states

    def save_alert_states(self, states: dict[str, AlertState]) -> None:
        rows = [
            {"machine_id": machine, "state": s.state, "below_count": s.below_count}
            for machine, s in states.items()
        ]
        self.db.table("alert_state").upsert_all(rows, pk="machine_id")

    # Alert publishing

    def unpublished_alerts(self, limit: int) -> list[dict[str, Any]]:
        """Return the oldest alerts not yet acknowledged by the broker."""
        return list(
            self.db.query(
                "SELECT * FROM alerts WHERE published = 0 ORDER BY seq LIMIT ?", [limit]
            )
        )

    def mark_alert_published(self, seq: int) -> None:
        self.db.execute("UPDATE alerts SET published = 1 WHERE seq = ?", [seq])

    # Upload

    def upload_cursor(self, table: str) -> int:
        """Return the highest number of ``table`` the control plane acknowledged."""
        row = self.db.execute(
            "SELECT seq FROM upload_cursor WHERE table_name = ?", [table]
        ).fetchone()
        return int(row[0]) if row else 0

    def advance_upload_cursor(self, table: str, seq: int) -> None:
        """Move a table's cursor forward to ``seq``; it never moves back."""
        self.db.execute(
            "INSERT INTO upload_cursor (table_name, seq) VALUES (?, ?) "
            "ON CONFLICT (table_name) DO UPDATE SET seq = max(seq, excluded.seq)",
            [table, seq],
        )

    def records_after(
        self, table: str, after: int, limit: int, up_to: int | None = None
    ) -> list[dict[str, Any]]:
        """Return up to ``limit`` records of ``table`` numbered above ``after``.

        Args:
            table: one of ``UPLOAD_TABLES``.
            after: the table's upload cursor.
            limit: maximum number of records.
            up_to: when given, only records numbered at most this (predictions and
                alerts are limited to readings the control plane has or gets with them).
        """
        column = UPLOAD_TABLES[table]
        sql = f"SELECT * FROM {table} WHERE {column} > ?"
        parameters: list[int] = [after]
        if up_to is not None:
            sql += " AND reading_seq <= ?"
            parameters.append(up_to)
        sql += f" ORDER BY {column} LIMIT ?"
        parameters.append(limit)
        rows = list(self.db.query(sql, parameters))
        if table == "alerts":
            for row in rows:
                row.pop("published")
        return rows

    def backlog(self) -> dict[str, int]:
        """Return, per upload table, how many records await the control plane's ack."""
        counts = {}
        for table, column in UPLOAD_TABLES.items():
            cursor = self.upload_cursor(table)
            row = self.db.execute(
                f"SELECT count(*) FROM {table} WHERE {column} > ?", [cursor]
            ).fetchone()
            counts[table] = int(row[0])
        return counts

    def count(self, table: str) -> int:
        return int(self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def _insert(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        # One executemany over rows of the same keys: sqlite-utils' insert_all
        # inspects every value and took about half of a micro-batch's time.
        if not rows:
            return
        columns = list(rows[0])
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(':' + column for column in columns)})"
        )
        self.db.conn.executemany(sql, rows)

    def _read_meta(self, key: str) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        if row is None:
            raise StoreError(
                f"{self.path} has no {key!r} in its meta table, so it is not an edge "
                "agent store; move it away or point EDGEPM_DATA_DIR elsewhere"
            )
        return str(row[0])

    def _write_meta(self, key: str, value: str) -> None:
        self.db.execute("UPDATE meta SET value = ? WHERE key = ?", [value, key])


def _create_schema(db: sqlite_utils.Database) -> None:
    measurements: dict[str, type] = {name: float for name in MEASUREMENT_FIELDS}
    db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db.execute(
        "INSERT OR IGNORE INTO meta (key, value) "
        "VALUES ('store_id', ?), ('last_seq', '0')",
        [str(uuid.uuid4())],
    )
    db.table("readings").create(
        {
            "seq": int,
            "received_at": str,
            "site": str,
            "machine_id": str,
            "machine_seq": int,
            "ts": str,
            "product_type": str,
            **measurements,
        },
        pk="seq",
        not_null=set(READING_KEY) | {"received_at", "site", "product_type"},
        if_not_exists=True,
    )
    db.table("readings").create_index(
        READING_KEY, index_name="readings_key", unique=True, if_not_exists=True
    )
    db.table("predictions").create(
        {
            "reading_seq": int,
            "model_version": int,
            "failure_probability": float,
            "failure_label": int,
            "risk_band": str,
            "failure_type": str,
            "failure_type_probability": float,
        },
        pk=("reading_seq", "model_version"),
        foreign_keys=[("reading_seq", "readings", "seq")],
        if_not_exists=True,
    )
    db.table("quarantine").create(
        {
            "seq": int,
            "received_at": str,
            "topic": str,
            "reason": str,
            "excerpt": str,
            "size_bytes": int,
        },
        pk="seq",
        if_not_exists=True,
    )
    db.table("alerts").create(
        {
            "seq": int,
            "machine_id": str,
            "ts": str,
            "state": str,
            "failure_probability": float,
            "risk_band": str,
            "failure_type": str,
            "model_version": int,
            "reading_seq": int,
            "published": int,
        },
        pk="seq",
        defaults={"published": 0},
        if_not_exists=True,
    )
    db.execute(
        "CREATE INDEX IF NOT EXISTS alerts_unpublished ON alerts (seq) "
        "WHERE published = 0"
    )
    db.table("alert_state").create(
        {"machine_id": str, "state": str, "below_count": int},
        pk="machine_id",
        if_not_exists=True,
    )
    db.table("upload_cursor").create(
        {"table_name": str, "seq": int}, pk="table_name", if_not_exists=True
    )
