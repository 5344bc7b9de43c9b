"""Fixtures for the dashboard tests: a database filled through the storage layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.storage import Storage, open_storage, utc_now
from tests.control_plane.factories import make_batch, make_heartbeat


@pytest.fixture
def fleet_database(tmp_path: Path) -> str:
    """A SQLite database with one agent, two scored machines and an alert."""
    url = f"sqlite:///{tmp_path / 'control.sqlite3'}"
    storage = open_storage(url)
    try:
        storage.migrate()
        storage.ingest(make_batch())
        storage.record_heartbeat(make_heartbeat(), now=utc_now())
    finally:
        storage.close()
    return url


@pytest.fixture
def fleet_storage(fleet_database: str) -> Iterator[Storage]:
    """The filled database, opened read-only as the dashboard opens it."""
    storage = open_storage(fleet_database, read_only=True)
    yield storage
    storage.close()
