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
from collections.abc import Sequence
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
from control_plane.training.features import (
    DEFAULT_MODEL_FEATURES,
    ENGINEERED_FEATURES,
    check_model_features,
)
from control_plane.training.labels import label_consistency
from control_plane.training.metrics import (
    band_rates,
    flag_suspected_leakage,
    headline,
    precision_recall_points,
    reliability_curve,
)
from control_plane.training.model import (
    MEDIUM_BAND_FAILURE_RATE,
    TEST_SIZE,
    THRESHOLD_GRID,
    TrainedModels,
    score_heads,
    subset,
    train_models,
)
from control_plane.training.model_card import (
    KNOWN_LIMITS,
    MODEL_CARD_FORMAT,
    metrics_rows,
    write_model_card,
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
    "power_w": "(torque_nm * rotational_speed_rpm) * (2*pi/60)",
    "tool_strain_min_nm": "tool_wear_min * torque_nm",
}
THRESHOLD_METHOD = (
    "maximum F1 of out-of-fold failure probabilities on the training part "
    "({folds}-fold stratified cross-validation), on a 0.01 grid"
)
MEDIUM_BAND_METHOD = (
    "high starts at the decision threshold; medium starts at the lowest 0.01 step "
    "below it at which the out-of-fold readings between that step and the "
    f"threshold failed at a rate of {MEDIUM_BAND_FAILURE_RATE:.0%} or more"
)
BAND_MEANINGS = {
    "low": "no action: below the medium band",
    "medium": (
        "watch: in the out-of-fold predictions of the training part, readings in "
        f"this band failed at a rate of {MEDIUM_BAND_FAILURE_RATE:.0%} or more, about "
        "three times the AI4I base rate; inspect at the next stop"
    ),
    "high": "alert: the model predicts a failure (P at or above the threshold)",
}
_LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas")


def train_and_package(
    csv_path: Path,
    out_dir: Path,
    *,
    version: int,
    quick: bool = False,
    features: Sequence[str] = DEFAULT_MODEL_FEATURES,
    cross_validation: dict[str, Any] | None = None,
) -> Path:
    """Train on an AI4I file and publish the result as ``out_dir/v<version>``.

    Args:
        csv_path: the training CSV (AI4I or contract column names).
        out_dir: the model store's root.
        version: the version number; it must not exist yet.
        quick: fewer candidates, folds and trees (seconds instead of a minute).
        features: the trees' inputs, from ``MODEL_FEATURES``.
        cross_validation: a ``CrossValidationReport.summary()`` of the same
            candidate, recorded in the manifest and the model card.

    Returns:
        The published version directory.

    Raises:
        LeakageError: a feature is an identifier or an outcome column.
        DatasetError: the data is invalid; nothing was trained.
        ParityError: the ONNX graph disagrees with scikit-learn; nothing was written.
        ModelStoreError: the version already exists.
    """
    check_model_features(features)
    dataset = load_training_data(csv_path)
    store = ModelStore(out_dir)
    if version in store.versions():
        raise ModelStoreError(
            f"model v{version} already exists in {out_dir}; versions are immutable, "
            f"train as v{store.next_version()} instead"
        )
    trained = train_models(dataset, quick=quick, features=features)
    return package_models(
        trained, dataset, store, version=version, cross_validation=cross_validation
    )


def package_models(
    trained: TrainedModels,
    dataset: Dataset,
    store: ModelStore,
    *,
    version: int,
    cross_validation: dict[str, Any] | None = None,
) -> Path:
    """Convert, check parity on the whole dataset, write and publish a version.

    The version directory contains the artifact, the manifest and the model card.
    The card's figures come from the graph's outputs on the held-out rows.

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
    card = build_model_card(
        trained, dataset, model, document, cross_validation=cross_validation
    )
    document["suspected_leakage"] = card["suspected_leakage"]
    if cross_validation is not None:
        document["cross_validation"] = cross_validation

    with store.staging() as staging:
        (staging / ARTIFACT_FILE).write_bytes(model)
        document["documents"] = write_model_card(card, staging)
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
            "features": list(trained.features),
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
        "engineered_features": _feature_schema(trained),
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
            "method": THRESHOLD_METHOD.format(folds=trained.folds),
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
        "risk_band_selection": MEDIUM_BAND_METHOD,
        "label_policy": trained.policy.to_document(),
        "label_consistency": label_consistency(dataset),
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


def build_model_card(
    trained: TrainedModels,
    dataset: Dataset,
    model: bytes,
    manifest: dict[str, Any],
    *,
    cross_validation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score the held-out rows with the graph and describe the version."""
    held_out = trained.test_index is not None
    index = trained.test_index if held_out else np.arange(len(dataset.target))
    test = subset(dataset, index)
    failure, failure_type = run_onnx(model, test.features)
    scores = score_heads(trained, test, failure[:, 1], failure_type)
    figures = headline(scores["failure"], scores["failure_type"])
    bands = [(band["name"], band["min_probability"]) for band in manifest["risk_bands"]]
    band_figures = band_rates(test.target, failure[:, 1], bands)

    leakage = flag_suspected_leakage(figures)
    if cross_validation is not None:
        means = {
            name: value["mean"] for name, value in cross_validation["onnx"].items()
        }
        leakage += [
            f"cross-validation: {flag}" for flag in flag_suspected_leakage(means)
        ]
    protocol = (
        f"Figures from the ONNX graph on {len(index)} held-out rows (a stratified "
        f"{TEST_SIZE:.0%} split, seed {trained.seed}), which no choice saw."
        if held_out
        else f"Figures from the ONNX graph on the {len(index)} training rows: this "
        "model has no held-out set, so they are optimistic."
    )
    summary = (
        f"Two HistGradientBoosting heads in one ONNX graph: P(failure) for the "
        f"next process and its failure type, from one reading. Trained on "
        f"{dataset.fingerprint.rows} rows of {dataset.source.name}. Held-out failure "
        f"F1 {figures['failure_f1']:.3f} at threshold {trained.decision_threshold}, "
        f"failure-type macro-F1 {figures['failure_type_macro_f1']:.3f}."
    )
    return {
        "format": MODEL_CARD_FORMAT,
        "version": manifest["version"],
        "created_at": manifest["created_at"],
        "summary": summary,
        "model": {
            "family": manifest["model"]["family"],
            "features": list(trained.features),
            "inputs": [field["name"] for field in manifest["inputs"]],
            "engineered_features": manifest["engineered_features"],
            "failure_params": trained.failure_selection.params,
            "failure_type_params": trained.failure_type_selection.params,
            "failure_type_classes": list(trained.failure_type_classes),
        },
        "training_data": manifest["training_data"],
        "label_consistency": manifest["label_consistency"],
        "label_policy": manifest["label_policy"],
        "evaluation": {
            "protocol": protocol,
            "engine": "onnxruntime",
            "rows": len(index),
            "metrics": metrics_rows(figures),
            "failure": scores["failure"],
            "failure_type": scores["failure_type"],
            "precision_recall_curve": precision_recall_points(
                test.target, failure[:, 1]
            ),
            "reliability_curve": reliability_curve(test.target, failure[:, 1]),
        },
        "cross_validation": cross_validation,
        "decision_threshold": {
            "value": trained.decision_threshold,
            "selection": manifest["threshold_selection"]["method"],
        },
        "risk_bands": [
            {**band, "meaning": BAND_MEANINGS[band["name"]], "test": figures_of_band}
            for band, figures_of_band in zip(
                manifest["risk_bands"], band_figures, strict=True
            )
        ],
        "suspected_leakage": leakage,
        "known_limits": list(KNOWN_LIMITS),
        "artifact": manifest["artifact"],
        "parity": manifest["parity"],
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
            # A float64 writes as its shortest round-trip decimal (298.1), so the
            # scorer feeds back the value the graph was checked on.
            case[name] = float(row[name])
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
                "type": "float64",
                "shape": [None, 1],
                "unit": _UNITS[name],
                "range": [low, high],
            }
        )
    return schema


def _feature_schema(trained: TrainedModels) -> list[dict[str, Any]]:
    """Describe the trees' derived inputs: engineered quantities and tail copies."""
    schema: list[dict[str, Any]] = [
        {"name": name, "formula": _FORMULAS[name]}
        for name in ENGINEERED_FEATURES
        if name in trained.features
    ]
    # Both heads have their own tail bounds, fitted on their own training rows.
    for head, pipeline in (
        ("failure", trained.failure),
        ("failure_type", trained.failure_type),
    ):
        physical = pipeline.named_steps["features"].named_transformers_.get("physical")
        for name, low, high in getattr(physical, "tail_bounds_", []):
            schema.append(
                {
                    "name": f"{name}_low_tail",
                    "head": head,
                    "formula": f"min({name}, {float(low)!r})",
                }
            )
            schema.append(
                {
                    "name": f"{name}_high_tail",
                    "head": head,
                    "formula": f"max({name}, {float(high)!r})",
                }
            )
    return schema
