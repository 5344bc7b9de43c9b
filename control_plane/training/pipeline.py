"""Training end to end: data, models, ONNX, parity, manifest, published version.

Nothing reaches the model store until the graph has passed the parity check on every
row of the training file and the written pair has loaded through ``OnnxScorer``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from control_plane.data import NO_FAILURE, Dataset, load_training_data
from control_plane.model_store import ModelStore, ModelStoreError
from control_plane.training.convert import (
    FAILURE_OUTPUT,
    FAILURE_TYPE_OUTPUT,
    convert_models,
)
from control_plane.training.features import ENGINEERED_FEATURES
from control_plane.training.model import (
    MEDIUM_BAND_RECALL,
    THRESHOLD_GRID,
    TrainedModels,
    train_models,
)
from control_plane.training.parity import ParityReport, check_parity, run_onnx
from edge_agent.manifest import ARTIFACT_FILE, MANIFEST_FILE, MANIFEST_FORMAT
from edge_agent.reading import MEASUREMENT_FIELDS, MEASUREMENT_RANGES, PRODUCT_TYPES

logger = logging.getLogger(__name__)

_UNITS = {
    "air_temperature_k": "K",
    "process_temperature_k": "K",
    "rotational_speed_rpm": "rpm",
    "torque_nm": "N·m",
    "tool_wear_min": "min",
}
_FORMULAS = {
    "temperature_difference_k": "process_temperature_k - air_temperature_k",
    "power_w": "torque_nm * rotational_speed_rpm * (2*pi/60), float32",
    "tool_strain_min_nm": "tool_wear_min * torque_nm",
}
_LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas")


def train_and_package(
    csv_path: Path, out_dir: Path, *, version: int, quick: bool = False
) -> Path:
    """Train on an AI4I file and publish the result as ``out_dir/v<version>``.

    Args:
        csv_path: the training CSV (AI4I or contract column names).
        out_dir: the model store's root.
        version: the version number; it must not exist yet.
        quick: fewer candidates, folds and trees (seconds instead of a minute).

    Returns:
        The published version directory.

    Raises:
        DatasetError: the data is invalid; nothing was trained.
        ParityError: the ONNX graph disagrees with scikit-learn; nothing was written.
        ModelStoreError: the version already exists.
    """
    dataset = load_training_data(csv_path)
    store = ModelStore(out_dir)
    if version in store.versions():
        raise ModelStoreError(
            f"model v{version} already exists in {out_dir}; versions are immutable, "
            f"train as v{store.next_version()} instead"
        )
    trained = train_models(dataset, quick=quick)
    return package_models(trained, dataset, store, version=version)


def package_models(
    trained: TrainedModels, dataset: Dataset, store: ModelStore, *, version: int
) -> Path:
    """Convert, check parity on the whole dataset, write and publish a version.

    Raises:
        ConversionError: the pipelines cannot be converted.
        ParityError: the graph disagrees with the pipelines; nothing was written.
        ModelStoreError: the version already exists.
    """
    model = convert_models(trained.failure, trained.failure_type, version=version)
    parity = check_parity(
        model,
        trained.failure,
        trained.failure_type,
        dataset.features,
        decision_threshold=trained.decision_threshold,
    )
    document = build_manifest(trained, dataset, model, parity, version=version)

    with store.staging() as staging:
        (staging / ARTIFACT_FILE).write_bytes(model)
        (staging / MANIFEST_FILE).write_text(
            json.dumps(document, indent=2) + "\n", encoding="utf-8"
        )
        published = store.publish(staging)
    return published.directory


def build_manifest(
    trained: TrainedModels,
    dataset: Dataset,
    model: bytes,
    parity: ParityReport,
    *,
    version: int,
) -> dict[str, Any]:
    """Build the ``edgepm-model/1`` manifest for a converted model."""
    threshold = trained.decision_threshold
    return {
        "format": MANIFEST_FORMAT,
        "version": version,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": {
            "family": "HistGradientBoostingClassifier",
            "failure_params": trained.failure_selection.params,
            "failure_type_params": trained.failure_type_selection.params,
            "selection": {
                "failure": {
                    "metric": trained.failure_selection.metric,
                    "candidates": trained.failure_selection.cv_scores,
                },
                "failure_type": {
                    "metric": trained.failure_type_selection.metric,
                    "candidates": trained.failure_type_selection.cv_scores,
                },
            },
        },
        "inputs": _input_schema(),
        "engineered_features": [
            {"name": name, "formula": _FORMULAS[name]} for name in ENGINEERED_FEATURES
        ],
        "outputs": {
            "failure_probability": {
                "name": FAILURE_OUTPUT,
                "shape": [None, 2],
                "classes": [0, 1],
                "failure_column": 1,
            },
            "failure_type_probability": {
                "name": FAILURE_TYPE_OUTPUT,
                "shape": [None, len(trained.failure_type_classes)],
                "classes": list(trained.failure_type_classes),
            },
        },
        "decision_threshold": threshold,
        "decision_rule": (
            "failure when float32 P(failure) >= float32 decision_threshold"
        ),
        "threshold_selection": {
            "method": (
                "maximum F1 of out-of-fold failure probabilities on the training "
                f"part ({trained.folds}-fold stratified cross-validation)"
            ),
            "grid": [float(THRESHOLD_GRID[0]), float(THRESHOLD_GRID[-1]), 0.01],
            "out_of_fold_f1": trained.metrics["cross_validation"][
                "failure_f1_at_threshold"
            ],
        },
        "risk_bands": [
            {"name": "low", "min_probability": 0.0},
            {"name": "medium", "min_probability": trained.medium_band},
            {"name": "high", "min_probability": threshold},
        ],
        "risk_band_selection": (
            "high starts at the decision threshold; medium starts at the highest "
            "0.01 step below it at which medium and high together hold "
            f"{MEDIUM_BAND_RECALL:.0%} of the out-of-fold failures"
        ),
        "metrics": trained.metrics,
        "artifact": {
            "file": ARTIFACT_FILE,
            "sha256": hashlib.sha256(model).hexdigest(),
            "size_bytes": len(model),
        },
        "training_data": {
            "file": dataset.source.name,
            **dataset.fingerprint.to_document(),
        },
        "parity": parity.to_document(),
        "libraries": {
            "python": platform.python_version(),
            **{name: metadata.version(name) for name in _LIBRARIES},
        },
        "golden": golden_vectors(model, dataset, threshold),
    }


def golden_vectors(
    model: bytes, dataset: Dataset, threshold: float
) -> list[dict[str, Any]]:
    """Pick about eight rows and record the graph's outputs for them.

    The rows are the first of each failure type, the first two healthy rows and the
    row whose failure probability is nearest the threshold, so a wrong artifact shows
    on both heads and near the decision.
    """
    failure, failure_type = run_onnx(model, dataset.features)
    chosen: list[int] = []
    for label in sorted(set(dataset.failure_type) - {NO_FAILURE}):
        chosen.append(int(np.flatnonzero(dataset.failure_type == label)[0]))
    chosen.extend(
        int(i) for i in np.flatnonzero(dataset.failure_type == NO_FAILURE)[:2]
    )
    nearest = int(np.argmin(np.abs(failure[:, 1] - np.float32(threshold))))
    if nearest not in chosen:
        chosen.append(nearest)

    vectors = []
    for index in chosen:
        row = dataset.features.iloc[index]
        case: dict[str, Any] = {"product_type": str(row["product_type"])}
        for name in MEASUREMENT_FIELDS:
            # The shortest decimal that rounds back to the same float32, so the
            # JSON shows 298.1 and the scorer feeds the value the graph was checked on.
            case[name] = float(np.format_float_positional(np.float32(row[name])))
        vectors.append(
            {
                "input": case,
                "failure_probability": float(failure[index, 1]),
                "failure_type_probabilities": [float(p) for p in failure_type[index]],
                "training_row": index + 1,
                "failure_type": str(dataset.failure_type[index]),
            }
        )
    return vectors


def _input_schema() -> list[dict[str, Any]]:
    schema: list[dict[str, Any]] = [
        {
            "name": "product_type",
            "type": "string",
            "shape": [None, 1],
            "allowed": list(PRODUCT_TYPES),
        }
    ]
    for name in MEASUREMENT_FIELDS:
        low, high = MEASUREMENT_RANGES[name]
        schema.append(
            {
                "name": name,
                "type": "float32",
                "shape": [None, 1],
                "unit": _UNITS[name],
                "range": [low, high],
            }
        )
    return schema
