"""The parity check: the ONNX graph must score like the scikit-learn pipelines.

Run on every row of the training file before a version is accepted. Failure
probabilities are compared with the same float32 decision rule the edge agent applies.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import onnxruntime as ort
import pandas as pd
from sklearn.pipeline import Pipeline

from control_plane.training.convert import FAILURE_OUTPUT, FAILURE_TYPE_OUTPUT
from control_plane.training.model import openmp_threads
from edge_agent.reading import MEASUREMENT_FIELDS
from edge_agent.scorer import decide_failure

logger = logging.getLogger(__name__)

# The graph compares every split in float64, as scikit-learn does (see trees.py), so
# both engines take the same branches. The remaining difference is float32 rounding
# of the probabilities: below 1e-7 on the AI4I file, far below this tolerance.
MAX_PROBABILITY_DIFFERENCE = 1e-4


class ParityError(ValueError):
    """The ONNX graph and the scikit-learn pipelines disagree beyond the tolerance."""


@dataclass(frozen=True, slots=True)
class ParityReport:
    """Agreement between the two engines on one set of rows."""

    rows: int
    failure_max_abs_difference: float
    failure_type_max_abs_difference: float
    label_flips: int
    failure_type_flips: int
    decision_threshold: float
    tolerance: float

    @property
    def is_exact(self) -> bool:
        """Whether both heads are within the tolerance and no label flips."""
        return (
            self.failure_max_abs_difference <= self.tolerance
            and self.failure_type_max_abs_difference <= self.tolerance
            and self.label_flips == 0
        )

    def to_document(self) -> dict[str, float | int]:
        """Return the report as the manifest's ``parity`` object."""
        return asdict(self)


def onnx_feeds(features: pd.DataFrame) -> dict[str, np.ndarray]:
    """Build the graph's inputs from a features frame: [n, 1] string and float64."""
    rows = len(features)
    feeds = {
        "product_type": features["product_type"].to_numpy(dtype=object).reshape(rows, 1)
    }
    for name in MEASUREMENT_FIELDS:
        feeds[name] = features[name].to_numpy(dtype=np.float64).reshape(rows, 1)
    return feeds


def run_onnx(model: bytes, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Score a features frame with a serialized model; return both heads' outputs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model, sess_options=options, providers=["CPUExecutionProvider"]
    )
    failure, failure_type = session.run(
        [FAILURE_OUTPUT, FAILURE_TYPE_OUTPUT], onnx_feeds(features)
    )
    return np.asarray(failure), np.asarray(failure_type)


def measure_parity(
    model: bytes,
    failure: Pipeline,
    failure_type: Pipeline,
    features: pd.DataFrame,
    *,
    decision_threshold: float,
    tolerance: float = MAX_PROBABILITY_DIFFERENCE,
) -> ParityReport:
    """Score the rows with both engines and compare.

    Raises:
        ParityError: the graph's outputs have other shapes than the pipelines'.
    """
    onnx_failure, onnx_type = run_onnx(model, features)
    with openmp_threads(1):
        sklearn_failure = failure.predict_proba(features)
        sklearn_type = failure_type.predict_proba(features)
    for name, actual, expected in (
        ("failure", onnx_failure, sklearn_failure),
        ("failure type", onnx_type, sklearn_type),
    ):
        if actual.shape != expected.shape:
            raise ParityError(
                f"ONNX {name} probabilities have shape {actual.shape}, scikit-learn "
                f"{expected.shape}; the artifact is not a conversion of these models"
            )

    flips = decide_failure(onnx_failure[:, 1], decision_threshold) != decide_failure(
        sklearn_failure[:, 1], decision_threshold
    )
    type_flips = onnx_type.argmax(axis=1) != sklearn_type.argmax(axis=1)
    return ParityReport(
        rows=len(features),
        failure_max_abs_difference=float(
            np.max(np.abs(onnx_failure - sklearn_failure))
        ),
        failure_type_max_abs_difference=float(np.max(np.abs(onnx_type - sklearn_type))),
        label_flips=int(flips.sum()),
        failure_type_flips=int(type_flips.sum()),
        decision_threshold=decision_threshold,
        tolerance=tolerance,
    )


def check_parity(
    model: bytes,
    failure: Pipeline,
    failure_type: Pipeline,
    features: pd.DataFrame,
    *,
    decision_threshold: float,
    tolerance: float = MAX_PROBABILITY_DIFFERENCE,
) -> ParityReport:
    """Measure parity and reject the model unless it is within the tolerance.

    Raises:
        ParityError: a probability differs by more than ``tolerance`` or a failure
            label flips at the decision threshold; the message gives the figures.
    """
    report = measure_parity(
        model,
        failure,
        failure_type,
        features,
        decision_threshold=decision_threshold,
        tolerance=tolerance,
    )
    if not report.is_exact:
        raise ParityError(
            f"ONNX and scikit-learn disagree on {report.rows} rows: max failure "
            f"probability difference {report.failure_max_abs_difference:.3g}, max "
            f"failure-type difference {report.failure_type_max_abs_difference:.3g} "
            f"(tolerance {tolerance:g}), {report.label_flips} failure label flip(s) at "
            f"threshold {decision_threshold}; the version is rejected. Fit trees on "
            "unscaled float64 inputs, or check that the artifact belongs to the model"
        )
    logger.info(
        "parity on %d rows: max difference %.3g / %.3g, no label flips",
        report.rows,
        report.failure_max_abs_difference,
        report.failure_type_max_abs_difference,
    )
    return report
