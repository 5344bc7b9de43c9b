"""Errors raised by the control plane's storage layer."""

from __future__ import annotations


class StorageError(RuntimeError):
    """A storage operation failed; the message names the database and the fix."""


class StorageUnavailableError(StorageError):
    """The database cannot be reached or opened."""


class SchemaVersionError(StorageError):
    """The database has a schema this release does not know."""


class StoreIdConflictError(StorageError):
    """A known agent sent records from a different local store than before."""


class InvalidRequestError(StorageError):
    """A request names a model version or scope that cannot be used."""


class NotFoundError(StorageError):
    """A requested model version or record does not exist."""
