"""Fixtures for the control plane tests: a fresh database on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from control_plane.config import Settings
from control_plane.model_store import ModelStore, StoredVersion
from control_plane.registry import register_version
from control_plane.storage import Storage, open_storage
from tests.control_plane.api_server import ApiServer, serve_api


def postgres_url_from_conninfo(conninfo: str) -> str:
    """Turn the libpq key=value string of the postgres_url fixture into a URL."""
    params = conninfo_to_dict(conninfo)
    user = params.get("user", "postgres")
    host = params.get("host", "127.0.0.1")
    port = params.get("port", "5432")
    return f"postgresql://{user}@{host}:{port}/{params['dbname']}"


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL on each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'control.sqlite3'}"
    return postgres_url_from_conninfo(request.getfixturevalue("postgres_url"))


@pytest.fixture
def storage(database_url: str) -> Iterator[Storage]:
    """Migrated storage on each backend in turn, closed after the test."""
    opened = open_storage(database_url)
    opened.migrate()
    yield opened
    opened.close()


@pytest.fixture
def api_settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings of an open API on each backend in turn."""
    return Settings(database_url=database_url, model_store=tmp_path / "models")


@pytest.fixture
def api(api_settings: Settings) -> Iterator[ApiServer]:
    """The API on a free loopback port, on each backend in turn."""
    with serve_api(api_settings) as server:
        yield server


@pytest.fixture
def registered_model(model_store_root: Path, database_url: str) -> StoredVersion:
    """Version 1 of the session's quick model, recorded in the test's database."""
    stored = ModelStore(model_store_root).get(1)
    storage = open_storage(database_url)
    try:
        storage.migrate()
        register_version(storage, stored)
    finally:
        storage.close()
    return stored


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """Settings of an open API on SQLite, for tests where the backend is no factor."""
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'control.sqlite3'}",
        model_store=tmp_path / "models",
    )
