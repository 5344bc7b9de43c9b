"""ONNX conversion of HistGradientBoostingClassifier with float64 split thresholds.

skl2onnx 1.20 writes a boosted tree's thresholds as float32 attributes even when the
graph's inputs are float64, so a reading within one float32 step of a threshold can
take the other branch in onnxruntime. The AI4I labels were computed in float64 on
the written values, and the heat-dissipation rule splits rows whose temperature
differences lie 6e-14 K apart. This converter writes the thresholds, leaf values
and baselines as float64 tensors (``*_as_tensor`` attributes of
``ai.onnx.ml.TreeEnsembleClassifier``, domain version 3), so both engines compare
every split in float64. The output probabilities are float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import numpy_helper
from skl2onnx import update_registered_converter
from skl2onnx.common.data_types import (
    FloatTensorType,
    Int64TensorType,
    StringTensorType,
)
from sklearn.ensemble import HistGradientBoostingClassifier

# The first ai.onnx.ml version with float64 tensor attributes on tree ensembles.
ML_DOMAIN_VERSION = 3


class TreeConversionError(ValueError):
    """The fitted model uses a feature this converter does not translate."""


def tree_ensemble_attributes(model: HistGradientBoostingClassifier) -> dict[str, Any]:
    """Return the TreeEnsembleClassifier attributes of a fitted model.

    Tree ``t`` of the ensemble is iteration ``t // k``, class ``t % k``, where k is
    the number of trees per iteration (1 for two classes). Leaf values already carry
    the learning rate, as scikit-learn stores them.

    Raises:
        TreeConversionError: the model splits on a categorical feature.
    """
    per_iteration = model.n_trees_per_iteration_
    nodes: dict[str, list[Any]] = {
        "nodes_treeids": [],
        "nodes_nodeids": [],
        "nodes_featureids": [],
        "nodes_modes": [],
        "nodes_truenodeids": [],
        "nodes_falsenodeids": [],
        "nodes_missing_value_tracks_true": [],
        "class_treeids": [],
        "class_nodeids": [],
        "class_ids": [],
    }
    thresholds: list[float] = []
    weights: list[float] = []
    tree = 0
    for iteration in model._predictors:
        for class_id, predictor in enumerate(iteration):
            records = predictor.nodes
            if records["is_categorical"].any():
                raise TreeConversionError(
                    "the model splits on a categorical feature; one-hot encode "
                    "categories before the classifier"
                )
            for index, record in enumerate(records):
                nodes["nodes_treeids"].append(tree)
                nodes["nodes_nodeids"].append(index)
                if record["is_leaf"]:
                    nodes["nodes_featureids"].append(0)
                    nodes["nodes_modes"].append("LEAF")
                    nodes["nodes_truenodeids"].append(0)
                    nodes["nodes_falsenodeids"].append(0)
                    nodes["nodes_missing_value_tracks_true"].append(0)
                    thresholds.append(0.0)
                    nodes["class_treeids"].append(tree)
                    nodes["class_nodeids"].append(index)
                    nodes["class_ids"].append(class_id)
                    weights.append(float(record["value"]))
                else:
                    # scikit-learn sends x <= threshold (and missing values, when
                    # missing_go_to_left) to the left child.
                    nodes["nodes_featureids"].append(int(record["feature_idx"]))
                    nodes["nodes_modes"].append("BRANCH_LEQ")
                    nodes["nodes_truenodeids"].append(int(record["left"]))
                    nodes["nodes_falsenodeids"].append(int(record["right"]))
                    nodes["nodes_missing_value_tracks_true"].append(
                        int(record["missing_go_to_left"])
                    )
                    thresholds.append(float(record["num_threshold"]))
            tree += 1
    baseline = np.asarray(model._baseline_prediction, dtype=np.float64).ravel()
    if baseline.size != per_iteration:
        raise TreeConversionError(
            f"the model has {baseline.size} baseline values for {per_iteration} "
            "trees per iteration"
        )
    classes = model.classes_
    labels: dict[str, Any]
    if _has_integer_labels(classes):
        labels = {"classlabels_int64s": [int(label) for label in classes]}
    else:
        labels = {"classlabels_strings": [str(label) for label in classes]}
    return {
        **nodes,
        **labels,
        "nodes_values_as_tensor": numpy_helper.from_array(
            np.asarray(thresholds, dtype=np.float64)
        ),
        "class_weights_as_tensor": numpy_helper.from_array(
            np.asarray(weights, dtype=np.float64)
        ),
        "base_values_as_tensor": numpy_helper.from_array(baseline),
        "post_transform": "LOGISTIC" if per_iteration == 1 else "SOFTMAX",
    }


def _has_integer_labels(classes: np.ndarray) -> bool:
    """Return whether the class labels go into the graph as int64 (else as strings)."""
    dtype = np.asarray(classes).dtype
    return bool(np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.bool_))


def _shape_calculator(operator: Any) -> None:
    rows = operator.inputs[0].get_first_dimension()
    model = operator.raw_operator
    classes = model.classes_
    if _has_integer_labels(classes):
        operator.outputs[0].type = Int64TensorType([rows])
    else:
        operator.outputs[0].type = StringTensorType([rows])
    operator.outputs[1].type = FloatTensorType([rows, len(classes)])


def _converter(scope: Any, operator: Any, container: Any) -> None:
    attributes = tree_ensemble_attributes(operator.raw_operator)
    container.add_node(
        "TreeEnsembleClassifier",
        [operator.inputs[0].full_name],
        [operator.outputs[0].full_name, operator.outputs[1].full_name],
        op_domain="ai.onnx.ml",
        op_version=ML_DOMAIN_VERSION,
        name=scope.get_unique_operator_name("TreeEnsembleClassifier"),
        **attributes,
    )


def register_tree_converter() -> None:
    """Replace skl2onnx's HistGradientBoostingClassifier converter with this one."""
    update_registered_converter(
        HistGradientBoostingClassifier,
        "SklearnHistGradientBoostingClassifier",
        _shape_calculator,
        _converter,
        options={
            "zipmap": [True, False, "columns"],
            "nocl": [True, False],
            "output_class_labels": [False, True],
            "raw_scores": [False],
        },
        overwrite=True,
    )
