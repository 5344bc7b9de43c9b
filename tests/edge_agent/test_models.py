"""The local model directory: active version, download, verification before use."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from edge_agent.errors import ModelUnavailableError
from edge_agent.manifest import ARTIFACT_FILE, MANIFEST_FILE, ManifestError
from edge_agent.models import ACTIVE_FILE, ModelDirectory, fetch_current_model
from tests.conftest import free_port
from tests.edge_agent.control_plane_stub import StubControlPlane


@pytest_asyncio.fixture
async def serving(model_dir: Path) -> AsyncIterator[StubControlPlane]:
    """A stub control plane that serves the session's model as current."""
    stub = StubControlPlane(free_port(), model_dir=model_dir)
    await stub.start()
    yield stub
    await stub.stop()


def test_models_empty_directory_has_no_active_version(tmp_path: Path) -> None:
    directory = ModelDirectory(tmp_path / "models")

    assert directory.active_version() is None
    assert directory.load_active() is None


def test_models_install_activates_version(tmp_path: Path, model_dir: Path) -> None:
    directory = ModelDirectory(tmp_path / "models")

    scorer = directory.install_directory(model_dir)

    assert scorer.version == 1
    assert (tmp_path / "models" / ACTIVE_FILE).read_text() == "v1\n"
    assert directory.load_active() is not None
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["active", "v1"]


def test_models_bad_download_keeps_good_model(tmp_path: Path, model_dir: Path) -> None:
    directory = ModelDirectory(tmp_path / "models")
    directory.install_directory(model_dir)
    good_artifact = (tmp_path / "models" / "v1" / ARTIFACT_FILE).read_bytes()
    manifest_json = (model_dir / MANIFEST_FILE).read_bytes()

    with pytest.raises(ManifestError, match="download the version again"):
        directory.install(manifest_json, good_artifact[:-10] + b"corrupted!")

    assert directory.active_version() == 1
    assert (tmp_path / "models" / "v1" / ARTIFACT_FILE).read_bytes() == good_artifact
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["active", "v1"]


def test_models_invalid_active_version_is_not_loaded(
    tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(model_dir, tmp_path / "models" / "v1")
    (tmp_path / "models" / "v1" / ARTIFACT_FILE).write_bytes(b"not onnx")
    (tmp_path / "models" / ACTIVE_FILE).write_text("v1\n")

    assert ModelDirectory(tmp_path / "models").load_active() is None
    assert "active model v1" in caplog.text
    assert "is invalid and not loaded" in caplog.text


def test_models_active_file_must_name_a_version(tmp_path: Path) -> None:
    (tmp_path / ACTIVE_FILE).write_text("latest\n")

    with pytest.raises(ModelUnavailableError, match="contains 'latest', expected"):
        ModelDirectory(tmp_path).active_version()


@pytest.mark.asyncio
async def test_models_fetch_verifies_and_installs(
    tmp_path: Path, serving: StubControlPlane
) -> None:
    directory = ModelDirectory(tmp_path / "models")

    async with aiohttp.ClientSession() as session:
        manifest_json, artifact = await fetch_current_model(
            session=session, control_plane_url=serving.base_url, headers={}
        )
    scorer = directory.install(manifest_json, artifact)

    assert scorer.version == 1
    assert directory.active_version() == 1


@pytest.mark.asyncio
async def test_models_fetch_reports_unreachable_control_plane() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    async with aiohttp.ClientSession() as session:
        with pytest.raises(
            ModelUnavailableError, match="check EDGEPM_CONTROL_PLANE_URL"
        ):
            await fetch_current_model(
                session=session, control_plane_url=url, headers={}
            )


@pytest.mark.asyncio
async def test_models_fetch_reports_missing_version(tmp_path: Path) -> None:
    stub = StubControlPlane(free_port())
    await stub.start()
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(ModelUnavailableError, match="returned 404"):
                await fetch_current_model(
                    session=session, control_plane_url=stub.base_url, headers={}
                )
    finally:
        await stub.stop()
