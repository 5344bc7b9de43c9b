"""The models page and model pages built from a registered quick model."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from dash.development.base_component import Component

from control_plane.dashboard.app import render_path
from control_plane.registry import record_rejection
from control_plane.storage import Storage
from control_plane.training.model_card import load_model_card
from tests.dashboard.test_dashboard_pages import _ids, _text

CARD_IDS = {
    "model-card",
    "model-metrics-table",
    "model-pr-graph",
    "model-reliability-graph",
    "model-confusion-matrix",
    "model-bands-table",
}


def _render(storage: Storage, path: str) -> Component:
    return render_path(storage, path, agent_stale_s=30.0)


def test_models_page_lists_versions(
    models_storage: Storage, model_store_root: Path
) -> None:
    manifest = json.loads((model_store_root / "v1" / "manifest.json").read_text())
    page = _render(models_storage, "/models")

    text = _text(page)
    assert "models-table" in _ids(page)
    assert "/models/1" in text
    assert "/models/2" in text
    assert "fleet" in text
    assert f"{manifest['metrics']['failure']['f1']:.3f}" in text


def test_fleet_page_links_models(models_storage: Storage) -> None:
    page = _render(models_storage, "/")

    text = _text(page)
    assert {"models-link", "fleet-model-version"} <= _ids(page)
    assert "/models/1" in text


def test_model_page_shows_card(models_storage: Storage) -> None:
    card = load_model_card(Path(models_storage.get_model_version(1).path))

    page = _render(models_storage, "/models/1")

    text = _text(page)
    assert _ids(page) >= CARD_IDS
    assert card["training_data"]["sha256"] in text
    assert "maximum F1 of out-of-fold" in text
    assert "Tool Wear Failure" in text
    assert "None flagged." in text


def test_model_page_missing_card_message(models_storage: Storage) -> None:
    page = _render(models_storage, "/models/2")

    assert "model-card-missing" in _ids(page)
    assert "model_card.json not found" in _text(page)
    assert "model-card" not in _ids(page)


def test_model_page_deleted_directory_message(models_storage: Storage) -> None:
    shutil.rmtree(models_storage.get_model_version(2).path)

    page = _render(models_storage, "/models/2")

    assert "model-card-missing" in _ids(page)
    assert "does not exist" in _text(page)


def test_model_page_rejected_version_message(models_storage: Storage) -> None:
    record_rejection(models_storage, 3, "parity failed")

    page = _render(models_storage, "/models/3")

    text = _text(page)
    assert "model-card-missing" in _ids(page)
    assert "has no version directory" in text
    assert "parity failed" in text


def test_model_page_unknown_version_message(models_storage: Storage) -> None:
    page = _render(models_storage, "/models/99")

    assert "model-card-missing" in _ids(page)
    assert "model v99 is not recorded" in _text(page)


def test_model_page_out_of_range_version_not_found(models_storage: Storage) -> None:
    for path in ("/models/99999999999999999999999", "/models/0", "/models/\u00b2"):
        page = _render(models_storage, path)

        assert "Page not found" in _text(page), path


def test_model_page_malformed_card_message(
    models_storage: Storage, tmp_path: Path
) -> None:
    source = Path(models_storage.get_model_version(1).path)
    broken = tmp_path / "v4"
    shutil.copytree(source, broken)
    card = json.loads((broken / "model_card.json").read_text())
    del card["evaluation"]["metrics"]
    (broken / "model_card.json").write_text(json.dumps(card))
    v1 = models_storage.get_model_version(1)
    models_storage.record_model_version(
        dataclasses.replace(v1, version=4, sha256="4" * 64, path=str(broken))
    )

    page = _render(models_storage, "/models/4")

    assert "model-card-missing" in _ids(page)
    assert "malformed" in _text(page)
