"""Tests for the model card: written with each version, listed, loaded, verified."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from control_plane.data import Dataset
from control_plane.model_store import ModelStore
from control_plane.training.model import TrainedModels
from control_plane.training.model_card import (
    MODEL_CARD_FORMAT,
    MODEL_CARD_JSON,
    MODEL_CARD_MARKDOWN,
    ModelCardError,
    load_model_card,
)
from control_plane.training.pipeline import package_models
from edge_agent.manifest import ManifestError, ModelManifest, sha256_file

CARD_FIELDS = {
    "format",
    "version",
    "created_at",
    "summary",
    "model",
    "training_data",
    "label_consistency",
    "label_policy",
    "evaluation",
    "cross_validation",
    "decision_threshold",
    "risk_bands",
    "suspected_leakage",
    "known_limits",
    "artifact",
    "parity",
}


def test_model_card_listed_in_manifest(model_dir: Path) -> None:
    document = ModelManifest.from_directory(model_dir).document

    listed = {entry["file"]: entry["sha256"] for entry in document["documents"]}

    assert set(listed) == {MODEL_CARD_JSON, MODEL_CARD_MARKDOWN}
    for name, digest in listed.items():
        assert sha256_file(model_dir / name) == digest
    assert document["suspected_leakage"] == []
    assert document["label_consistency"]["failure_without_type"]["count"] == 9
    assert document["label_policy"]["failure_type_head_type_without_failure"] == (
        "trains as 'No Failure'"
    )


def test_load_model_card_returns_dashboard_fields(model_dir: Path) -> None:
    card = load_model_card(model_dir)
    manifest = ModelManifest.from_directory(model_dir)

    assert set(card) == CARD_FIELDS
    assert card["format"] == MODEL_CARD_FORMAT
    assert card["version"] == 1
    assert (
        card["training_data"]["sha256"] == manifest.document["training_data"]["sha256"]
    )
    rows = {row["name"]: row for row in card["evaluation"]["metrics"]}
    assert set(rows) == {
        "failure_f1",
        "failure_pr_auc",
        "recall_at_precision_90",
        "failure_type_macro_f1",
    }
    assert rows["failure_f1"]["ceiling"] == 0.917
    assert rows["failure_f1"]["value"] > 0.8
    assert len(card["evaluation"]["precision_recall_curve"]) == 99
    assert card["evaluation"]["rows"] == 2000
    assert sum(b["rows"] for b in card["evaluation"]["reliability_curve"]) == 2000
    assert card["decision_threshold"]["value"] == manifest.decision_threshold
    bands = card["risk_bands"]
    assert [band["name"] for band in bands] == ["low", "medium", "high"]
    assert sum(band["test"]["rows"] for band in bands) == 2000
    assert bands[2]["test"]["failure_rate"] > 0.8
    assert len(card["known_limits"]) >= 3
    assert card["cross_validation"] is None


def test_model_card_markdown_shows_table(model_dir: Path) -> None:
    text = (model_dir / MODEL_CARD_MARKDOWN).read_text(encoding="utf-8")

    assert text.startswith("# Model card: edgepm model v1")
    assert "| failure F1 |" in text
    assert "## Known limits" in text
    assert "failures without a failure type: 9" in text


def test_load_model_card_rejects_missing_and_malformed(
    model_dir: Path, tmp_path: Path
) -> None:
    version = tmp_path / "v1"
    shutil.copytree(model_dir, version)
    (version / MODEL_CARD_JSON).write_text('{"format": "other"}', encoding="utf-8")

    with pytest.raises(ModelCardError, match="has format 'other', expected"):
        load_model_card(version)
    (version / MODEL_CARD_JSON).write_text("{", encoding="utf-8")
    with pytest.raises(ModelCardError, match="is not valid JSON"):
        load_model_card(version)
    (version / MODEL_CARD_JSON).unlink()
    with pytest.raises(ModelCardError, match="not found; versions trained before"):
        load_model_card(version)


def test_model_store_publish_copies_model_card(model_dir: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")

    published = store.publish(model_dir)

    for name in (MODEL_CARD_JSON, MODEL_CARD_MARKDOWN):
        assert sha256_file(published.directory / name) == sha256_file(model_dir / name)
    assert load_model_card(published.directory)["version"] == 1


def test_model_store_rejects_tampered_model_card(
    model_dir: Path, tmp_path: Path
) -> None:
    candidate = tmp_path / "candidate"
    shutil.copytree(model_dir, candidate)
    card = json.loads((candidate / MODEL_CARD_JSON).read_text(encoding="utf-8"))
    card["summary"] = "better than it is"
    (candidate / MODEL_CARD_JSON).write_text(json.dumps(card), encoding="utf-8")
    store = ModelStore(tmp_path / "store")

    with pytest.raises(ManifestError, match="document does not belong to this version"):
        store.publish(candidate)
    assert store.versions() == []


def test_model_store_rejects_missing_model_card(
    model_dir: Path, tmp_path: Path
) -> None:
    candidate = tmp_path / "candidate"
    shutil.copytree(model_dir, candidate)
    (candidate / MODEL_CARD_MARKDOWN).unlink()
    store = ModelStore(tmp_path / "store")

    with pytest.raises(ManifestError, match="model_card.md not found"):
        store.publish(candidate)
    assert list(store.root.iterdir()) == []


def spread_of(figures: dict[str, float]) -> dict[str, dict[str, float]]:
    return {name: {"mean": value, "std": 0.01} for name, value in figures.items()}


def test_package_models_flags_leaking_cross_validation(
    trained_models: TrainedModels, ai4i_dataset: Dataset, tmp_path: Path
) -> None:
    leaking = {
        "failure_f1": 0.99,
        "failure_pr_auc": 0.99,
        "recall_at_precision_90": 0.98,
        "failure_type_macro_f1": 0.97,
    }
    summary = {
        "protocol": "Nested cross-validation of a candidate that saw the outcome.",
        "sklearn": spread_of(leaking),
        "onnx": spread_of(leaking),
    }

    directory = package_models(
        trained_models,
        ai4i_dataset,
        ModelStore(tmp_path / "store"),
        version=1,
        cross_validation=summary,
    )

    card = load_model_card(directory)
    manifest = ModelManifest.from_directory(directory).document
    assert len(card["suspected_leakage"]) == 4
    assert card["suspected_leakage"][0].startswith("cross-validation: failure F1")
    assert manifest["suspected_leakage"] == card["suspected_leakage"]
    assert manifest["cross_validation"] == summary
    markdown = (directory / MODEL_CARD_MARKDOWN).read_text(encoding="utf-8")
    assert "| failure F1 | 0.990 ± 0.010 | 0.990 ± 0.010 |" in markdown
