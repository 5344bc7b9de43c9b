"""The control plane's database: one schema on PostgreSQL or embedded SQLite.

``open_storage`` picks the backend from the URL scheme; callers use the ``Storage``
interface and never see which one they got.
"""

from __future__ import annotations

from pathlib import Path

from control_plane.storage.base import SqlStorage, Storage, utc_now
from control_plane.storage.errors import (
    InvalidRequestError,
    NotFoundError,
    SchemaVersionError,
    StorageError,
    StorageUnavailableError,
    StoreIdConflictError,
)

__all__ = [
    "InvalidRequestError",
    "NotFoundError",
    "SchemaVersionError",
    "SqlStorage",
    "Storage",
    "StorageError",
    "StorageUnavailableError",
    "StoreIdConflictError",
    "open_storage",
    "utc_now",
]

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def open_storage(url: str, *, read_only: bool = False) -> Storage:
    """Open the database a URL names.

    Args:
        url: ``sqlite:///relative/path``, ``sqlite:////absolute/path`` or a
            ``postgresql://`` URL.
        read_only: open for reading only, as the dashboard does.

    Raises:
        StorageError: the scheme is not supported.
        StorageUnavailableError: the database cannot be opened.
    """
    if url.startswith(SQLITE_PREFIX):
        from control_plane.storage.sqlite import SqliteStorage

        return SqliteStorage(Path(url[len(SQLITE_PREFIX) :]), read_only=read_only)
    if url.startswith(POSTGRES_PREFIXES):
        from control_plane.storage.postgres import PostgresStorage

        return PostgresStorage(url, read_only=read_only)
    raise StorageError(
        f"database URL {url.split('://')[0]!r}:// is not supported; use "
        "sqlite:///path/to/file.sqlite3 or postgresql://user@host:5432/dbname"
    )
