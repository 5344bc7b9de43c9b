"""Fixtures for the dashboard tests: a database filled through the storage layer."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.model_store import ModelStore
from control_plane.registry import register_version
from control_plane.storage import Storage, open_storage, utc_now
from control_plane.storage.records import FLEET_SCOPE
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


@pytest.fixture
def models_storage(tmp_path: Path, model_store_root: Path) -> Iterator[Storage]:
    """A database with v1 of the quick model deployed to the fleet and a v2 whose
    directory has a manifest but no model card."""
    stored = ModelStore(model_store_root).get(1)
    no_card = tmp_path / "v2"
    no_card.mkdir()
    shutil.copy(stored.directory / "manifest.json", no_card / "manifest.json")
    storage = open_storage(f"sqlite:///{tmp_path / 'models.sqlite3'}")
    try:
        storage.migrate()
        v1 = register_version(storage, stored)
        storage.record_model_version(
            dataclasses.replace(v1, version=2, sha256="0" * 64, path=str(no_card))
        )
        storage.add_deployment(1, FLEET_SCOPE, created_by="test")
        yield storage
    finally:
        storage.close()
