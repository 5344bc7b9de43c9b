"""Tests for the model store: publishing, listing, opening, failed publishes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from control_plane.model_store import ModelStore, ModelStoreError
from edge_agent.manifest import ManifestError, sha256_file
from edge_agent.scorer import OnnxScorer


def candidate_as(model_dir: Path, destination: Path, version: int) -> Path:
    """Copy a version directory and renumber it; the graph and golden vectors hold."""
    shutil.copytree(model_dir, destination)
    manifest = destination / "manifest.json"
    document = json.loads(manifest.read_text(encoding="utf-8"))
    document["version"] = version
    manifest.write_text(json.dumps(document), encoding="utf-8")
    return destination


def test_model_store_publishes_and_lists(model_dir: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    assert store.versions() == []
    assert store.next_version() == 1

    published = store.publish(model_dir)
    second = store.publish(candidate_as(model_dir, tmp_path / "c2", version=2))

    assert published.directory == store.root / "v1"
    assert second.version == 2
    assert store.versions() == [1, 2]
    assert store.latest_version() == 2
    assert store.next_version() == 3
    assert store.get(1).document["version"] == 1
    assert store.get(2).artifact_path.is_file()
    assert sha256_file(published.artifact_path) == sha256_file(model_dir / "model.onnx")
    assert store.open().version == 2
    assert store.open(1).version == 1


def test_model_store_leaves_no_staging_dirs(model_dir: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")

    store.publish(model_dir)

    assert [entry.name for entry in store.root.iterdir()] == ["v1"]


def test_model_store_rejects_existing_version(model_dir: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    store.publish(model_dir)
    before = sha256_file(store.root / "v1" / "manifest.json")
    other = candidate_as(model_dir, tmp_path / "other", version=1)
    (other / "manifest.json").write_text(
        (other / "manifest.json").read_text(encoding="utf-8").replace("low", "LOW"),
        encoding="utf-8",
    )

    with pytest.raises(ModelStoreError, match="v1 already exists.*publish as v2"):
        store.publish(other)
    assert sha256_file(store.root / "v1" / "manifest.json") == before
    assert [entry.name for entry in store.root.iterdir()] == ["v1"]


def test_model_store_failed_publish_keeps_previous(
    model_dir: Path, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "store")
    store.publish(model_dir)
    bad = candidate_as(model_dir, tmp_path / "bad", version=2)
    artifact = bad / "model.onnx"
    artifact.write_bytes(artifact.read_bytes()[:-100])

    with pytest.raises(ManifestError, match="does not belong to this manifest"):
        store.publish(bad)
    assert store.versions() == [1]
    assert [entry.name for entry in store.root.iterdir()] == ["v1"]
    assert OnnxScorer(store.root / "v1").version == 1
    assert store.open().version == 1


def test_model_store_rejects_incomplete_candidate(
    model_dir: Path, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "store")
    candidate = candidate_as(model_dir, tmp_path / "c", version=1)
    (candidate / "model.onnx").unlink()

    with pytest.raises(ManifestError, match="model.onnx not found"):
        store.publish(candidate)
    assert list(store.root.iterdir()) == []


def test_model_store_ignores_foreign_entries(model_dir: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    store.publish(model_dir)
    (store.root / ".staging-left-by-a-crash").mkdir()
    (store.root / "v7.tmp").mkdir()
    (store.root / "v9").write_text("not a directory", encoding="utf-8")

    assert store.versions() == [1]
    assert store.next_version() == 2


def test_model_store_reports_missing_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")

    with pytest.raises(ModelStoreError, match="is empty; train a model first"):
        store.open()
    with pytest.raises(ModelStoreError, match=r"v3 not found .*versions: none"):
        store.get(3)
