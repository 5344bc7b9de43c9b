"""Tests for the float64 tree converter: splits, classes and the heat limit."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType
from sklearn.ensemble import HistGradientBoostingClassifier

from control_plane.training.features import PhysicalFeatures, register_converter
from control_plane.training.trees import (
    TreeConversionError,
    register_tree_converter,
    tree_ensemble_attributes,
)

# Written temperatures whose float64 differences fall on either side of 8.6 K,
# while their float32 differences are equal.
BELOW_LIMIT = (300.1, 308.7)
ABOVE_LIMIT = (300.0, 308.6)


def run_classifier(model: HistGradientBoostingClassifier, X: np.ndarray) -> np.ndarray:
    register_tree_converter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        graph = convert_sklearn(
            model,
            initial_types=[("X", DoubleTensorType([None, X.shape[1]]))],
            options={id(model): {"zipmap": False}},
        )
    session = ort.InferenceSession(
        graph.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    _, probabilities = session.run(None, {"X": X})
    assert probabilities.dtype == np.float32
    return np.asarray(probabilities)


def test_graph_separates_rows_at_the_heat_limit() -> None:
    below = BELOW_LIMIT[1] - BELOW_LIMIT[0]
    above = ABOVE_LIMIT[1] - ABOVE_LIMIT[0]
    assert np.float32(below) == np.float32(above)
    X = np.array([[below]] * 60 + [[above]] * 60)
    y = np.array([1] * 60 + [0] * 60)
    model = HistGradientBoostingClassifier(
        max_iter=20, min_samples_leaf=5, random_state=0
    ).fit(X, y)
    sklearn = model.predict_proba(X)[:, 1]
    assert sklearn[0] > 0.9 > 0.1 > sklearn[-1]

    onnx = run_classifier(model, X)[:, 1]

    assert np.max(np.abs(onnx - sklearn)) < 1e-6


def test_graph_computes_temperature_difference_in_float64() -> None:
    rows = np.array(
        [
            [BELOW_LIMIT[0], BELOW_LIMIT[1], 1300.0, 40.0, 10.0],
            [ABOVE_LIMIT[0], ABOVE_LIMIT[1], 1300.0, 40.0, 10.0],
        ]
    )
    transformer = PhysicalFeatures(
        features=("temperature_difference_k",), tails=False
    ).fit(rows)
    register_converter()
    graph = convert_sklearn(
        transformer, initial_types=[("measurements", DoubleTensorType([None, 5]))]
    )
    session = ort.InferenceSession(
        graph.SerializeToString(), providers=["CPUExecutionProvider"]
    )

    (difference,) = session.run(None, {"measurements": rows})

    assert difference[0, 0] < 8.6 < difference[1, 0]
    assert np.array_equal(difference, transformer.transform(rows))


def test_multiclass_string_labels_match_sklearn() -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(600, 3))
    names = np.array(["No Failure", "Power Failure", "Heat Dissipation Failure"])
    y = names[(X[:, 0] > 0.3).astype(int) + (X[:, 1] > 0.8).astype(int)]
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)

    onnx = run_classifier(model, X)

    assert tree_ensemble_attributes(model)["classlabels_strings"] == sorted(names)
    assert np.max(np.abs(onnx - model.predict_proba(X))) < 1e-6


def test_categorical_splits_are_refused() -> None:
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.integers(0, 4, 400), rng.normal(size=400)])
    y = (X[:, 0] == 2).astype(int)
    model = HistGradientBoostingClassifier(
        max_iter=5, categorical_features=[0], random_state=0
    ).fit(X, y)

    with pytest.raises(TreeConversionError, match="one-hot encode"):
        tree_ensemble_attributes(model)
