"""Scoring of readings with an ONNX model version through onnxruntime.

The graph takes the raw reading fields (product type as a string, the five
measurements as float64) and returns probabilities, so this module contains no
feature code. The edge agent and the control plane's batch scorer both score through it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_agent.manifest import ManifestError, ModelManifest, verify_artifact
from edge_agent.reading import MEASUREMENT_FIELDS, Reading

logger = logging.getLogger(__name__)

# Golden vectors are checked at load time with this tolerance: the same graph on the
# same runtime reproduces them exactly, so any larger difference means a wrong artifact
# or a runtime that computes differently.
GOLDEN_TOLERANCE = 1e-5
# The failure-type class that means "no failure", as the AI4I data names it.
NO_FAILURE_CLASS = "No Failure"


@dataclass(frozen=True, slots=True)
class Prediction:
    """The model's output for one reading."""

    model_version: int
    failure_probability: float
    failure_label: int
    risk_band: str
    failure_type: str
    failure_type_probability: float


@dataclass(frozen=True, slots=True)
class ScoreArrays:
    """Column-wise model outputs for a batch of rows."""

    failure_probability: np.ndarray  # float32, shape (n,)
    failure_label: np.ndarray  # int8, shape (n,)
    failure_type_index: np.ndarray  # int64, shape (n,)
    failure_type_probability: np.ndarray  # float32, shape (n,)
    failure_type_probabilities: np.ndarray  # float32, shape (n, classes)


def decide_failure(probability: np.ndarray, threshold: float) -> np.ndarray:
    """Apply the decision rule: failure when float32 P(failure) >= float32 threshold.

    Both engines' probabilities are compared in float32 so that a probability that ties
    with the threshold gets the same label from scikit-learn and from ONNX.
    """
    return (probability.astype(np.float32) >= np.float32(threshold)).astype(np.int8)


def choose_failure_types(
    probabilities: np.ndarray, failure_label: np.ndarray, classes: Sequence[str]
) -> np.ndarray:
    """Pick each row's failure type: the most likely class of the type head.

    The two heads are trained apart, so a row the failure head labels a failure
    can have "No Failure" as the type head's top class. Such a row gets its most
    likely failure mode instead, so that an alert always names one. The model
    evaluation scores types with this same rule.

    Returns:
        Indices into ``classes``, shape (n,).
    """
    index: np.ndarray = probabilities.argmax(axis=1)
    if NO_FAILURE_CLASS not in classes:
        return index
    modes = np.array(probabilities, copy=True)
    modes[:, list(classes).index(NO_FAILURE_CLASS)] = -1.0
    chosen: np.ndarray = np.where(failure_label == 1, modes.argmax(axis=1), index)
    return chosen


# Graph input type -> the numpy type the scorer feeds.
_MEASUREMENT_DTYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(double)": np.float64,
    "tensor(float)": np.float32,
}


class OnnxScorer:
    """An inference session for one model version directory.

    Args:
        directory: a version directory with ``manifest.json`` and ``model.onnx``.
        threads: onnxruntime intra-op threads; 1 suits small batches on a small node.

    Raises:
        ManifestError: the manifest is invalid, the artifact's sha256 differs from the
            manifest, or the golden vectors do not reproduce.
    """

    def __init__(self, directory: Path, *, threads: int = 1) -> None:
        self.directory = directory
        self.manifest = ModelManifest.from_directory(directory)
        artifact = verify_artifact(directory, self.manifest)

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(artifact), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ManifestError(f"onnxruntime cannot load {artifact}: {exc}") from exc
        self._measurement_dtype: type[np.floating[Any]] = np.float64
        self._check_graph()
        self._check_golden()
        logger.info("model v%d loaded from %s", self.version, directory)

    @property
    def version(self) -> int:
        return self.manifest.version

    def score_columns(
        self, product_type: Sequence[str], measurements: np.ndarray
    ) -> ScoreArrays:
        """Score rows given as a product-type column and an (n, 5) measurement array.

        The measurement columns are in ``MEASUREMENT_FIELDS`` order.
        """
        rows = len(product_type)
        feeds: dict[str, np.ndarray] = {
            "product_type": np.asarray(product_type, dtype=object).reshape(rows, 1)
        }
        values = np.asarray(measurements, dtype=self._measurement_dtype).reshape(
            rows, -1
        )
        for column, name in enumerate(MEASUREMENT_FIELDS):
            feeds[name] = np.ascontiguousarray(values[:, column : column + 1])

        failure, failure_type = self._session.run(
            [self.manifest.failure_output, self.manifest.failure_type_output], feeds
        )
        failure_probability = np.asarray(failure, dtype=np.float32)[:, 1]
        failure_label = decide_failure(
            failure_probability, self.manifest.decision_threshold
        )
        type_probabilities = np.asarray(failure_type, dtype=np.float32)
        type_index = choose_failure_types(
            type_probabilities, failure_label, self.manifest.failure_type_classes
        )
        return ScoreArrays(
            failure_probability=failure_probability,
            failure_label=failure_label,
            failure_type_index=type_index,
            failure_type_probability=type_probabilities[np.arange(rows), type_index],
            failure_type_probabilities=type_probabilities,
        )

    def score(self, readings: Sequence[Reading]) -> list[Prediction]:
        """Score a batch of validated readings, one Prediction each, in order."""
        if not readings:
            return []
        measurements = np.array(
            [[getattr(r, name) for name in MEASUREMENT_FIELDS] for r in readings],
            dtype=np.float64,
        )
        arrays = self.score_columns([r.product_type for r in readings], measurements)
        return self.to_predictions(arrays)

    def to_predictions(self, arrays: ScoreArrays) -> list[Prediction]:
        """Turn column-wise outputs into one Prediction per row."""
        classes = self.manifest.failure_type_classes
        return [
            Prediction(
                model_version=self.version,
                failure_probability=float(probability),
                failure_label=int(label),
                risk_band=self.manifest.risk_band(float(probability)),
                failure_type=classes[int(index)],
                failure_type_probability=float(type_probability),
            )
            for probability, label, index, type_probability in zip(
                arrays.failure_probability,
                arrays.failure_label,
                arrays.failure_type_index,
                arrays.failure_type_probability,
                strict=True,
            )
        ]

    def _check_graph(self) -> None:
        expected = {"product_type", *MEASUREMENT_FIELDS}
        inputs = {node.name: node.type for node in self._session.get_inputs()}
        if set(inputs) != expected:
            raise ManifestError(
                f"model v{self.version} graph inputs are {sorted(inputs)}, expected "
                f"{sorted(expected)}; convert the model with the raw reading fields "
                "as inputs"
            )
        # Graphs take the measurements in float64; versions converted before the
        # graph computed in float64 take float32, and keep working.
        types = {inputs[name] for name in MEASUREMENT_FIELDS}
        if len(types) != 1 or not types <= set(_MEASUREMENT_DTYPES):
            raise ManifestError(
                f"model v{self.version} takes the measurements as {sorted(types)}; "
                "expected all tensor(double) (or all tensor(float))"
            )
        self._measurement_dtype = _MEASUREMENT_DTYPES[types.pop()]
        outputs = {node.name for node in self._session.get_outputs()}
        for name in (self.manifest.failure_output, self.manifest.failure_type_output):
            if name not in outputs:
                raise ManifestError(
                    f"model v{self.version} has no output {name!r}; it has "
                    f"{sorted(outputs)}"
                )

    def _check_golden(self) -> None:
        if not self.manifest.golden:
            raise ManifestError(
                f"model v{self.version} manifest has no golden vectors; "
                "an unverifiable artifact is not loaded"
            )
        cases: list[dict[str, Any]] = list(self.manifest.golden)
        try:
            inputs = [case["input"] for case in cases]
            product_types = [row["product_type"] for row in inputs]
            measurements = np.array(
                [[row[name] for name in MEASUREMENT_FIELDS] for row in inputs],
                dtype=np.float64,
            )
            expected_failure = np.array(
                [case["failure_probability"] for case in cases], dtype=np.float64
            )
            expected_types = np.array(
                [case["failure_type_probabilities"] for case in cases],
                dtype=np.float64,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(
                f"model v{self.version} golden vectors are malformed: {exc!r}"
            ) from exc
        arrays = self.score_columns(product_types, measurements)

        classes = len(self.manifest.failure_type_classes)
        produced = arrays.failure_type_probabilities.shape[1]
        if produced != classes or expected_types.shape != (len(cases), classes):
            raise ManifestError(
                f"model v{self.version} artifact gives {produced} failure-type "
                f"probabilities per row, its manifest names {classes} classes and its "
                f"golden vectors hold {expected_types.shape[-1]}; the artifact does "
                "not match its model"
            )
        failure_diff = float(
            np.max(np.abs(arrays.failure_probability - expected_failure))
        )
        type_diff = float(
            np.max(np.abs(arrays.failure_type_probabilities - expected_types))
        )
        if max(failure_diff, type_diff) > GOLDEN_TOLERANCE:
            raise ManifestError(
                f"model v{self.version} does not reproduce its golden vectors "
                f"(max difference {max(failure_diff, type_diff):.3g}, tolerance "
                f"{GOLDEN_TOLERANCE}); the artifact does not match its model"
            )
