"""Tests for ONNX parity: engineered features, whole-dataset agreement, mismatches."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType

from control_plane.data import Dataset
from control_plane.model_store import ModelStore
from control_plane.training import pipeline as pipeline_module
from control_plane.training.features import (
    PHYSICAL_QUANTITIES,
    TAIL_DISTINCT_VALUES,
    PhysicalFeatures,
    engineered_features,
    register_converter,
)
from control_plane.training.model import TrainedModels, openmp_threads
from control_plane.training.parity import (
    MAX_PROBABILITY_DIFFERENCE,
    ParityError,
    check_parity,
)
from control_plane.training.pipeline import package_models
from edge_agent.manifest import ManifestError
from edge_agent.reading import MEASUREMENT_FIELDS
from edge_agent.scorer import OnnxScorer, decide_failure
from tests.model_fixture import OtherModel


def measurements_of(dataset: Dataset) -> np.ndarray:
    return dataset.features[list(MEASUREMENT_FIELDS)].to_numpy(dtype=np.float64)


def copy_version(model_dir: Path, destination: Path) -> Path:
    shutil.copytree(model_dir, destination)
    return destination


def test_physical_features_match_onnx_bitwise(ai4i_dataset: Dataset) -> None:
    register_converter()
    values = measurements_of(ai4i_dataset)
    transformer = PhysicalFeatures(features=PHYSICAL_QUANTITIES).fit(values)
    graph = convert_sklearn(
        transformer, initial_types=[("measurements", DoubleTensorType([None, 5]))]
    )
    session = ort.InferenceSession(
        graph.SerializeToString(), providers=["CPUExecutionProvider"]
    )

    (onnx_features,) = session.run(None, {"measurements": values})
    numpy_features = transformer.transform(values)

    assert onnx_features.dtype == np.float64
    assert onnx_features.shape == (10_000, 8 + 2 * 4)
    assert np.array_equal(onnx_features, numpy_features)
    engineered = engineered_features(values)
    assert np.array_equal(numpy_features[:, 5:8], engineered)
    first = values[0]
    assert engineered[0, 0] == first[1] - first[0]
    assert engineered[0, 1] == pytest.approx(42.8 * 1551 * 2 * np.pi / 60, rel=1e-12)
    assert engineered[0, 2] == first[4] * first[3]


def test_physical_features_tail_copies_keep_extremes(ai4i_dataset: Dataset) -> None:
    values = measurements_of(ai4i_dataset)
    transformer = PhysicalFeatures(features=("power_w", "tool_wear_min")).fit(values)
    names = list(transformer.get_feature_names_out())
    output = transformer.transform(values)

    # Tool wear has fewer than 255 distinct values and gets no tail copies.
    assert names == [
        "power_w",
        "tool_wear_min",
        "power_w_low_tail",
        "power_w_high_tail",
    ]
    power, low, high = output[:, 0], output[:, 2], output[:, 3]
    assert len(np.unique(low)) == TAIL_DISTINCT_VALUES
    assert len(np.unique(high)) == TAIL_DISTINCT_VALUES
    assert np.array_equal(low[power <= low.max()], power[power <= low.max()])
    assert np.array_equal(high[power >= high.min()], power[power >= high.min()])
    # The power-failure limits lie inside the tails, so every row near them keeps
    # its own value.
    assert low.max() > 3500.0
    assert high.min() < 9000.0


def test_parity_holds_on_whole_dataset(
    model_dir: Path, trained_models: TrainedModels, ai4i_dataset: Dataset
) -> None:
    scorer = OnnxScorer(model_dir)
    features = ai4i_dataset.features

    arrays = scorer.score_columns(
        features["product_type"].tolist(), measurements_of(ai4i_dataset)
    )
    with openmp_threads(1):
        sklearn_failure = trained_models.failure.predict_proba(features)[:, 1]
        sklearn_types = trained_models.failure_type.predict_proba(features)
    threshold = scorer.manifest.decision_threshold

    assert len(arrays.failure_probability) == 10_000
    failure_diff = np.max(np.abs(arrays.failure_probability - sklearn_failure))
    type_diff = np.max(np.abs(arrays.failure_type_probabilities - sklearn_types))
    assert failure_diff <= MAX_PROBABILITY_DIFFERENCE
    assert type_diff <= MAX_PROBABILITY_DIFFERENCE
    assert np.array_equal(
        arrays.failure_label, decide_failure(sklearn_failure, threshold)
    )
    assert np.array_equal(
        arrays.failure_type_probabilities.argmax(axis=1), sklearn_types.argmax(axis=1)
    )


def test_parity_figures_recorded_in_manifest(model_dir: Path) -> None:
    parity = OnnxScorer(model_dir).manifest.document["parity"]

    assert parity["rows"] == 10_000
    assert parity["failure_max_abs_difference"] <= MAX_PROBABILITY_DIFFERENCE
    assert parity["failure_type_max_abs_difference"] <= MAX_PROBABILITY_DIFFERENCE
    assert parity["label_flips"] == 0


def test_scorer_rejects_swapped_artifact(
    model_dir: Path, other_model: OtherModel, tmp_path: Path
) -> None:
    version = copy_version(model_dir, tmp_path / "v1")
    (version / "model.onnx").write_bytes(other_model.onnx)

    with pytest.raises(ManifestError, match="has sha256 .* but manifest v1 expects"):
        OnnxScorer(version)


def test_scorer_rejects_tampered_bytes(model_dir: Path, tmp_path: Path) -> None:
    version = copy_version(model_dir, tmp_path / "v1")
    artifact = bytearray((version / "model.onnx").read_bytes())
    artifact[len(artifact) // 2] ^= 0x01
    (version / "model.onnx").write_bytes(bytes(artifact))

    with pytest.raises(ManifestError, match="does not belong to this manifest"):
        OnnxScorer(version)


def test_scorer_rejects_forged_sha256(
    model_dir: Path, other_model: OtherModel, tmp_path: Path
) -> None:
    version = copy_version(model_dir, tmp_path / "v1")
    (version / "model.onnx").write_bytes(other_model.onnx)
    manifest_path = version / "manifest.json"
    document = json.loads(manifest_path.read_text(encoding="utf-8"))
    document["artifact"]["sha256"] = hashlib.sha256(other_model.onnx).hexdigest()
    manifest_path.write_text(json.dumps(document), encoding="utf-8")

    with pytest.raises(ManifestError, match="does not reproduce its golden vectors"):
        OnnxScorer(version)


def test_check_parity_rejects_other_artifact(
    model_dir: Path, other_model: OtherModel, ai4i_dataset: Dataset
) -> None:
    artifact = (model_dir / "model.onnx").read_bytes()

    with pytest.raises(ParityError, match="disagree on 10000 rows.*rejected"):
        check_parity(
            artifact,
            other_model.failure,
            other_model.failure_type,
            ai4i_dataset.features,
            decision_threshold=0.5,
        )


def test_package_models_rejects_artifact_that_disagrees(
    trained_models: TrainedModels,
    other_model: OtherModel,
    ai4i_dataset: Dataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another model's graph takes the place of a conversion that scores unlike the
    # pipelines it came from.
    monkeypatch.setattr(
        pipeline_module, "convert_models", lambda *args, **kwargs: other_model.onnx
    )
    store = ModelStore(tmp_path / "store")

    with pytest.raises(ParityError, match=r"max failure probability difference 0\.\d"):
        package_models(trained_models, ai4i_dataset, store, version=1)
    assert store.versions() == []
    assert list(store.root.iterdir()) == []
