"""Fixtures for the control plane tests: a fresh database on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from control_plane.storage import Storage, open_storage


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
