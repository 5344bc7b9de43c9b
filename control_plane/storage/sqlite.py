"""The embedded SQLite backend: one file, one connection shared under a lock.

SQLite serializes writers anyway, so one connection costs no concurrency for writes;
the dashboard reads the same file from its own process.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from control_plane.storage.base import Cursor, SqlStorage
from control_plane.storage.errors import StorageError, StorageUnavailableError
from control_plane.storage.schema import SQLITE

logger = logging.getLogger(__name__)

# A writer waits this long for another process's lock before the request fails.
BUSY_TIMEOUT_S = 10.0


class SqliteStorage(SqlStorage):
    """Storage in one SQLite file in WAL mode.

    Args:
        path: the database file; its directory is created when writable.
        read_only: open the file read-only; it must exist already.

    Raises:
        StorageUnavailableError: the file cannot be opened.
    """

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.dialect = SQLITE
        self.description = f"SQLite database {path}"
        self.path = path
        self._lock = threading.RLock()
        self._connection = self._connect(path, read_only)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._connection.close()

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        with self._lock, self._translated():
            cursor = self._connection.cursor()
            # IMMEDIATE takes the write lock at BEGIN, so a transaction that reads
            # and then writes (the store-id check) cannot lose a race to another
            # process.
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                self._connection.rollback()
                raise
            else:
                self._connection.commit()
            finally:
                cursor.close()

    @contextmanager
    def _reading(self) -> Iterator[Cursor]:
        with self._lock, self._translated():
            cursor = self._connection.cursor()
            try:
                yield cursor
            finally:
                cursor.close()

    def _connect(self, path: Path, read_only: bool) -> sqlite3.Connection:
        try:
            if read_only:
                if not path.is_file():
                    raise StorageUnavailableError(
                        f"{self.description} does not exist; start the API or run "
                        "edgepm-control-plane init-db first"
                    )
                uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
                connection = sqlite3.connect(
                    uri, uri=True, check_same_thread=False, isolation_level=None
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(
                    path, check_same_thread=False, isolation_level=None
                )
                connection.execute("PRAGMA journal_mode = WAL")
                # FULL syncs at every commit, so a 200 to an agent means the batch
                # survives a power cut; commits are per batch, so it costs little.
                connection.execute("PRAGMA synchronous = FULL")
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        except (sqlite3.Error, OSError) as exc:
            raise StorageUnavailableError(
                f"cannot open {self.description}: {exc}; check the path in "
                "EDGEPM_DATABASE_URL and its permissions"
            ) from exc
        return connection

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise StorageError(
                    f"{self.description} has no control plane tables ({exc}); "
                    "run edgepm-control-plane init-db"
                ) from exc
            raise StorageUnavailableError(f"{self.description}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"{self.description}: {exc}") from exc
