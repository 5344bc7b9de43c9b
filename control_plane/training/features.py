"""Engineered features, computed the same way in scikit-learn and in the ONNX graph.

The transformer takes the five measurements in ``MEASUREMENT_FIELDS`` order and
returns temperature difference (K), mechanical power (W) and tool strain (min·Nm).
Its skl2onnx converter emits the same float32 operations in the same order, so the
trees downstream see bit-identical values from both engines.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from onnx import TensorProto
from skl2onnx import update_registered_converter
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import BaseEstimator, TransformerMixin

from edge_agent.reading import MEASUREMENT_FIELDS

logger = logging.getLogger(__name__)

ENGINEERED_FEATURES = ("temperature_difference_k", "power_w", "tool_strain_min_nm")

# rpm to rad/s. Rounded to float32 once, because that is the constant the graph holds.
RPM_TO_RAD_S = np.float32(2.0 * np.pi / 60.0)

_AIR, _PROCESS, _SPEED, _TORQUE, _WEAR = range(len(MEASUREMENT_FIELDS))


def engineered_features(measurements: np.ndarray) -> np.ndarray:
    """Compute the engineered features in float32.

    Args:
        measurements: shape (n, 5) in ``MEASUREMENT_FIELDS`` order; cast to float32.

    Returns:
        float32 array of shape (n, 3) in ``ENGINEERED_FEATURES`` order.
    """
    values = np.asarray(measurements, dtype=np.float32)
    temperature_difference = values[:, _PROCESS] - values[:, _AIR]
    # (torque * speed) * constant: the graph multiplies in this order, and float32
    # multiplication is not associative.
    power = (values[:, _TORQUE] * values[:, _SPEED]) * RPM_TO_RAD_S
    tool_strain = values[:, _WEAR] * values[:, _TORQUE]
    return np.stack([temperature_difference, power, tool_strain], axis=1)


class EngineeredFeatures(TransformerMixin, BaseEstimator):
    """Transformer from the five measurements to the three engineered features."""

    def fit(self, X: Any, y: Any = None) -> EngineeredFeatures:
        values = np.asarray(X)
        if values.ndim != 2 or values.shape[1] != len(MEASUREMENT_FIELDS):
            raise ValueError(
                f"EngineeredFeatures expects {len(MEASUREMENT_FIELDS)} columns "
                f"({', '.join(MEASUREMENT_FIELDS)}), got shape {values.shape}"
            )
        self.n_features_in_ = values.shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        return engineered_features(np.asarray(X, dtype=np.float32))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(ENGINEERED_FEATURES, dtype=object)


def _shape_calculator(operator: Any) -> None:
    rows = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = FloatTensorType([rows, len(ENGINEERED_FEATURES)])


def _converter(scope: Any, operator: Any, container: Any) -> None:
    source = operator.inputs[0].full_name
    output = operator.outputs[0].full_name

    def column(index: int) -> str:
        indices = scope.get_unique_variable_name("column_index")
        container.add_initializer(indices, TensorProto.INT64, [1], [index])
        name = scope.get_unique_variable_name(MEASUREMENT_FIELDS[index])
        container.add_node(
            "Gather",
            [source, indices],
            name,
            axis=1,
            name=scope.get_unique_operator_name("Gather"),
        )
        return name

    def binary(op_type: str, left: str, right: str, result: str) -> str:
        name = scope.get_unique_variable_name(result)
        container.add_node(
            op_type, [left, right], name, name=scope.get_unique_operator_name(op_type)
        )
        return name

    air, process, speed, torque, wear = (column(i) for i in range(5))
    rpm_to_rad_s = scope.get_unique_variable_name("rpm_to_rad_s")
    container.add_initializer(
        rpm_to_rad_s, TensorProto.FLOAT, [], [float(RPM_TO_RAD_S)]
    )
    difference = binary("Sub", process, air, "temperature_difference_k")
    moment = binary("Mul", torque, speed, "torque_times_speed")
    power = binary("Mul", moment, rpm_to_rad_s, "power_w")
    strain = binary("Mul", wear, torque, "tool_strain_min_nm")
    container.add_node(
        "Concat",
        [difference, power, strain],
        output,
        axis=1,
        name=scope.get_unique_operator_name("Concat"),
    )


def register_converter() -> None:
    """Register the transformer with skl2onnx; calling it again is harmless."""
    update_registered_converter(
        EngineeredFeatures,
        "EdgepmEngineeredFeatures",
        _shape_calculator,
        _converter,
    )
