"""The model manifest: parsing, risk bands and the decision rule at a tie."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_agent.manifest import ManifestError, ModelManifest
from edge_agent.scorer import decide_failure


def manifest_document(threshold: float = 0.9) -> dict[str, Any]:
    return {
        "format": "edgepm-model/1",
        "version": 4,
        "artifact": {"sha256": "0" * 64},
        "outputs": {
            "failure_probability": {"name": "failure_probabilities"},
            "failure_type_probability": {
                "name": "failure_type_probabilities",
                "classes": ["No Failure", "Power Failure"],
            },
        },
        "decision_threshold": threshold,
        "risk_bands": [
            {"name": "high", "min_probability": threshold},
            {"name": "low", "min_probability": 0.0},
            {"name": "medium", "min_probability": 0.3},
        ],
    }


def test_risk_band_picks_highest_band_reached() -> None:
    manifest = ModelManifest.from_document(manifest_document())

    assert manifest.risk_band(0.0) == "low"
    assert manifest.risk_band(0.29) == "low"
    assert manifest.risk_band(0.3) == "medium"
    assert manifest.risk_band(0.95) == "high"


def test_risk_band_agrees_with_label_at_float32_tie() -> None:
    manifest = ModelManifest.from_document(manifest_document(threshold=0.9))
    tie = float(np.float32(0.9))  # 0.89999998, below 0.9 in float64

    label = decide_failure(np.array([tie]), manifest.decision_threshold)[0]

    assert label == 1
    assert manifest.risk_band(tie) == "high"


def test_manifest_rejects_other_format() -> None:
    document = {**manifest_document(), "format": "other/2"}

    with pytest.raises(ManifestError, match="expected 'edgepm-model/1'"):
        ModelManifest.from_document(document)


def test_manifest_rejects_missing_key() -> None:
    document = manifest_document()
    del document["decision_threshold"]

    with pytest.raises(ManifestError, match="decision_threshold"):
        ModelManifest.from_document(document)


def test_manifest_rejects_bands_not_starting_at_zero() -> None:
    document = manifest_document()
    document["risk_bands"] = [{"name": "high", "min_probability": 0.5}]

    with pytest.raises(ManifestError, match="start with a band at 0.0"):
        ModelManifest.from_document(document)
