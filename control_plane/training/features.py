"""Model features, computed the same way in scikit-learn and in the ONNX graph.

``PhysicalFeatures`` takes the five measurements in ``MEASUREMENT_FIELDS`` order and
returns the selected measurements and engineered quantities (temperature difference,
mechanical power, tool strain), plus tail copies of the wide ones, all in float64.
Its skl2onnx converter emits the same float64 operations in the same order, so the
trees downstream see bit-identical values from both engines.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from onnx import TensorProto
from skl2onnx import update_registered_converter
from skl2onnx.common.data_types import DoubleTensorType
from sklearn.base import BaseEstimator, TransformerMixin

from control_plane.data import DatasetError, reject_leaking_columns
from edge_agent.reading import MEASUREMENT_FIELDS

logger = logging.getLogger(__name__)

ENGINEERED_FEATURES = ("temperature_difference_k", "power_w", "tool_strain_min_nm")

# Every quantity the transformer can output, in the order it computes them.
PHYSICAL_QUANTITIES = (*MEASUREMENT_FIELDS, *ENGINEERED_FEATURES)

# The names a candidate model may choose its tree inputs from.
MODEL_FEATURES = ("product_type", *PHYSICAL_QUANTITIES)

# The two absolute temperatures enter only through their difference: no failure
# mechanism of the AI4I process depends on them otherwise, and in the shipped file
# air temperature and temperature difference correlate by chance (r = -0.70), a
# shortcut that fails on data where the two temperature walks are independent.
DEFAULT_MODEL_FEATURES = (
    "product_type",
    "rotational_speed_rpm",
    "torque_nm",
    "tool_wear_min",
    *ENGINEERED_FEATURES,
)

# HistGradientBoosting bins each feature into at most 255 bins at quantiles, so in
# the sparse tails, where the power and overstrain limits lie, one bin spans rows on
# both sides of a limit. A tail copy keeps the 255 most extreme distinct values of a
# quantity and clips the rest to the 255th. HistGradientBoosting gives a feature
# with at most 255 distinct values one bin per value, so it can split between any
# two neighbouring tail values. Only quantities with many distinct values get tail
# copies, because the others are binned exactly already.
TAIL_FEATURES = ("rotational_speed_rpm", "torque_nm", "power_w", "tool_strain_min_nm")
TAIL_DISTINCT_VALUES = 255

# rpm to rad/s, the constant the graph holds.
RPM_TO_RAD_S = np.float64(2.0 * np.pi / 60.0)

_AIR, _PROCESS, _SPEED, _TORQUE, _WEAR = range(len(MEASUREMENT_FIELDS))


def check_model_features(features: Sequence[str]) -> tuple[str, ...]:
    """Check a candidate's tree inputs against the leakage guard and the vocabulary.

    Returns:
        The features, in the order requested.

    Raises:
        LeakageError: a feature is an identifier, the target, the failure type or a
            failure-mode flag.
        DatasetError: a feature is unknown, repeated, or the list is empty.
    """
    requested = tuple(features)
    reject_leaking_columns(requested)
    unknown = [name for name in requested if name not in MODEL_FEATURES]
    if unknown:
        raise DatasetError(
            f"model features {unknown} are unknown; choose from "
            f"{', '.join(MODEL_FEATURES)}"
        )
    repeated = sorted({name for name in requested if requested.count(name) > 1})
    if repeated:
        raise DatasetError(f"model features {repeated} are listed more than once")
    if not requested:
        raise DatasetError(
            f"no model features requested; choose from {', '.join(MODEL_FEATURES)}"
        )
    return requested


def engineered_features(measurements: np.ndarray) -> np.ndarray:
    """Compute the engineered features in float64.

    Args:
        measurements: shape (n, 5) in ``MEASUREMENT_FIELDS`` order; cast to float64.

    Returns:
        float64 array of shape (n, 3) in ``ENGINEERED_FEATURES`` order.
    """
    values = np.asarray(measurements, dtype=np.float64)
    temperature_difference = values[:, _PROCESS] - values[:, _AIR]
    # (torque * speed) * constant: the graph multiplies in this order, and floating
    # point multiplication is not associative.
    power = (values[:, _TORQUE] * values[:, _SPEED]) * RPM_TO_RAD_S
    tool_strain = values[:, _WEAR] * values[:, _TORQUE]
    return np.stack([temperature_difference, power, tool_strain], axis=1)


def physical_quantities(measurements: np.ndarray) -> np.ndarray:
    """Return the measurements and engineered features, float64, shape (n, 8)."""
    values = np.asarray(measurements, dtype=np.float64)
    return np.concatenate([values, engineered_features(values)], axis=1)


def tail_bounds(values: np.ndarray) -> tuple[np.float64, np.float64]:
    """Return the clip bounds of a quantity's low and high tail copies.

    The low copy keeps the ``TAIL_DISTINCT_VALUES`` smallest distinct values and the
    high copy the largest; with fewer distinct values, the copies equal the quantity.
    """
    distinct = np.unique(np.asarray(values, dtype=np.float64))
    keep = min(TAIL_DISTINCT_VALUES, len(distinct)) - 1
    return distinct[keep], distinct[len(distinct) - 1 - keep]


class PhysicalFeatures(TransformerMixin, BaseEstimator):
    """Transformer from the five measurements to the selected physical features.

    Args:
        features: names from ``PHYSICAL_QUANTITIES``, in output order. The tail
            copies of the selected ``TAIL_FEATURES`` follow them, low then high.
        tails: whether to add tail copies.
    """

    def __init__(
        self,
        features: Sequence[str] = DEFAULT_MODEL_FEATURES[1:],
        tails: bool = True,
    ) -> None:
        self.features = features
        self.tails = tails

    def fit(self, X: Any, y: Any = None) -> PhysicalFeatures:
        values = np.asarray(X)
        if values.ndim != 2 or values.shape[1] != len(MEASUREMENT_FIELDS):
            raise ValueError(
                f"PhysicalFeatures expects {len(MEASUREMENT_FIELDS)} columns "
                f"({', '.join(MEASUREMENT_FIELDS)}), got shape {values.shape}"
            )
        unknown = [name for name in self.features if name not in PHYSICAL_QUANTITIES]
        if unknown or not self.features:
            raise ValueError(
                f"PhysicalFeatures features {list(self.features)} must be a non-empty "
                f"selection of {', '.join(PHYSICAL_QUANTITIES)}"
            )
        self.n_features_in_ = values.shape[1]
        quantities = physical_quantities(values)
        self.columns_ = [PHYSICAL_QUANTITIES.index(name) for name in self.features]
        tailed = [name for name in self.features if name in TAIL_FEATURES]
        self.tail_bounds_ = [
            (name, *tail_bounds(quantities[:, PHYSICAL_QUANTITIES.index(name)]))
            for name in (tailed if self.tails else [])
        ]
        return self

    def transform(self, X: Any) -> np.ndarray:
        quantities = physical_quantities(np.asarray(X, dtype=np.float64))
        columns = [quantities[:, index] for index in self.columns_]
        for name, low, high in self.tail_bounds_:
            quantity = quantities[:, PHYSICAL_QUANTITIES.index(name)]
            columns.append(np.minimum(quantity, low))
            columns.append(np.maximum(quantity, high))
        return np.stack(columns, axis=1)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = list(self.features)
        for name, _, _ in self.tail_bounds_:
            names.extend([f"{name}_low_tail", f"{name}_high_tail"])
        return np.asarray(names, dtype=object)


def _shape_calculator(operator: Any) -> None:
    rows = operator.inputs[0].get_first_dimension()
    transformer = operator.raw_operator
    width = len(transformer.columns_) + 2 * len(transformer.tail_bounds_)
    operator.outputs[0].type = DoubleTensorType([rows, width])


def _converter(scope: Any, operator: Any, container: Any) -> None:
    transformer = operator.raw_operator
    source = operator.inputs[0].full_name

    def constant(name: str, value: float) -> str:
        tensor = scope.get_unique_variable_name(name)
        container.add_initializer(tensor, TensorProto.DOUBLE, [], [float(value)])
        return tensor

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

    def node(op_type: str, inputs: list[str], result: str) -> str:
        name = scope.get_unique_variable_name(result)
        container.add_node(
            op_type, inputs, name, name=scope.get_unique_operator_name(op_type)
        )
        return name

    # The same operations in the same order as physical_quantities().
    air, process, speed, torque, wear = (column(i) for i in range(5))
    moment = node("Mul", [torque, speed], "torque_times_speed")
    quantities = {
        "air_temperature_k": air,
        "process_temperature_k": process,
        "rotational_speed_rpm": speed,
        "torque_nm": torque,
        "tool_wear_min": wear,
        "temperature_difference_k": node(
            "Sub", [process, air], "temperature_difference_k"
        ),
        "power_w": node(
            "Mul", [moment, constant("rpm_to_rad_s", RPM_TO_RAD_S)], "power_w"
        ),
        "tool_strain_min_nm": node("Mul", [wear, torque], "tool_strain_min_nm"),
    }
    outputs = [quantities[name] for name in transformer.features]
    for name, low, high in transformer.tail_bounds_:
        # Min and Max return one of their inputs unchanged, so the copies are exact.
        outputs.append(
            node("Min", [quantities[name], constant(f"{name}_low", low)], f"{name}_low")
        )
        outputs.append(
            node(
                "Max", [quantities[name], constant(f"{name}_high", high)], f"{name}_hi"
            )
        )
    container.add_node(
        "Concat",
        outputs,
        operator.outputs[0].full_name,
        axis=1,
        name=scope.get_unique_operator_name("Concat"),
    )


def register_converter() -> None:
    """Register the transformer with skl2onnx; calling it again is harmless."""
    update_registered_converter(
        PhysicalFeatures,
        "EdgepmPhysicalFeatures",
        _shape_calculator,
        _converter,
    )
