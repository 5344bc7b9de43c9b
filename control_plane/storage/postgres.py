"""The PostgreSQL backend: psycopg 3 connections from a small thread-safe pool."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from control_plane.storage.base import Cursor, SqlStorage
from control_plane.storage.errors import StorageError, StorageUnavailableError
from control_plane.storage.schema import POSTGRES

logger = logging.getLogger(__name__)

# Any constant works as long as every control plane process uses the same one.
_MIGRATION_LOCK_KEY = 0x6564676570_6D


class PostgresStorage(SqlStorage):
    """Storage in a PostgreSQL database.

    Args:
        url: a ``postgresql://`` URL or a libpq connection string.
        read_only: open every transaction read-only.
        pool_size: the maximum number of connections open at once.
        connect_timeout_s: seconds to wait for the server when connecting and for a
            free connection from the pool.
    """

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        pool_size: int = 4,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.dialect = POSTGRES
        self.description = f"PostgreSQL database {describe_url(url)}"
        self._url = url
        self._read_only = read_only
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[psycopg.Connection] = []
        self._idle_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._pool_size = pool_size

    def close(self) -> None:
        """Close the idle connections; connections in use close when returned."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _lock_schema(self, cursor: Cursor) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        with (
            self._connection() as connection,
            self._translated(),
            connection.transaction(),
            connection.cursor() as cursor,
        ):
            yield cursor

    @contextmanager
    def _reading(self) -> Iterator[Cursor]:
        with (
            self._connection() as connection,
            self._translated(),
            connection.cursor() as cursor,
        ):
            yield cursor

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        if not self._slots.acquire(timeout=self._connect_timeout_s):
            raise StorageUnavailableError(
                f"all {self._pool_size} connections to {self.description} stayed busy "
                f"for {self._connect_timeout_s} s; the database is too slow or the "
                "pool too small"
            )
        connection: psycopg.Connection | None = None
        try:
            with self._idle_lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                connection = self._open()
            yield connection
        finally:
            if connection is not None:
                self._release(connection)
            self._slots.release()

    def _open(self) -> psycopg.Connection:
        try:
            connection = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=max(1, round(self._connect_timeout_s)),
            )
            if self._read_only:
                connection.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            raise StorageUnavailableError(
                f"cannot connect to {self.description}: {exc}".strip()
            ) from exc
        return connection

    def _release(self, connection: psycopg.Connection) -> None:
        reusable = (
            not connection.closed
            and not connection.broken
            and connection.info.transaction_status == pq.TransactionStatus.IDLE
        )
        if reusable:
            with self._idle_lock:
                self._idle.append(connection)
        else:
            connection.close()

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except psycopg.errors.UndefinedTable as exc:
            raise StorageError(
                f"{self.description} has no control plane tables ({exc}); "
                "run edgepm-control-plane init-db"
            ) from exc
        except psycopg.OperationalError as exc:
            raise StorageUnavailableError(f"{self.description}: {exc}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"{self.description}: {exc}") from exc


def describe_url(url: str) -> str:
    """Return host, port and database name of a connection URL, without secrets."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparsable connection URL)"
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    return f"{params.get('dbname', '')!s} on {host}:{port}"
